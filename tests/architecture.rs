//! The layout's promises, checked on the sources:
//!
//! - The sans-IO modules (location, the race engine, the dial machine) use
//!   no runtime, resolver, socket or file: tokio, hickory, socket2,
//!   `std::net` sockets, `std::fs` and the like never appear in them, their
//!   tests included. Their library code reads no clock and draws no OS
//!   randomness either: time comes in as an argument, randomness as a seed.
//! - They depend only on each other and on the shared vocabulary
//!   (`endpoint`, `target`).
//! - No module imports itself back: the graph of every module of the
//!   library (each file, e.g. `connect::tcp`), and of the binary, has no
//!   cycle, and neither has the same graph folded to the top-level modules
//!   (the pipeline's layering). A module's use of its own submodules
//!   (declaring, dispatching to, re-exporting them) is structure, not a
//!   dependency; every other path counts, and a path through a re-export
//!   counts as one to the module that defines the item.
//! - The command line lives at the edge: `clap` appears only in the binary
//!   (`src/main.rs`, `src/cli/`), never in a library module; the crates only
//!   the tools need (`clap`, `indicatif`, `plotters`, `hickory_server`)
//!   appear only in the binary and in the modules `lib.rs` builds with the
//!   `tools` feature (`bench`, `lab`, `responder`), so the library built
//!   with `default-features = false` has none of them.

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

// ---------------------------------------------------------------------------
// The module graph

/// A module: its path from the crate root (`connect::tcp`), its file and
/// the module paths its library code refers to, as written.
#[derive(Debug)]
struct Module {
    path: Vec<String>,
    file: PathBuf,
    /// Every path the code names, anchored at the crate root (`crate::`,
    /// `super::`, `self::` and child-module paths made absolute).
    refers_to: Vec<Vec<String>>,
    /// `pub use` re-exports: the name as exported, and the absolute path of
    /// what it names.
    reexports: BTreeMap<String, Vec<String>>,
}

/// The `mod NAME;` declarations of a file that are not `#[cfg(test)]`.
fn declared_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut test_only = false;
    for line in code.lines().map(str::trim) {
        if line.starts_with("#[") {
            test_only |= line.contains("cfg(test)");
            continue;
        }
        let decl = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub(super) "))
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            if !test_only {
                out.push(name.trim().to_string());
            }
        }
        if !line.is_empty() {
            test_only = false;
        }
    }
    out
}

/// The file of module `name` declared in `parent` (a crate root, a
/// `mod.rs`, or `x.rs` whose submodules live in `x/`).
fn module_file(parent: &Path, name: &str) -> PathBuf {
    let dir = match parent.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => parent.parent().unwrap().to_path_buf(),
        _ => parent.with_extension(""),
    };
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// The `use` statements of a source (each from `use` to its `;`), whether
/// public, and the code with them cut out.
fn use_statements(code: &str) -> (Vec<(bool, String)>, String) {
    let mut uses = Vec::new();
    let mut rest = String::new();
    let mut i = 0;
    let bytes = code.as_bytes();
    while i < code.len() {
        let at_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word && code[i..].starts_with("use ") {
            let end = code[i..].find(';').map_or(code.len(), |e| i + e);
            // A visibility just before `use` makes it a re-export.
            let before = rest.trim_end().len();
            let visibility = ["pub", "pub(crate)", "pub(super)"].into_iter().find(|v| {
                rest[..before].ends_with(v)
                    && !rest[..before - v.len()]
                        .ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if let Some(v) = visibility {
                rest.truncate(before - v.len());
            }
            uses.push((visibility.is_some(), code[i + 4..end].trim().to_string()));
            i = end + 1;
            continue;
        }
        let c = code[i..].chars().next().unwrap();
        rest.push(c);
        i += c.len_utf8();
    }
    (uses, rest)
}

/// Splits `a, b::{c, d}` at its top-level commas.
fn split_top(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(group[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The paths a use tree names, each with the name it binds:
/// `a::{self, b::C as D}` gives (`a`, "a") and (`a::b::C`, "D").
fn expand_use(tree: &str) -> Vec<(Vec<String>, String)> {
    let tree = tree.trim().trim_start_matches("::");
    let (head, group) = match tree.find('{') {
        Some(i) => (
            &tree[..i],
            Some(&tree[i + 1..tree.rfind('}').unwrap_or(tree.len())]),
        ),
        None => (tree, None),
    };
    let prefix: Vec<String> = head
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let Some(group) = group else {
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p, Some(a.trim().to_string())),
            None => (tree, None),
        };
        let mut segs: Vec<String> = path.split("::").map(|s| s.trim().to_string()).collect();
        if segs.last().is_some_and(|l| l == "*") {
            segs.pop();
            return vec![(segs, "*".into())];
        }
        if segs.last().is_some_and(|l| l == "self") {
            segs.pop();
        }
        let name = alias.unwrap_or_else(|| segs.last().cloned().unwrap_or_default());
        return vec![(segs, name)];
    };
    let mut out = Vec::new();
    for item in split_top(group) {
        for (mut sub, name) in expand_use(item) {
            let mut full = prefix.clone();
            full.append(&mut sub);
            let name = if name == "self" || name.is_empty() {
                full.last().cloned().unwrap_or_default()
            } else {
                name
            };
            out.push((full, name));
        }
    }
    out
}

/// `crate::`, `super::` and `self::` paths written inline in code.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for anchor in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(anchor) {
            if code[..i]
                .chars()
                .next_back()
                .is_some_and(|c| ident(c) || c == ':')
            {
                continue; // the middle of a longer path (`super::super::`)
            }
            let mut segs = Vec::new();
            let mut rest = &code[i..];
            loop {
                let len = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
                if len == 0 {
                    break;
                }
                segs.push(rest[..len].to_string());
                match rest[len..].strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            out.push(segs);
        }
    }
    out
}

/// `path` (as written in module `at`) made absolute, if it is a crate path:
/// anchored at `crate`, `super`, `self`, or a child module of `at`.
fn anchor(path: &[String], at: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut base: Vec<String> = at.to_vec();
    let mut segs = path;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segs = &segs[1..];
        }
        Some("self") => segs = &segs[1..],
        Some("super") => {
            while segs.first().is_some_and(|s| s == "super") {
                base.pop()?;
                segs = &segs[1..];
            }
        }
        Some(first) => {
            let mut child = at.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None; // another crate, or a name in scope
            }
        }
        None => return None,
    }
    base.extend(segs.iter().cloned());
    Some(base)
}

/// Every module of the crate rooted at `root` (`lib.rs` or `main.rs`).
fn crate_modules_of(root: &Path) -> Vec<Module> {
    // The tree, from the `mod` declarations.
    let mut files = vec![(Vec::<String>::new(), root.to_path_buf())];
    let mut i = 0;
    while i < files.len() {
        let (path, file) = files[i].clone();
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for name in declared_modules(&library_part(&file, &code)) {
            let mut child = path.clone();
            child.push(name.clone());
            files.push((child, module_file(&file, &name)));
        }
        i += 1;
    }
    let known: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| p.clone()).collect();
    files
        .into_iter()
        .map(|(path, file)| {
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            let library = library_part(&file, &code);
            let (uses, rest) = use_statements(&library);
            let mut refers_to = Vec::new();
            let mut reexports = BTreeMap::new();
            for (public, tree) in &uses {
                for (written, name) in expand_use(tree) {
                    if let Some(abs) = anchor(&written, &path, &known) {
                        if *public && name != "*" {
                            reexports.insert(name, abs.clone());
                        }
                        refers_to.push(abs);
                    }
                }
            }
            for written in inline_paths(&rest) {
                refers_to.extend(anchor(&written, &path, &known));
            }
            Module {
                path,
                file,
                refers_to,
                reexports,
            }
        })
        .collect()
}

/// The module that defines what `path` names: the longest module prefix,
/// followed through `pub use` re-exports.
fn defining_module(path: &[String], modules: &BTreeMap<Vec<String>, &Module>) -> Vec<String> {
    let mut path = path.to_vec();
    for _ in 0..8 {
        let module = (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains_key(p))
            .unwrap_or_default();
        let Some(item) = path.get(module.len()) else {
            return module;
        };
        match modules[&module].reexports.get(item) {
            Some(target) if target != &path => {
                let mut next = target.clone();
                next.extend(path[module.len() + 1..].iter().cloned());
                path = next;
            }
            _ => return module,
        }
    }
    panic!("re-exports of {path:?} go round in a circle")
}

/// The dependency edges between the modules of a crate (`a::b` → `c`).
fn dependency_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = crate_modules_of(root);
    let by_path: BTreeMap<Vec<String>, &Module> =
        modules.iter().map(|m| (m.path.clone(), m)).collect();
    let mut graph = BTreeMap::new();
    for m in &modules {
        let mut deps = BTreeSet::new();
        for path in &m.refers_to {
            let target = defining_module(path, &by_path);
            // Its own submodules (and itself) are structure, not dependencies.
            if !target.starts_with(&m.path) {
                deps.insert(target.join("::"));
            }
        }
        graph.insert(m.path.join("::"), deps);
        assert!(m.file.exists(), "{}", m.file.display());
    }
    graph.remove("");
    graph
}

/// A cycle of `graph`, if it has one (as the list of modules round it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search; a node on the current path seen again closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// `graph` with every module folded into its top-level module.
fn top_level(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in graph {
        let entry = out.entry(top(m)).or_default();
        entry.extend(deps.iter().map(|d| top(d)).filter(|d| *d != top(m)));
    }
    out
}

fn show(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    graph
        .iter()
        .map(|(m, deps)| {
            format!(
                "{m} -> {}",
                deps.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_module_of_the_library_or_the_binary_imports_itself_back() {
    for root in ["lib.rs", "main.rs"] {
        let graph = dependency_graph(&src().join(root));
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{root}: import cycle {}\n\n{}",
                cycle.join(" -> "),
                show(&graph)
            );
        }
        let top = top_level(&graph);
        if let Some(cycle) = find_cycle(&top) {
            panic!(
                "{root}: import cycle between top-level modules {}\n\n{}",
                cycle.join(" -> "),
                show(&top)
            );
        }
        if std::env::var_os("SIPRACE_SHOW_GRAPH").is_some() {
            println!("{root}:\n{}\n", show(&graph));
        }
    }
    let graph = dependency_graph(&src().join("lib.rs"));
    assert!(graph.len() >= 40, "only {} modules found", graph.len());
    // The circles this layout broke stay broken.
    for (a, b) in [
        ("connect::tcp", "connect::tls"),
        ("bench::clients", "bench::runner"),
        ("lab::impair", "lab::topology"),
    ] {
        assert!(
            !graph[a].contains(b) || !graph[b].contains(a),
            "{a} <-> {b}"
        );
    }
    // The layering the README describes.
    let top = top_level(&graph);
    assert!(top["endpoint"].is_empty(), "{:?}", top["endpoint"]);
    assert_eq!(top["target"], ["endpoint".to_string()].into());
    assert!(!top["dial_machine"].contains("dns"));
    assert!(!top["dial_machine"].contains("connect"));
    // Reuse is the machine's decision on destinations the driver gives it:
    // the machine never sees the connection table, and the table (keep)
    // sits under the dialer, not over it.
    assert!(!top["dial_machine"].contains("keep"));
    assert!(!top["keep"].contains("dialer"));
    assert!(top["dialer"].contains("keep"));
}

#[test]
fn the_graph_check_sees_paths_of_every_form() {
    assert_eq!(
        expand_use("crate::{endpoint::Family, race::{self, Race as R}}"),
        [
            (vec!["crate", "endpoint", "Family"], "Family"),
            (vec!["crate", "race"], "race"),
            (vec!["crate", "race", "Race"], "R"),
        ]
        .map(|(p, n)| (
            p.into_iter().map(String::from).collect::<Vec<_>>(),
            n.to_string()
        ))
    );
    let (uses, rest) =
        use_statements("pub use stream::X;\nuse super::tls::Y;\nfn f() { super::tcp::g() }");
    assert_eq!(
        uses,
        [
            (true, "stream::X".to_string()),
            (false, "super::tls::Y".to_string())
        ]
    );
    assert_eq!(inline_paths(&rest), [vec!["super", "tcp", "g"]]);
    let at = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    let known: BTreeSet<Vec<String>> =
        [at("connect"), at("connect::tcp"), at("connect::stream")].into();
    assert_eq!(
        anchor(&at("super::tls::Y"), &at("connect::tcp"), &known),
        Some(at("connect::tls::Y"))
    );
    assert_eq!(
        anchor(&at("stream::X"), &at("connect"), &known),
        Some(at("connect::stream::X"))
    );
    assert_eq!(anchor(&at("tokio::net::X"), &at("connect"), &known), None);
    assert_eq!(
        declared_modules("pub mod a;\nmod b;\n#[cfg(test)]\nmod tests;\npub(crate) mod c;"),
        ["a", "b", "c"]
    );
    // A cycle is found and shown round.
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into()),
        ("b".to_string(), ["c".to_string()].into()),
        ("c".to_string(), ["a".to_string()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}

// ---------------------------------------------------------------------------
// The command line at the edge

/// Where the binary's sources are: `src/main.rs` and `src/cli/`.
fn is_binary(rel: &Path) -> bool {
    rel == Path::new("main.rs") || rel.starts_with("cli")
}

/// The library modules `lib.rs` declares behind the `tools` feature.
const TOOLS_MODULES: &[&str] = &["bench", "lab", "responder"];

/// The crates only the tools (CLI, lab, benchmark) use.
const TOOLS_CRATES: &[&str] = &["clap", "indicatif", "plotters", "hickory_server"];

/// What a source file under `src/` (path relative to it) may not use:
/// clap outside the binary, a tools-only crate outside the binary and the
/// tools modules.
fn edge_violations(rel: &Path, text: &str) -> Vec<String> {
    if is_binary(rel) {
        return Vec::new();
    }
    let code = code_of(text);
    let tools = TOOLS_MODULES.iter().any(|m| rel.starts_with(m));
    TOOLS_CRATES
        .iter()
        .filter(|word| (**word == "clap" || !tools) && mentions(&code, word))
        .map(|word| format!("{}: uses {word}", rel.display()))
        .collect()
}

#[test]
fn the_command_line_and_the_tools_crates_stay_at_the_edge() {
    let mut found = Vec::new();
    let mut library_files = 0;
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap();
        library_files += usize::from(!is_binary(rel));
        found.extend(edge_violations(
            rel,
            &std::fs::read_to_string(&file).unwrap(),
        ));
    }
    assert!(library_files >= 40, "only {library_files} library files");
    assert!(found.is_empty(), "{}", found.join("\n"));
    // The tools modules are built only with the feature.
    let lib = code_of(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    for module in TOOLS_MODULES {
        let declared = format!("#[cfg(feature = \"tools\")]\npub mod {module};");
        assert!(lib.contains(&declared), "lib.rs: {declared:?} missing");
    }
    // The binary has its parser.
    assert!(src().join("cli/mod.rs").exists());
}

#[test]
fn the_edge_check_itself_catches_clap() {
    let clap = "#[derive(clap::Args)]\nstruct A;\n";
    assert_eq!(
        edge_violations(Path::new("responder/config.rs"), clap).len(),
        1
    );
    assert_eq!(edge_violations(Path::new("connect/tls.rs"), clap).len(), 1);
    assert!(edge_violations(Path::new("cli/responder.rs"), clap).is_empty());
    assert!(edge_violations(Path::new("main.rs"), clap).is_empty());
    let bar = "use indicatif::ProgressBar;\n";
    assert!(edge_violations(Path::new("bench/mod.rs"), bar).is_empty());
    assert_eq!(edge_violations(Path::new("dialer/mod.rs"), bar).len(), 1);
    // A comment may name it.
    assert!(edge_violations(Path::new("lib.rs"), "//! no clap here\n").is_empty());
}
