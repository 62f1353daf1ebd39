//! The output conventions of `siprace dial`, on the real binary: no ANSI
//! codes in piped output or logs (NO_COLOR and `--color` honoured),
//! `--write-out` filled from the same values `--json` reports, `--quiet`.
//! The peer is a TCP listener on loopback that the test owns; every run is
//! bounded by `--deadline` and by a wait that kills the child past it.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ESC: u8 = 0x1b;

/// Runs `siprace ARGS` (RUST_LOG and NO_COLOR removed unless `env` sets
/// them) with piped output, killed and failed past 30 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siprace"));
    cmd.env_remove("RUST_LOG").env_remove("NO_COLOR");
    cmd.envs(env.iter().copied());
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn siprace");
    common::wait_bounded(child, Duration::from_secs(30), &format!("siprace {args:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A TCP listener on 127.0.0.1 and the target that dials it over TCP.
fn tcp_peer() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("sip:{};transport=tcp", listener.local_addr().unwrap());
    (listener, target)
}

/// A TCP port on 127.0.0.1 with nobody listening (connect is refused).
fn refused_target() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("sip:127.0.0.1:{port};transport=tcp")
}

#[test]
fn piped_output_and_logs_carry_no_ansi_codes() {
    let (_peer, target) = tcp_peer();
    let out = run(&["dial", &target, "-vv", "--deadline", "5000"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("* winner:"));
    assert!(!out.stderr.is_empty(), "-vv logged nothing");
    assert!(!out.stdout.contains(&ESC), "{:?}", text(&out.stdout));
    assert!(!out.stderr.contains(&ESC), "{:?}", text(&out.stderr));
}

#[test]
fn color_always_colours_and_no_color_only_changes_auto() {
    let (_peer, target) = tcp_peer();
    let always = run(&["dial", &target, "--color", "always", "-v"], &[]);
    assert_eq!(always.status.code(), Some(0));
    assert!(
        always.stdout.contains(&ESC),
        "--color always gave no colour"
    );
    assert!(
        always.stderr.contains(&ESC),
        "--color always: logs not coloured"
    );
    // An explicit flag outranks NO_COLOR; auto into a pipe never colours.
    let flag = run(
        &["dial", &target, "--color", "always"],
        &[("NO_COLOR", "1")],
    );
    assert!(flag.stdout.contains(&ESC));
    let auto = run(&["dial", &target, "-v"], &[("NO_COLOR", "1")]);
    assert!(!auto.stdout.contains(&ESC) && !auto.stderr.contains(&ESC));
    let never = run(&["dial", &target, "--color", "never", "-v"], &[]);
    assert!(!never.stdout.contains(&ESC) && !never.stderr.contains(&ESC));
}

#[test]
fn no_color_is_honoured_on_a_terminal() {
    // A real terminal for stdout and stderr: script(1) runs siprace on a
    // pseudo-terminal. Without it (not installed) the test says so.
    let Ok(probe) = Command::new("script").arg("--version").output() else {
        eprintln!("script(1) not found: the terminal case did not run");
        return;
    };
    assert!(probe.status.success());
    let (_peer, target) = tcp_peer();
    let line = format!(
        "{} dial '{target}' -v --deadline 5000",
        env!("CARGO_BIN_EXE_siprace")
    );
    let on_tty = |env: &[(&str, &str)]| run_script(&line, env);
    let coloured = on_tty(&[]);
    assert!(
        coloured.contains(&ESC),
        "no colour on a terminal: {}",
        text(&coloured)
    );
    let plain = on_tty(&[("NO_COLOR", "1")]);
    assert!(text(&plain).contains("* winner:"), "{}", text(&plain));
    assert!(
        !plain.contains(&ESC),
        "NO_COLOR ignored: {:?}",
        text(&plain)
    );
}

/// What `sh -c LINE` wrote to the pseudo-terminal script(1) gave it.
fn run_script(line: &str, env: &[(&str, &str)]) -> Vec<u8> {
    let out = Command::new("script")
        .args(["-q", "-e", "-c", line, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

#[test]
fn write_out_reports_what_json_reports() {
    let (_peer, target) = tcp_peer();
    let json = run(&["dial", &target, "--json"], &[]);
    assert_eq!(json.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let winner_id = report["winner"].as_u64().unwrap();
    let winner = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"].as_u64() == Some(winner_id))
        .unwrap();

    let format =
        r"%{winner}|%{family}|%{transport}|%{attempts}|%{result}|%{exitcode}|%{time_total}\n";
    let out = run(&["dial", &target, "-qq", "-w", format], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.ends_with('\n'), "{line:?}");
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    assert_eq!(fields[0], winner["addr"].as_str().unwrap());
    assert_eq!(fields[1], winner["family"].as_str().unwrap());
    assert_eq!(fields[2], winner["transport"].as_str().unwrap());
    assert_eq!(
        fields[3],
        report["attempts"].as_array().unwrap().len().to_string()
    );
    assert_eq!(fields[4], report["result"].as_str().unwrap());
    assert_eq!(fields[5], "0");
    let seconds: f64 = fields[6].parse().unwrap();
    assert!(seconds > 0.0 && seconds < 30.0, "{seconds}");

    // A failed dial: empty winner fields, its own exit code.
    let refused = refused_target();
    let out = run(
        &[
            "dial",
            &refused,
            "-qq",
            "-w",
            "[%{winner}] %{result} %{exitcode}",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "[] failed 1");
}

#[test]
fn an_unknown_write_out_variable_is_a_usage_error() {
    let (_peer, target) = tcp_peer();
    let out = run(&["dial", &target, "-w", "%{time_totl}"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("%{time_totl}"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "it dialed anyway");
}

#[test]
fn quiet_prints_only_the_winner_line_and_qq_nothing() {
    let (peer, target) = tcp_peer();
    let addr = peer.local_addr().unwrap().to_string();
    let out = run(&["dial", &target, "-q"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(
        stdout.starts_with(&format!("ipv4 tcp {addr} (")),
        "{stdout:?}"
    );

    let out = run(&["dial", &target, "-qq"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{:?}", text(&out.stdout));

    let out = run(&["dial", &refused_target(), "-q"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{:?}", text(&out.stdout));
}

/// A `siprace` child killed by its own PID when the test ends early (a
/// failed assertion), so no dial outlives the test.
struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_timeline_is_live_and_ctrl_c_prints_what_was_seen_and_exits_130() {
    use std::io::{BufRead, BufReader, Read};
    // A UDP socket on loopback that never answers: the UDP OPTIONS probe
    // retransmits (Timer E) until the 30 s deadline, so the dial is slow.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("sip:{}", silent.local_addr().unwrap());
    let child = Command::new(env!("CARGO_BIN_EXE_siprace"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(["dial", &target, "--deadline", "30000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn siprace");
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Synchronised on the output: read until the attempt's line (EOF, the
    // dial's end, would stop the loop too: then the test fails below).
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains("* attempt #1 ipv4 udp") {
            break;
        }
    }
    assert!(
        seen.contains("started; next attempt after"),
        "no attempt line: {seen:?}"
    );
    // Printed while the dial still runs (its deadline is 30 s away), not
    // at its end.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the dial ended before its first attempt line was read: {seen:?}"
    );
    assert!(!seen.contains("* no connection"), "{seen}");
    // The probe really was sent: the silent peer has an OPTIONS waiting.
    let mut buf = [0u8; 2048];
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (n, _) = silent.recv_from(&mut buf).expect("the OPTIONS probe");
    assert!(buf[..n].starts_with(b"OPTIONS "));

    // Ctrl-C: SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let child = guard.0.take().unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(30), "siprace after SIGINT");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{rest}\n{}",
        text(&out.stderr)
    );
    let last = rest.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("* interrupted after ") && last.ends_with(" s: 1 attempt, none answered"),
        "{seen}{rest}"
    );
    // What was seen stays printed once: no final timeline repeats it.
    assert_eq!(
        format!("{seen}{rest}").matches("* attempt #1 ipv4").count(),
        1,
        "{seen}{rest}"
    );
}

#[test]
fn each_attempt_says_its_delay_and_where_it_came_from() {
    let dir = std::env::temp_dir().join(format!("siprace-output-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("history.json");
    let history = history.to_str().unwrap();
    // Cold: the configured delay.
    let (_peer, target) = tcp_peer();
    let out = run(&["dial", &target, "--history-file", history], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("started; next attempt after 100.0 ms (configured)"),
        "{stdout}"
    );
    // The same path again: its delay comes from the RTT history measured.
    let out = run(&["dial", &target, "--history-file", history], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(" ms (history RTT "), "{stdout}");
    // A path that failed: history says it goes last, and when it failed.
    let refused = refused_target();
    let history = dir.join("refused.json");
    let history = history.to_str().unwrap();
    assert_eq!(
        run(&["dial", &refused, "--history-file", history], &[])
            .status
            .code(),
        Some(1)
    );
    let out = run(&["dial", &refused, "--history-file", history], &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("* history: ipv4/tcp to 127.0.0.1 failed ")
            && stdout.contains(" s ago: tried last"),
        "{stdout}"
    );
    let json = run(
        &["dial", &refused, "--history-file", history, "--json"],
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["attempts"][0]["history"]["kind"], "failed-recently");
    assert_eq!(report["attempts"][0]["attempt_delay_source"], "configured");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clamped_flags_and_an_ignored_history_file_are_said_once_at_the_start() {
    let refused = refused_target();
    let out = run(&["dial", &refused, "--attempt-delay", "5000"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let note = "* note: --attempt-delay 5000 runs at the 2000 ms maximum (--max-attempt-delay)";
    assert_eq!(stdout.lines().nth(1), Some(note), "{stdout}");
    assert_eq!(stdout.matches("* note:").count(), 1, "{stdout}");
    // The failure summary names the attempt's address once.
    let summary = stdout.lines().find(|l| l.starts_with("*   #1 ")).unwrap();
    assert_eq!(summary.matches("127.0.0.1:").count(), 1, "{summary}");

    // A strategy that tries one address at a time has no delay in force.
    let out = run(&["dial", &refused, "--strategy", "sequential"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("started; one at a time: the next only after it fails"),
        "{stdout}"
    );

    let dir = std::env::temp_dir().join(format!("siprace-ignored-{}", std::process::id()));
    let out = run(
        &[
            "dial",
            &refused,
            "--strategy",
            "rfc8305",
            "--history-file",
            dir.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["notes"][0],
        "--history-file is ignored: strategy rfc8305 does not use history"
    );
    let _ = std::fs::remove_file(&dir);
}

/// A DNS relay on 127.0.0.1 in front of `server` that never passes on a
/// query whose name contains `dropped` (DNS wire labels): the query stays
/// unanswered while the others are answered by the real server. It relays
/// one query at a time until `stop` is set (and at most 30 s).
fn dropping_relay(
    server: std::net::SocketAddr,
    dropped: &'static [u8],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::net::UdpSocket;
    use std::sync::atomic::Ordering;
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    front
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = front.local_addr().unwrap();
    let relay = std::thread::spawn(move || {
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            let Ok((n, client)) = front.recv_from(&mut buf) else {
                continue;
            };
            if buf[..n].windows(dropped.len()).any(|w| w == dropped) {
                continue;
            }
            back.send_to(&buf[..n], server).unwrap();
            if let Ok((m, _)) = back.recv_from(&mut buf) {
                front.send_to(&buf[..m], client).unwrap();
            }
        }
    });
    (addr, relay)
}

/// `siprace dial sip:example.test` over UDP or TCP, IPv4 only, with `extra`
/// flags, asking `server` through a relay that drops the `_sip._tcp` query.
async fn dial_dropping_tcp_srv(server: std::net::SocketAddr, extra: &[&str]) -> Output {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (relay, relay_thread) = dropping_relay(server, b"\x04_sip\x04_tcp", stop.clone());
    let mut args: Vec<String> = [
        "dial",
        "sip:example.test",
        "--dns",
        &relay.to_string(),
        "--transports",
        "udp,tcp",
        "-4",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &[])
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    relay_thread.join().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_srv_query_that_became_unnecessary_is_shown_as_not_needed() {
    // NAPTR names only UDP; the pipelined _sip._tcp query is never answered
    // (the relay drops it), so when the _sip._udp answer completes the SRV
    // stage it is abandoned as not needed, not left looking unanswered.
    // Nobody on this UDP port: the attempt fails at once (ICMP).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let body = format!(
        "{}{}{}",
        common::naptr(10, "SIP+D2U", "_sip._udp"),
        common::srv("_sip._udp", port, "sip1"),
        "sip1 IN A 127.0.0.1\n"
    );
    let dns = common::serve_zone(&body, "").await;
    let out = dial_dropping_tcp_srv(dns.addrs()[0], &["--deadline", "10000"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "< DNS SRV _sip._tcp.example.test: not needed \
             (cancelled, a higher-priority answer made it unnecessary)"
        ),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        !stdout.contains("_sip._udp.example.test: not needed"),
        "{stdout}"
    );
    let out = dial_dropping_tcp_srv(dns.addrs()[0], &["--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tcp = json["dns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "_sip._tcp.example.test")
        .unwrap();
    assert_eq!(tcp["abandoned"], "not-needed", "{tcp}");
    assert!(tcp["answered_ms"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_says_why_the_other_family_went_first() {
    // sip1 has ::1 and 127.0.0.1; only 127.0.0.1 listens (TCP), so IPv6 is
    // refused and IPv4 wins. The next dial tries IPv4 first and says why.
    let dns = common::serve_zone(common::SIP1_LOOPBACK, "").await;
    let server = dns.addrs()[0].to_string();
    let (peer, _) = tcp_peer();
    let port = peer.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("siprace-prefer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("history.json").to_str().unwrap().to_string();
    let target = format!("sip:sip1.example.test:{port};transport=tcp");
    let dial = move || {
        let (server, history, target) = (server.clone(), history.clone(), target.clone());
        move || {
            run(
                &[
                    "dial",
                    &target,
                    "--dns",
                    &server,
                    "--history-file",
                    &history,
                ],
                &[],
            )
        }
    };
    let first = tokio::task::spawn_blocking(dial()).await.unwrap();
    let first_text = text(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{first_text}");
    assert!(first_text.contains("* attempt #1 ipv6 tcp"), "{first_text}");
    let second = tokio::task::spawn_blocking(dial()).await.unwrap();
    let stdout = text(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("* attempt #1 ipv4 tcp"), "{stdout}");
    assert!(
        stdout.contains("* history: ipv4 first: ipv6/tcp to sip1.example.test failed ")
            && stdout.contains(" s ago, tried last"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_says_when_the_faster_family_goes_first() {
    // Both loopbacks listen; the history file (written by a first dial,
    // then given RTTs: IPv6 40 ms, IPv4 3 ms) makes IPv4 go first.
    let dns = common::serve_zone(common::SIP1_LOOPBACK, "").await;
    let server = dns.addrs()[0].to_string();
    let port = common::free_port_on_both();
    let _v6 = TcpListener::bind(("::1", port)).unwrap();
    let _v4 = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = std::env::temp_dir().join(format!("siprace-faster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("history.json");
    let target = format!("sip:sip1.example.test:{port};transport=tcp");
    let args = [
        "dial".to_string(),
        target,
        "--dns".to_string(),
        server,
        "--history-file".to_string(),
        history.to_str().unwrap().to_string(),
    ];
    let dial = |args: [String; 6]| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[])
        })
        .await
        .unwrap()
    };
    let first = dial(args.clone()).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stdout));
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&history).unwrap()).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let path = |family: &str, srtt_us: u64| {
        serde_json::json!({
            "host": "sip1.example.test", "family": family, "transport": "tcp",
            "srtt_us": srtt_us, "rttvar_us": 500, "worked_ms": now_ms,
            "failed_ms": null, "last_failed": false
        })
    };
    saved["networks"][0]["paths"] = serde_json::json!([path("ipv6", 40_000), path("ipv4", 3_000)]);
    std::fs::write(&history, serde_json::to_vec(&saved).unwrap()).unwrap();
    let second = dial(args).await;
    let stdout = text(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("* attempt #1 ipv4 tcp"), "{stdout}");
    assert!(
        stdout.contains(
            "* history: ipv4 preferred on sip1.example.test: history RTT 3.0 ms vs 40.0 ms"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("started; next attempt after 28.0 ms (history RTT 3.0 ms + margin)"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
