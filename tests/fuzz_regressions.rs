//! Replays the fuzz targets' seeds and every crash input ever kept
//! (`fuzz/seeds/TARGET/`, `fuzz/regressions/TARGET/`) through the same checks
//! the fuzz targets run (`fuzz/src/lib.rs`, included here as a module), so the
//! stable test suite guards them without nightly or cargo-fuzz.
//! `scripts/fuzz.sh` runs the fuzzers themselves.
#![cfg(feature = "tools")]

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod checks;

/// The files of `fuzz/seeds/TARGET` and `fuzz/regressions/TARGET` (and of
/// `extra`, recursively), sorted.
fn inputs(target: &str, extra: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("fuzz/seeds").join(target),
        root.join("fuzz/regressions").join(target),
    ];
    dirs.extend(extra.iter().map(|d| root.join(d)));
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The kept inputs of `fuzz/regressions/KNOWN-OPEN` (findings whose cause
/// is not fixed yet), as paths.
fn known_open() -> Vec<PathBuf> {
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let list = std::fs::read_to_string(regressions.join("KNOWN-OPEN")).unwrap_or_default();
    list.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|input| regressions.join(input))
        .collect()
}

/// Runs `check` on every input; a panic names the input that caused it. An
/// input listed in KNOWN-OPEN must still fail, so the list cannot go stale.
fn replay(target: &str, extra: &[&str], check: fn(&[u8])) {
    let files = inputs(target, extra);
    assert!(!files.is_empty(), "no seeds for {target} under fuzz/seeds/");
    let open = known_open();
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        let failed = std::panic::catch_unwind(|| check(&data)).is_err();
        match (failed, open.contains(file)) {
            (false, false) => {}
            (true, true) => eprintln!("{target}: {} still fails (KNOWN-OPEN)", file.display()),
            (true, false) => panic!("{target}: {} fails its check", file.display()),
            (false, true) => panic!(
                "{target}: {} passes now: delete its line from fuzz/regressions/KNOWN-OPEN",
                file.display()
            ),
        }
    }
}

/// The SIP torture messages, where the repository has them.
const SIP_CORPORA: &[&str] = &["tests/corpora"];

#[test]
fn sip_response() {
    replay("sip_response", SIP_CORPORA, checks::sip_response);
}

#[test]
fn sip_request() {
    replay("sip_request", SIP_CORPORA, checks::sip_request);
}

#[test]
fn sip_framer() {
    replay("sip_framer", SIP_CORPORA, checks::sip_framer);
}

#[test]
fn target_parse() {
    replay("target_parse", &[], checks::target_parse);
}

#[test]
fn locate_select() {
    replay("locate_select", &[], checks::locate_select);
}

#[test]
fn history_load() {
    replay("history_load", &[], checks::history_load);
}

#[test]
fn lab_zone() {
    replay("lab_zone", &[], checks::lab_zone);
}

#[test]
fn lab_faults() {
    replay("lab_faults", &[], checks::lab_faults);
}

#[test]
fn cert_identities() {
    replay("cert_identities", &[], checks::cert_identities);
}
