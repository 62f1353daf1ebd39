#![no_main]
// The check itself lives in src/lib.rs, shared with the main crate's
// tests/fuzz_regressions.rs, which replays the seeds and every kept crash.
libfuzzer_sys::fuzz_target!(|data: &[u8]| siprace_fuzz::history_load(data));
