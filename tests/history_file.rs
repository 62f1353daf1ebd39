//! The history file: [`History::load_file`] and [`History::save_merged`]
//! directly, and `siprace dial --history-file` with the real binary
//! (concurrent processes sharing one file, a corrupt file). Loopback only.
#![cfg(feature = "tools")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use siprace::endpoint::{Endpoint, Transport};
use siprace::race::history::{History, NetworkId, PathOutcome, PathVerdict};

fn siprace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_siprace"))
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "siprace-test-{what}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl TempDir {
    /// The names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path endpoint of `host` for the history API.
fn ep_at(host: &str, addr: &str) -> Endpoint {
    Endpoint {
        transport: Transport::Tcp,
        addr: addr.parse().unwrap(),
        host: Arc::from(host),
        rank: 0,
    }
}

fn ep(addr: &str) -> Endpoint {
    ep_at("sip.example.test", addr)
}

/// Waits for a child, killing it (and failing) if it outlives `limit`.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "siprace dial ran longer than {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The hosts of the entries in a history file (which must be valid JSON),
/// over every network.
fn hosts_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("history file is not valid JSON ({e}):\n{text}"));
    json["networks"]
        .as_array()
        .unwrap_or_else(|| panic!("no networks in\n{text}"))
        .iter()
        .flat_map(|n| n["paths"].as_array().unwrap().iter())
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect()
}

fn net() -> NetworkId {
    NetworkId::of("the test's network")
}

#[test]
fn concurrent_dials_sharing_a_history_file_lose_nothing() {
    const N: u8 = 8;
    let dir = TempDir::new("history-concurrent");
    let path = dir.0.join("history.json");
    // One silent UDP "server" per process, each on its own loopback
    // address, so every dial learns about a different path. Nothing
    // answers: each dial runs until its deadline, so all N processes have
    // loaded the file before any of them saves.
    let silent: Vec<std::net::UdpSocket> = (2..2 + N)
        .map(|i| std::net::UdpSocket::bind(("127.0.0.".to_string() + &i.to_string(), 0)).unwrap())
        .collect();
    let children: Vec<Child> = silent
        .iter()
        .map(|s| {
            let addr = s.local_addr().unwrap();
            siprace()
                .arg("dial")
                .arg(format!("sip:{addr};transport=udp"))
                .args(["--deadline", "1500", "--history-file"])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = wait_bounded(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("history"), "{stderr}");
    }
    let expected: BTreeSet<String> = (2..2 + N).map(|i| format!("127.0.0.{i}")).collect();
    assert_eq!(hosts_in(&path), expected);
    // No temporary file is left behind; the lock file stays.
    assert_eq!(dir.names(), ["history.json", "history.json.lock"]);
}

#[test]
fn corrupt_history_file_warns_and_the_dial_still_runs() {
    let dir = TempDir::new("history-corrupt");
    let path = dir.0.join("history.json");
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = live.local_addr().unwrap().port();
    // Connected (exit 0), refused (exit 1): each as the dial deserves, not
    // the usage error (2) a corrupt history used to be.
    for (target, code) in [
        (format!("sip:127.0.0.1:{port};transport=tcp"), 0),
        (format!("sip:127.0.0.2:{port};transport=tcp"), 1),
    ] {
        std::fs::write(&path, "{\"entries\": [ {\"key\": ").unwrap();
        let child = siprace()
            .arg("dial")
            .arg(&target)
            .args(["--deadline", "5000", "--history-file"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{target}: {stderr}");
        assert!(
            stderr.contains("warning") && stderr.contains("not a valid history"),
            "{stderr}"
        );
        // The save replaced the corrupt file with this dial's history.
        let host = target[4..].split(':').next().unwrap().to_string();
        assert_eq!(hosts_in(&path), BTreeSet::from([host]));
    }
}

#[test]
fn history_file_missing_corrupt_and_saved() {
    let dir = TempDir::new("file");
    let path = dir.0.join("history.json");
    let (h, warning) = History::load_file(&path);
    assert!(h.is_empty() && warning.is_none());

    std::fs::write(&path, "{\"entries\": [ {\"key\"").unwrap();
    let (mut h, warning) = History::load_file(&path);
    assert!(h.is_empty());
    let warning = warning.expect("a warning for a corrupt file");
    assert!(warning.contains("not a valid history"), "{warning}");

    let now = SystemTime::now();
    h.record(now, &net(), &[(ep("192.0.2.1:5060"), PathOutcome::Failed)]);
    h.save_merged(&path).unwrap();
    let (back, warning) = History::load_file(&path);
    assert!(warning.is_none(), "{warning:?}");
    assert_eq!(
        back.view(now, &net()).verdict(&ep("192.0.2.1:1")),
        PathVerdict::Failed
    );
    // Only the file and its lock are left: no temporary file.
    assert_eq!(dir.names(), ["history.json", "history.json.lock"]);

    // A file of format 1 (before networks): empty, with a warning that says why.
    std::fs::write(
        &path,
        r#"{"entries":[{"key":{"host":"h","family":"ipv6","transport":"udp"},"srtt_us":null,"last_failed":true,"updated_s":1700000000}]}"#,
    )
    .unwrap();
    let (h, warning) = History::load_file(&path);
    assert!(h.is_empty());
    let warning = warning.expect("a warning for a format-1 file");
    assert!(warning.contains("older siprace"), "{warning}");

    // A directory is unreadable as a history: empty plus a warning.
    let (h, warning) = History::load_file(&dir.0);
    assert!(h.is_empty());
    assert!(warning.unwrap().contains("cannot be read"));
}

#[test]
fn concurrent_saves_from_threads_lose_nothing() {
    let dir = TempDir::new("concurrent");
    let path = dir.0.join("h.json");
    let now = SystemTime::now();
    // Each thread opens the lock file itself, as separate processes do,
    // so the flock really excludes them from each other.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let (mut h, _) = History::load_file(&path);
                let host = format!("h{i}.example.test");
                h.record(
                    now,
                    &net(),
                    &[(ep_at(&host, "192.0.2.1:5060"), PathOutcome::Failed)],
                );
                h.save_merged(&path)
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let (h, warning) = History::load_file(&path);
    assert!(warning.is_none(), "{warning:?}");
    let view = h.view(now, &net());
    for i in 0..8 {
        let e = ep_at(&format!("h{i}.example.test"), "192.0.2.1:5060");
        assert_eq!(view.verdict(&e), PathVerdict::Failed, "h{i}");
    }
}
