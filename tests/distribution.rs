//! What `siprace` offers packagers: completion scripts for each shell, a
//! man page that renders, and a `--version` naming its commit.

use std::process::{Command, Output, Stdio};

fn siprace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_siprace"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run siprace")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn completions_generate_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = siprace(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["siprace", "dial", "write-out", "strategy"] {
            assert!(script.contains(word), "{shell}: no {word} in the script");
        }
    }
    // The bash script is valid bash (the only one of these shells here).
    let bash = siprace(&["completions", "bash"]).stdout;
    let path = std::env::temp_dir().join(format!("siprace-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    match check {
        Ok(out) => assert!(out.status.success(), "bash -n: {}", text(&out.stderr)),
        Err(e) => eprintln!("bash not found ({e}): syntax not checked"),
    }
    let unknown = siprace(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn the_man_page_renders() {
    let page = siprace(&["man"]);
    assert!(page.status.success());
    let roff = text(&page.stdout);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH siprace 1"),
        "{roff}"
    );
    let dial = siprace(&["man", "dial"]);
    assert!(dial.status.success());
    assert!(text(&dial.stdout).contains(".TH siprace-dial 1"));
    assert_eq!(siprace(&["man", "nope"]).status.code(), Some(2));

    // groff renders it to text without a warning (when groff is installed).
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-cbu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut groff) = rendered else {
        eprintln!("groff not found: the page was not rendered");
        return;
    };
    use std::io::Write;
    groff.stdin.take().unwrap().write_all(&page.stdout).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "groff warns: {}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("SYNOPSIS") && shown.contains("siprace"),
        "{shown}"
    );
    assert!(shown.contains("completions"), "{shown}");
}

#[test]
fn version_names_the_commit_date_and_features() {
    let out = siprace(&["--version"]);
    assert!(out.status.success());
    let version = text(&out.stdout);
    let field = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name}: line in {version:?}"))
            .to_owned()
    };
    // The commit this binary was built from, or "unknown" without git.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned());
    assert_eq!(field("commit"), head.unwrap_or_else(|| "unknown".into()));
    let date = field("built");
    assert!(
        date == "unknown" || date.len() == 10 && date.as_bytes()[4] == b'-',
        "{date}"
    );
    assert!(field("features").split(',').any(|f| f == "tools"));
    assert!(version.starts_with(&format!("siprace {}", env!("CARGO_PKG_VERSION"))));
    // -V is the one-line form.
    let short = text(&siprace(&["-V"]).stdout);
    assert_eq!(short.lines().count(), 1, "{short:?}");
    assert!(short.contains("(commit "), "{short:?}");
}

#[test]
fn help_names_every_responder_transport_and_hides_internals() {
    let top = text(&siprace(&["--help"]).stdout);
    assert!(top.contains("UDP, TCP, TLS and SCTP"), "{top}");
    let lab = text(&siprace(&["lab", "--help"]).stdout);
    let listed = |name: &str| {
        lab.lines()
            .any(|l| l.trim_start().starts_with(&format!("{name} ")))
    };
    assert!(listed("status") && !listed("shaper"), "{lab}");
    let status = text(&siprace(&["lab", "status", "-h"]).stdout);
    for line in status.lines().filter(|l| l.trim_start().starts_with("--")) {
        let flag = line.split_whitespace().next().unwrap_or("");
        assert!(
            line.trim_start().len() > flag.len() + 8,
            "lab status {flag} has no help text: {status}"
        );
    }
}

#[test]
fn insecure_warns_once() {
    // A TCP peer that accepts and hangs up: the TLS attempt is made (so
    // the TLS configuration is built) and fails, quickly.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("sip:{};transport=tls", listener.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    });
    let out = Command::new(env!("CARGO_BIN_EXE_siprace"))
        .args(["dial", &target, "--insecure", "--deadline", "5000"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run siprace");
    peer.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let warnings = stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("insecure"))
        .count();
    assert_eq!(warnings, 1, "{stderr}");
}
