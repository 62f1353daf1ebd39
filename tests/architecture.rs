//! The layout's promises, checked on the sources:
//!
//! - The sans-IO modules (location, the race engine, the dial machine) use
//!   no runtime, resolver, socket or file: tokio, hickory, socket2,
//!   `std::net` sockets, `std::fs` and the like never appear in them, their
//!   tests included. Their library code reads no clock and draws no OS
//!   randomness either: time comes in as an argument, randomness as a seed.
//! - They depend only on each other and on the shared vocabulary
//!   (`endpoint`, `target`), and the modules of the pipeline import each
//!   other without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The pure modules, as paths under `src/` (a directory counts whole).
const PURE: &[&str] = &["locate", "race", "dial_machine.rs", "dial_machine"];

/// What a pure module may depend on inside the crate.
const PURE_MAY_USE: &[&str] = &["endpoint", "target", "locate", "race", "dial_machine"];

/// Words that mean I/O: a runtime, a resolver, sockets, files, processes.
const IO_WORDS: &[&str] = &[
    "tokio",
    "hickory_resolver",
    "hickory_proto",
    "hickory_server",
    "socket2",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "std::fs",
    "std::process",
    "std::thread",
    "std::env",
    "libc",
];

/// Words that read a clock or the OS's randomness (allowed in tests, which
/// need a fake clock's origin).
const AMBIENT_WORDS: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "rand::rng",
    "rand::random",
    "thread_rng",
    "OsRng",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `path` (or `path` itself).
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// A source without its comments (doc comments name tokio freely).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The library part of a file: all of it but its `#[cfg(test)]` tail;
/// nothing of a `tests.rs`.
fn library_part(path: &Path, code: &str) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    match code.find("#[cfg(test)]") {
        Some(i) => code[..i].to_string(),
        None => code.to_string(),
    }
}

/// Whether `word` occurs in `text` as a whole path or identifier.
fn mentions(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The crate modules a source refers to: `crate::x`, `crate::{x, y::{..}}`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let first_segment = |item: &str| -> String {
        item.trim()
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("")
            .to_string()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.insert(first_segment(rest));
            continue;
        };
        // The top-level items of the group, nested groups skipped.
        let (mut depth, mut item) = (0, String::new());
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.insert(first_segment(&item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                item.push(c);
            }
        }
        out.insert(first_segment(&item));
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// The violations of the purity rules in one pure file.
fn impurities(path: &Path, text: &str) -> Vec<String> {
    let code = code_of(text);
    let library = library_part(path, &code);
    let mut found = Vec::new();
    for word in IO_WORDS {
        if mentions(&code, word) {
            found.push(format!("{}: uses {word}", path.display()));
        }
    }
    for word in AMBIENT_WORDS {
        if mentions(&library, word) {
            found.push(format!("{}: reads {word} outside tests", path.display()));
        }
    }
    for module in crate_modules(&library) {
        if !PURE_MAY_USE.contains(&module.as_str()) {
            found.push(format!("{}: depends on crate::{module}", path.display()));
        }
    }
    found
}

#[test]
fn the_pure_modules_touch_no_io_clock_or_os_randomness() {
    let mut checked = 0;
    let mut found = Vec::new();
    for part in PURE {
        let path = src().join(part);
        assert!(path.exists(), "{} is gone: update PURE", path.display());
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).unwrap();
            found.extend(impurities(&file, &text));
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} files checked");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_itself_catches_io() {
    let path = Path::new("src/locate/machine.rs");
    let bad = "use tokio::net::UdpSocket;\nfn f() { let _ = std::time::Instant::now(); }\n\
               use crate::dns::lookup;\n";
    let found = impurities(path, bad);
    assert_eq!(found.len(), 4, "{found:#?}");
    // Comments, tests and look-alike names are fine.
    let fine = "//! no tokio here\nfn tokio_free() {}\n#[cfg(test)]\nmod tests { fn t() { Instant::now(); } }\n";
    assert!(impurities(path, fine).is_empty());
    assert_eq!(
        crate_modules(
            "use crate::{endpoint::Family, race::{self, Race}};\nuse crate::target::Target;"
        ),
        ["endpoint", "race", "target"].map(String::from).into()
    );
}

#[test]
fn the_pipeline_modules_import_each_other_without_a_cycle() {
    let modules = [
        "endpoint",
        "target",
        "locate",
        "race",
        "dial_machine",
        "dns",
        "connect",
        "report",
        "dialer",
    ];
    let mut graph: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for m in modules {
        let dir = src().join(m);
        let file = src().join(format!("{m}.rs"));
        let mut uses = BTreeSet::new();
        for path in [file, dir]
            .iter()
            .filter(|p| p.exists())
            .flat_map(|p| rust_files(p))
        {
            let code = code_of(&std::fs::read_to_string(&path).unwrap());
            uses.extend(crate_modules(&library_part(&path, &code)));
        }
        uses.retain(|u| u != m && modules.contains(&u.as_str()));
        graph.insert(m, uses);
    }
    // Depth-first search for a path back to the start.
    for start in modules {
        let mut stack: Vec<Vec<String>> = vec![vec![start.to_string()]];
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            for next in &graph[last.as_str()] {
                assert!(
                    next != start,
                    "import cycle: {} -> {next}",
                    path.join(" -> ")
                );
                if !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    // The layering the README describes.
    assert!(graph["endpoint"].is_empty(), "{:?}", graph["endpoint"]);
    assert_eq!(graph["target"], ["endpoint".to_string()].into());
    assert!(!graph["dial_machine"].contains("dns"));
}
