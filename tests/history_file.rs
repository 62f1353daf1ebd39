//! The history file: [`History::load_file`] and [`History::save_merged`]
//! directly, and `siprace dial --history-file` with the real binary
//! (concurrent processes sharing one file, a corrupt file). Loopback only.
#![cfg(feature = "tools")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use siprace::dialer::{Dialer, DialerConfig};
use siprace::endpoint::{Endpoint, Family, Transport};
use siprace::race::history::{History, NetworkId, PathOutcome, PathVerdict};
use siprace::race::strategy::Strategy;

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

/// The network id of a JSON report (`"network": "<id> (<description>)"`).
fn network_of(report: &serde_json::Value) -> NetworkId {
    let text = report["network"]
        .as_str()
        .unwrap_or_else(|| panic!("the report names no network: {report}"));
    NetworkId::named(text.split(' ').next().unwrap())
}

/// The attempt delay the IPv6 attempt of a JSON report got, in ms.
fn v6_delay_of(report: &serde_json::Value) -> Option<f64> {
    report["attempts"]
        .as_array()?
        .iter()
        .find(|a| a["family"] == "ipv6")
        .and_then(|a| a["attempt_delay_ms"].as_f64())
}

/// What a history view says of each host's paths (by kind, not RTT: the
/// two runs measure their own RTTs) and of each family on the network.
fn summary(history: &History, network: &NetworkId, port: u16) -> Vec<String> {
    let view = history.view(SystemTime::now(), network);
    let mut out = Vec::new();
    for host in ["h1", "h2", "h3"] {
        for (family, addr) in [
            ("v6", format!("[::1]:{port}")),
            ("v4", format!("127.0.0.1:{port}")),
        ] {
            let verdict = match view.verdict(&ep_at(&format!("{host}.example.test"), &addr)) {
                PathVerdict::Worked { .. } => "worked",
                PathVerdict::Failed => "failed",
                PathVerdict::Doubtful => "doubtful",
                PathVerdict::Unknown => "unknown",
            };
            out.push(format!("{host} {family} {verdict}"));
        }
    }
    out.push(format!("v6 suspect {}", view.family_suspect(Family::V6)));
    out.push(format!("v4 suspect {}", view.family_suspect(Family::V4)));
    out
}

/// Cross-host evidence through the file: three `siprace dial` processes,
/// one after the other, each dialling a new host whose IPv6 is refused,
/// learn what one `Dialer` dialling the same three hosts learns: after two
/// hosts, IPv6 is suspect on the network, and the third host's IPv6 attempt
/// gets the shortest head start (10 ms) instead of the cold delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_history_file_learn_as_one_dialer() {
    let port = common::free_port_on_both();
    // IPv4 accepts (the kernel completes the handshake; nothing needs to
    // accept), IPv6 refuses: the port is free on ::1.
    let _v4_only = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let hosts = "h1 IN AAAA ::1\nh1 IN A 127.0.0.1\n\
                 h2 IN AAAA ::1\nh2 IN A 127.0.0.1\n\
                 h3 IN AAAA ::1\nh3 IN A 127.0.0.1\n";
    let dns = common::serve_zone(hosts, "").await;
    let dns_addr = dns.addrs()[0];
    let target = |host: &str| format!("sip:{host}.{}:{port};transport=tcp", common::DOMAIN);

    // One long-lived dialer. Both address answers are awaited, so that
    // IPv6 (preferred) is always tried first whatever the machine's load.
    let mut cfg = DialerConfig::for_strategy(Strategy::Siprace);
    cfg.locate.dns_server = Some(dns_addr);
    cfg.locate.query_timeout = Duration::from_secs(5);
    cfg.race.resolution_delay = None;
    let dialer = Dialer::new(cfg).unwrap();
    let mut one_dialer = Vec::new();
    for host in ["h1", "h2", "h3"] {
        let dial = dialer.dial(&target(host)).await.expect("IPv4 connects");
        one_dialer.push(serde_json::to_value(&dial.report).unwrap());
    }

    // The same dials by three processes sharing a history file.
    let dir = TempDir::new("history-learns");
    let path = dir.0.join("history.json");
    let mut processes = Vec::new();
    for host in ["h1", "h2", "h3"] {
        let child = siprace()
            .arg("dial")
            .arg(target(host))
            .args([
                "--resolution-delay",
                "none",
                "--dns-timeout",
                "5000",
                "--json",
            ])
            .arg("--dns")
            .arg(dns_addr.to_string())
            .arg("--history-file")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = tokio::task::spawn_blocking(move || wait_bounded(child, Duration::from_secs(60)))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{host}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{host}: not a report ({e}): {stderr}"));
        processes.push(report);
    }
    dns.shutdown().await;

    let network = network_of(&one_dialer[0]);
    for report in one_dialer.iter().chain(&processes) {
        assert_eq!(network_of(report), network, "one network throughout");
    }
    // The head starts: cold for the first two hosts, the shortest for the
    // third (IPv6 suspect after failing on two hosts). IPv4 started at
    // once after each refusal, and never needed a delay of its own.
    let cold = Strategy::Siprace.race_config().attempt_delay.as_secs_f64() * 1000.0;
    let expected = [Some(cold), Some(cold), Some(10.0)];
    let v6_delays = |reports: &[serde_json::Value]| -> Vec<Option<f64>> {
        reports.iter().map(v6_delay_of).collect()
    };
    assert_eq!(v6_delays(&one_dialer), expected, "one dialer");
    assert_eq!(v6_delays(&processes), expected, "processes sharing a file");
    // And the history they end with says the same.
    let (from_file, warning) = History::load_file(&path);
    assert!(warning.is_none(), "{warning:?}");
    let learnt = summary(&dialer.history(), &network, port);
    assert_eq!(summary(&from_file, &network, port), learnt);
    assert!(
        learnt.contains(&"v6 suspect true".to_string()),
        "{learnt:?}"
    );
    assert!(learnt.contains(&"h3 v4 worked".to_string()), "{learnt:?}");
}
