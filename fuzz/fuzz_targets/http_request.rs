//! Arbitrary bytes into the control socket's request parser; the
//! invariants are in `checks/http_request.rs`.
#![no_main]

#[path = "../checks/http_request.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::check(input));
