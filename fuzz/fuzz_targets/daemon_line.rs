//! Fuzzes the daemon line decoder (both decoders must agree, and never panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsmld_fuzz::daemon_line::check_daemon_line;

fuzz_target!(|data: &[u8]| {
    check_daemon_line(data);
});
