//! `harouterd check -c FILE`: parse and validate, print only problems.

use std::path::Path;

use super::{Exit, load_config};

pub fn run(config: &Path) -> Exit {
    match load_config(config) {
        Ok(_) => Exit::Ok,
        Err(exit) => exit,
    }
}
