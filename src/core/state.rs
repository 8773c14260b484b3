//! A router's HA state, spelled as Neutron spells it in files and on the
//! wire.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Primary,
    Backup,
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Primary => "primary",
            State::Backup => "backup",
            State::Fault => "fault",
        }
    }

    /// Parses a state as agents send it; Neutron's older `master` is
    /// `primary`. Case-sensitive, as Neutron is.
    pub fn parse(text: &str) -> Option<State> {
        match text {
            "primary" | "master" => Some(State::Primary),
            "backup" => Some(State::Backup),
            "fault" => Some(State::Fault),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(State::parse("master"), Some(State::Primary));
        assert_eq!(State::parse("primary").map(State::as_str), Some("primary"));
        assert_eq!(State::parse("Backup"), None);
        assert_eq!(State::parse(""), None);
    }
}
