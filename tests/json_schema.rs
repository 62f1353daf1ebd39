//! The `--json` contract: real dials by the real binary (a winning one, a
//! failed one, one whose resolution fails), each report validated against
//! `docs/report.schema.json`. The DNS server and the SIP responder are the
//! test's own, on loopback; every run is bounded by `--deadline` and by a
//! wait that kills the child past it.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use siprace::endpoint::Transport;
use siprace::responder::ResponderConfig;

/// The schema file, parsed, and its validator.
fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/report.schema.json");
    let text = std::fs::read_to_string(path).expect("the schema file");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::draft202012::new(&schema).expect("the schema is a valid draft 2020-12 schema")
}

/// Runs `siprace dial ARGS --json` off the async runtime; returns the exit
/// code and the report, after checking it against the schema.
async fn dial_json(args: &[&str]) -> (Option<i32>, Value) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let child = Command::new(env!("CARGO_BIN_EXE_siprace"))
            .env_remove("RUST_LOG")
            .arg("dial")
            .args(&args)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn siprace");
        common::wait_bounded(child, Duration::from_secs(30), &format!("dial {args:?}"))
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    let errors: Vec<String> = validator()
        .iter_errors(&report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{report:#}");
    assert_eq!(report["schema"], 1);
    assert_eq!(report["siprace_version"], env!("CARGO_PKG_VERSION"));
    (out.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winning_dial_validates_with_its_config_and_response() {
    let responder = common::responder_on_both(&[Transport::Udp], ResponderConfig::default()).await;
    let port = responder
        .addr(Transport::Udp, siprace::endpoint::Family::V6)
        .unwrap()
        .port();
    let dns = common::serve_zone(
        &format!(
            "{}{}{}",
            common::naptr(10, "SIP+D2U", "_sip._udp"),
            common::srv("_sip._udp", port, "sip1"),
            common::SIP1_LOOPBACK
        ),
        "",
    )
    .await;
    let dns_addr = dns.addrs()[0].to_string();
    let (code, report) = dial_json(&[
        "sip:example.test",
        "--dns",
        &dns_addr,
        "--transports",
        "udp",
        "--attempt-delay",
        "300",
        "--deadline",
        "8000",
    ])
    .await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["result"], "connected");
    let config = &report["config"];
    assert_eq!(config["resolver"], dns_addr);
    assert_eq!(config["attempt_delay_ms"], 300.0);
    assert_eq!(config["deadline_ms"], 8000.0);
    assert_eq!(config["transports"], serde_json::json!(["udp"]));
    assert_eq!(config["strategy"], "siprace");
    let winner = report["winner"].as_u64().expect("a winner");
    let won = &report["attempts"][(winner - 1) as usize];
    assert_eq!(won["response"]["status"], 200, "{won:#}");
    assert_eq!(won["response"]["reason"], "OK", "{won:#}");
    assert!(won["response"]["rtt_ms"].as_f64().unwrap() >= 0.0);
    assert!(report["dns"].as_array().unwrap().len() >= 3, "{report:#}");
    // The schema has teeth: the old string form of `response`, or a field
    // it does not describe, does not validate.
    let mut old_form = report.clone();
    old_form["attempts"][(winner - 1) as usize]["response"] = "200 OK in 1.0 ms".into();
    assert!(!validator().is_valid(&old_form));
    let mut undocumented = report.clone();
    undocumented["config"]["surprise"] = true.into();
    assert!(!validator().is_valid(&undocumented));
    responder.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_validates() {
    // A TCP port on 127.0.0.1 with nobody listening: connect is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, report) = dial_json(&[
        &format!("sip:127.0.0.1:{port};transport=tcp"),
        "--probe",
        "--deadline",
        "5000",
    ])
    .await;
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["result"], "failed");
    assert_eq!(report["winner"], Value::Null);
    assert_eq!(report["attempts"][0]["outcome"], "failed");
    assert_eq!(report["attempts"][0]["response"], Value::Null);
    assert_eq!(report["config"]["probe"], true);
    assert_eq!(report["config"]["transports"], serde_json::json!(["tcp"]));
    assert_eq!(report["attempts"][0]["attempt_delay_source"], "configured");

    // The explanations validate too: the second dial of a failed path with
    // history says it failed recently, and a clamped flag is noted.
    let history = std::env::temp_dir().join(format!("siprace-schema-{}.json", std::process::id()));
    let target = format!("sip:127.0.0.1:{port};transport=tcp");
    let args = [
        target.as_str(),
        "--history-file",
        history.to_str().unwrap(),
        "--attempt-delay",
        "5000",
        "--deadline",
        "5000",
    ];
    let _ = dial_json(&args).await;
    let (code, report) = dial_json(&args).await;
    std::fs::remove_file(&history).unwrap();
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["attempts"][0]["history"]["kind"], "failed-recently");
    assert!(report["attempts"][0]["history"]["failed_ago_ms"]
        .as_f64()
        .is_some());
    assert_eq!(
        report["notes"][0],
        "--attempt-delay 5000 runs at the 2000 ms maximum (--max-attempt-delay)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_failure_validates() {
    let dns = common::serve_zone(common::SIP1_LOOPBACK, "").await;
    let dns_addr = dns.addrs()[0].to_string();
    let (code, report) = dial_json(&[
        "sip:absent.example.test",
        "--dns",
        &dns_addr,
        "--resolution-delay",
        "none",
        "--deadline",
        "8000",
    ])
    .await;
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(report["result"], "resolution-failed");
    assert_eq!(report["attempts"], serde_json::json!([]));
    assert_eq!(report["config"]["resolution_delay_ms"], Value::Null);
    assert!(!report["dns"].as_array().unwrap().is_empty(), "{report:#}");
    dns.shutdown().await;
}

// --- connection reuse (issue #10, h-reuse) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_dials_give_one_valid_report_per_line_and_a_summary() {
    let responder = common::responder_on_both(&[Transport::Tcp], ResponderConfig::default()).await;
    let addr = responder
        .addr(Transport::Tcp, siprace::endpoint::Family::V6)
        .unwrap();
    let target = format!("sip:{addr};transport=tcp");
    let out = tokio::task::spawn_blocking(move || {
        let child = Command::new(env!("CARGO_BIN_EXE_siprace"))
            .env_remove("RUST_LOG")
            .args(["dial", &target, "--count", "3", "--interval", "0"])
            .args(["--probe", "--deadline", "8000", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn siprace");
        common::wait_bounded(child, Duration::from_secs(30), "dial --count 3")
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let v = validator();
    for report in &lines[..3] {
        let errors: Vec<String> = v.iter_errors(report).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{report:#}");
    }
    assert_eq!(lines[0]["reuse"]["connection"], "new");
    assert_eq!(lines[0]["reuse"]["why_not"], "no live connection");
    for report in &lines[1..3] {
        assert_eq!(report["reuse"]["connection"], "reused", "{report:#}");
        assert_eq!(report["reuse"]["id"], 1);
        assert_eq!(report["reuse"]["response"]["status"], 200);
        assert_eq!(report["attempts"], serde_json::json!([]));
    }
    let summary = &lines[3]["summary"];
    assert_eq!(summary["dials"], 3);
    assert_eq!(summary["reused"], 2);
    assert_eq!(summary["connections_opened"], 1);
    // The schema knows `reuse`: a value it does not list is refused.
    let mut bad = lines[1].clone();
    bad["reuse"]["connection"] = "recycled".into();
    assert!(!v.is_valid(&bad));
    let stats = responder.shutdown().await;
    assert_eq!(stats.tcp.ipv6.connections, 1, "{stats:?}");
    assert_eq!(stats.tcp.ipv6.options, 3, "{stats:?}");
}
