//! The one directory walk: a path resolved one component at a time with
//! `openat(O_NOFOLLOW)` from the directory reached so far, so the kernel
//! never resolves a name on our behalf and nothing can be swapped between a
//! check and a use (every check is made on the descriptor then used).
//!
//! The walk does the mechanics: `/` and `..`, counting the symbolic links
//! followed (40 at most, the kernel's limit) and splicing each link's
//! target in front of what is left of the path, so a relative target
//! resolves from the link's directory and an absolute one from `/`, as the
//! kernel does. What is opened, what is checked and which links may be
//! followed are the [`Rules`] of the caller: [`super::trusted`] (every
//! directory root's alone) and [`super::nofollow`] (links followed only
//! where only root could have put them).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// Links followed in one resolution before giving up (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// One step of a walk, owned so that link targets can be spliced in.
pub(super) enum Part {
    Root,
    Up,
    Name(OsString),
}

/// The steps of `path`; `.` steps are dropped.
pub(super) fn parts(path: &Path) -> VecDeque<Part> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(Part::Root),
            Component::ParentDir => Some(Part::Up),
            Component::Normal(name) => Some(Part::Name(name.to_owned())),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// A directory reached: its descriptor, how it was named, and whether it
/// is a shared directory (sticky, like `/tmp`; see [`super::trusted`]).
pub(super) struct Level {
    pub fd: OwnedFd,
    pub shown: PathBuf,
    pub shared: bool,
}

/// What a name in the current directory turned out to be.
pub(super) enum Entered {
    /// A directory, opened (and checked, if the rules check).
    Dir(Level),
    /// A symbolic link the rules allow to follow.
    Link,
}

/// What a walk opens and checks.
pub(super) trait Rules {
    type Error;
    /// The directory a walk starts in: `/` when `absolute`, else `.`.
    fn start(&mut self, absolute: bool) -> Result<Level, Self::Error>;
    /// `name` in `top`. `from_link`: the name comes from a link's target,
    /// not from the path asked for (nothing is created there).
    fn enter(&mut self, top: &Level, name: &OsStr, from_link: bool) -> Result<Entered, Self::Error>;
    /// `..` from the top of `stack` (which is never empty).
    fn up(&mut self, stack: &mut Vec<Level>) -> Result<(), Self::Error>;
    /// The target of the link `name` in `top`.
    fn read_link(&mut self, top: &Level, name: &OsStr) -> Result<OsString, Self::Error>;
    /// More than [`MAX_LINKS`] links, the last one at `at`.
    fn too_many_links(&self, at: PathBuf) -> Self::Error;
}

/// A resolution in progress.
pub(super) struct Walk<R: Rules> {
    pub rules: R,
    /// The directories reached, `/` (or the start) first; never empty.
    pub stack: Vec<Level>,
    links: u32,
    /// How many of the steps left came from links' targets (they are
    /// always the first ones).
    from_links: usize,
}

impl<R: Rules> Walk<R> {
    /// Starts at `/` or at the current directory, as `path` says.
    pub fn start(mut rules: R, path: &Path) -> Result<Walk<R>, R::Error> {
        let first = rules.start(path.is_absolute())?;
        Ok(Walk { rules, stack: vec![first], links: 0, from_links: 0 })
    }

    /// The directory reached.
    pub fn top(&self) -> &Level {
        self.stack.last().expect("a walk always holds its start")
    }

    /// Resolves `todo` from the directory reached.
    pub fn walk(&mut self, mut todo: VecDeque<Part>) -> Result<(), R::Error> {
        while let Some(part) = todo.pop_front() {
            let from_link = self.from_links > 0;
            self.from_links = self.from_links.saturating_sub(1);
            match part {
                Part::Root => self.stack = vec![self.rules.start(true)?],
                Part::Up => self.rules.up(&mut self.stack)?,
                Part::Name(name) => {
                    match self.rules.enter(self.stack.last().expect("never empty"), &name, from_link)? {
                        Entered::Dir(level) => self.stack.push(level),
                        Entered::Link => {
                            let target = self.follow(&name)?;
                            let mut spliced = parts(Path::new(&target));
                            self.from_links += spliced.len();
                            spliced.append(&mut todo);
                            todo = spliced;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The target of the link `name` in the directory reached, which the
    /// rules allowed to follow: counted against [`MAX_LINKS`].
    pub fn follow(&mut self, name: &OsStr) -> Result<OsString, R::Error> {
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(self.rules.too_many_links(self.top().shown.join(name)));
        }
        let top = self.stack.last().expect("a walk always holds its start");
        self.rules.read_link(top, name)
    }
}
