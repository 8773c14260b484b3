//! Arbitrary bytes into the config parser and the keepalived.conf renderer;
//! the invariants are in `checks/config_parse.rs`.
#![no_main]

#[path = "../checks/config_parse.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
