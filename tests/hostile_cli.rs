//! The `siprace` binary against hostile or careless use: flags out of range,
//! closed output pipes, a missing CA store, unusable address literals, a DNS
//! server that refuses. Each test runs the real binary as a subprocess; every
//! wait on it is bounded, and a child that outlives its bound is killed (by
//! its own PID) and fails the test.

mod common;
use common::wait_bounded;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn siprace() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siprace"));
    // The tests read the CLI's own words, not a developer's RUST_LOG.
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `siprace ARGS` with captured output, bounded by `bound`.
fn run(args: &[&str], bound: Duration) -> Output {
    let child = siprace()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn siprace");
    wait_bounded(child, bound, &args.join(" "))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const USAGE: i32 = 2;

#[test]
fn out_of_range_dial_flags_are_usage_errors_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--family-count", "18446744073709551615"],
            "--family-count",
        ),
        (&["--family-count", "17"], "--family-count"),
        (&["--dns-timeout", "0"], "--dns-timeout"),
        (&["--dns-timeout", "18446744073709551615"], "--dns-timeout"),
        (&["--deadline", "0"], "--deadline"),
        (&["--deadline", "18446744073709551615"], "--deadline"),
        (&["--max-concurrent", "0"], "--max-concurrent"),
        (&["--max-concurrent", "100000"], "--max-concurrent"),
        (
            &["--attempt-delay", "18446744073709551615"],
            "--attempt-delay",
        ),
        (&["--min-attempt-delay", "1"], "--min-attempt-delay"),
        (
            &["--max-attempt-delay", "18446744073709551615"],
            "--max-attempt-delay",
        ),
        (
            &["--resolution-delay", "18446744073709551615"],
            "--resolution-delay",
        ),
        (&["--t1", "0"], "--t1"),
        (&["--t1", "18446744073709551615"], "--t1"),
        (&["--dns", "127.0.0.1:0"], "--dns"),
        (&["--dns", "0.0.0.0"], "--dns"),
    ];
    for (flags, flag) in cases {
        let mut args = vec!["dial", "sip:127.0.0.1:9", "--transports", "udp"];
        args.extend_from_slice(flags);
        let out = run(&args, Duration::from_secs(20));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(USAGE), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{flags:?}: the error does not name {flag}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{flags:?}: a usage error dialed anyway"
        );
    }
}

#[test]
fn the_largest_family_count_still_ends_by_the_deadline() {
    // This once spun at 100 % CPU for ever (with usize::MAX); the largest
    // allowed count must leave the dial bounded by its deadline.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("sip:{};transport=udp", silent.local_addr().unwrap());
    let out = run(
        &[
            "dial",
            &target,
            "--family-count",
            "16",
            "--deadline",
            "500",
            "--json",
        ],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        report["reason"].as_str().unwrap().contains("deadline"),
        "{report}"
    );
}

#[test]
fn out_of_range_responder_flags_are_usage_errors_naming_the_flag() {
    let cases: &[(&str, &str)] = &[
        ("--max-connections", "0"),
        ("--max-connections", "18446744073709551615"),
        ("--idle-timeout", "0"),
        ("--idle-timeout", "18446744073709551615"),
        ("--stats-every", "0"),
        ("--stats-every", "18446744073709551615"),
    ];
    for (flag, value) in cases {
        let args = ["responder", "--listen", "udp:127.0.0.1:0", flag, value];
        let out = run(&args, Duration::from_secs(20));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(USAGE), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
}

/// Which standard stream gets the closed pipe.
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
}

/// Runs `siprace ARGS` with one output stream connected to a pipe whose read
/// end is already closed (so any write to it fails with EPIPE), the other
/// captured.
fn run_into_closed_pipe(args: &[&str], closed: Closed, bound: Duration) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = siprace();
    cmd.args(args).stdin(Stdio::null());
    match closed {
        Closed::Stdout => cmd.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => cmd.stdout(Stdio::piped()).stderr(writer),
    };
    let child = cmd.spawn().expect("spawn siprace");
    // The parent's copy of the write end went with `cmd`'s Stdio: only the
    // child holds it.
    drop(cmd);
    wait_bounded(child, bound, &args.join(" "))
}

/// Ended as a Unix filter does when its reader is gone: killed by SIGPIPE,
/// nothing on the other stream about a panic.
fn assert_ended_by_sigpipe(out: &Output, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let other = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(101), "{what}: panicked: {other}");
    assert!(!other.contains("panicked"), "{what}: {other}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{what}: {:?}: {other}",
        out.status
    );
}

#[test]
fn a_closed_stdout_or_stderr_ends_the_dial_like_sigpipe() {
    let bound = Duration::from_secs(30);
    let cases: &[(&[&str], Closed)] = &[
        // A usage error's message.
        (&["dial", ""], Closed::Stderr),
        // clap's own error and help texts.
        (&["dial"], Closed::Stderr),
        (&["dial", "--help"], Closed::Stdout),
        // The report.
        (
            &["dial", "sip:127.0.0.1:9", "--transports", "udp"],
            Closed::Stdout,
        ),
        (
            &["dial", "sip:127.0.0.1:9", "--transports", "udp", "--json"],
            Closed::Stdout,
        ),
        // The log (tracing's writer).
        (
            &["dial", "sip:127.0.0.1:9", "--transports", "udp", "-vv"],
            Closed::Stderr,
        ),
    ];
    for (args, closed) in cases {
        let out = run_into_closed_pipe(args, *closed, bound);
        assert_ended_by_sigpipe(&out, &format!("{args:?} with {closed:?} closed"));
    }
}

#[test]
fn a_closed_stdout_ends_the_responder_and_the_lab_status_like_sigpipe() {
    let bound = Duration::from_secs(30);
    // The responder's startup lines are println!s in the library.
    let out = run_into_closed_pipe(
        &["responder", "--listen", "udp:127.0.0.1:0"],
        Closed::Stdout,
        bound,
    );
    assert_ended_by_sigpipe(&out, "responder");
    // Reads the namespaces only; this name belongs to no lab.
    let out = run_into_closed_pipe(
        &["lab", "status", "--name", "hostile-cli-none"],
        Closed::Stdout,
        bound,
    );
    assert_ended_by_sigpipe(&out, "lab status");
}

/// A dial that makes no TLS attempt needs no CA store; one that does fails
/// those attempts with the reason (exit 1), not the whole dial as a usage
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_without_tls_needs_no_ca_store() {
    use siprace::endpoint::{Family, Transport};
    use siprace::responder::{self, ListenerConfig, ResponderConfig};
    let listeners = [Transport::Udp, Transport::Tcp]
        .map(|transport| ListenerConfig {
            transport,
            addr: "127.0.0.1:0".parse().unwrap(),
            silent: false,
        })
        .to_vec();
    let responder = responder::start(ResponderConfig {
        listeners,
        ..ResponderConfig::default()
    })
    .await
    .expect("responder");
    let without_store = |target: String| {
        tokio::task::spawn_blocking(move || {
            let child = siprace()
                .args(["dial", &target, "--json", "--probe"])
                .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
                .env("SSL_CERT_DIR", "/nonexistent")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn siprace");
            wait_bounded(child, Duration::from_secs(30), &target)
        })
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        let addr = responder.addr(transport, Family::V4).unwrap();
        let out = without_store(format!("sip:{addr};transport={transport}"))
            .await
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{transport}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["result"], "connected", "{report}");
    }
    // The same store-less environment with a TLS attempt: that attempt fails
    // and says why.
    let tcp = responder.addr(Transport::Tcp, Family::V4).unwrap();
    let out = without_store(format!("sips:{tcp}")).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attempt = &report["attempts"][0];
    assert_eq!(attempt["transport"], "tls", "{report}");
    assert!(
        attempt.to_string().contains("no trusted root"),
        "the TLS attempt does not say why: {report}"
    );
    let stats = responder.shutdown().await;
    assert_eq!(
        stats.get(Transport::Tcp, Family::V4).options,
        1,
        "{stats:?}"
    );
}

#[test]
fn unusable_address_literals_are_usage_errors() {
    for (target, why) in [
        ("sip:0.0.0.0", "unspecified"),
        ("sip:[::]", "unspecified"),
        ("sip:224.0.0.1", "multicast"),
        ("sip:[ff02::1]:5060", "multicast"),
        ("sip:255.255.255.255", "broadcast"),
    ] {
        let out = run(&["dial", target, "--json"], Duration::from_secs(20));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(USAGE), "{target}: {stderr}");
        assert!(stderr.contains("cannot be dialed"), "{target}: {stderr}");
        assert!(stderr.contains(why), "{target}: {stderr}");
        assert!(out.stdout.is_empty(), "{target}: it was dialed");
    }
}

/// A UDP port on loopback with nothing behind it (bound, then released).
fn closed_udp_port() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_refused_dns_port_is_named_not_timed_out() {
    let dns = closed_udp_port();
    // A DNS timeout so long that only the refusal can end the dial before it.
    let timeout_ms = 20_000.0;
    let out = run(
        &[
            "dial",
            "sip:example.test",
            "--dns",
            &dns.to_string(),
            "--dns-timeout",
            "20000",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = format!("DNS server {dns} refused the query (port unreachable)");
    let queries = report["dns"].as_array().unwrap();
    assert!(!queries.is_empty(), "{report}");
    for q in queries {
        assert_eq!(q["outcome"], "error", "not classified as an error: {q}");
        assert_eq!(q["records"][0], refused.as_str(), "{q}");
    }
    assert!(
        report["reason"].as_str().unwrap().contains(&refused),
        "{report}"
    );
    assert!(
        report["total_ms"].as_f64().unwrap() < timeout_ms,
        "the dial waited for the DNS timeout: {report}"
    );
}

#[test]
fn running_out_of_file_descriptors_is_named() {
    use std::os::unix::process::CommandExt;
    let dns = closed_udp_port().to_string();
    let mut named = false;
    // From too few descriptors to start at all to enough for every query:
    // somewhere in between, the runtime starts and the DNS sockets do not.
    for limit in 4..=24u64 {
        let mut cmd = siprace();
        cmd.args([
            "dial",
            "sip:example.test",
            "--dns",
            &dns,
            "--transports",
            "udp",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe system calls, in the child between
        // fork and exec: inherited descriptors above stderr are marked
        // close-on-exec (so every run starts with the same three), then the
        // limit is set.
        unsafe {
            cmd.pre_exec(move || {
                libc::close_range(
                    3,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
                );
                let rlim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = wait_bounded(cmd.spawn().expect("spawn"), Duration::from_secs(30), "dial");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!stderr.contains("panicked"), "limit {limit}: {stderr}");
        assert!(
            !stdout.contains("no connections available"),
            "limit {limit}: {stdout}"
        );
        match out.status.code() {
            Some(1) => assert!(
                stderr.contains("cannot start the runtime")
                    && stderr.contains("Too many open files"),
                "limit {limit}: {stderr}"
            ),
            Some(3) => named |= stdout.contains("too many open files (EMFILE"),
            other => panic!("limit {limit}: exit {other:?}: {stderr}{stdout}"),
        }
    }
    assert!(
        named,
        "no limit made the DNS sockets fail with a named EMFILE"
    );
}
