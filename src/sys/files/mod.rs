//! Files root writes where others may be: atomic replacement, paths opened
//! without following links others could plant, and directories checked to
//! be root's alone from `/` down.

pub mod atomic;
pub mod nofollow;
pub mod trusted;
