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
