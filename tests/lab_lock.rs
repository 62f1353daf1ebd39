//! The lab lock: a second `siprace bench` (or `siprace lab down`) with the
//! name of a lab in use is refused with a message naming the holder's PID,
//! and touches nothing; a lock left by a dead process is taken over. The
//! lock lives under /run/siprace-lab, so these tests need root (otherwise
//! each says it was skipped).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use siprace::lab::lock::{lock_path, LabLock};
use siprace::lab::LabError;

fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the lab lock lives under /run/siprace-lab: needs root");
        return true;
    }
    false
}

/// A lab name of this test's own (1-16 characters).
fn lab_name(tag: &str) -> String {
    format!("lk{tag}{}", std::process::id())
}

/// `siprace ARGS`, killed and failed past 60 s.
fn siprace(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_siprace"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn siprace");
    common::wait_bounded(child, Duration::from_secs(60), &format!("siprace {args:?}"))
}

/// Removes the lock file when the test ends, however it ends.
struct RemoveLockFile(String);

impl Drop for RemoveLockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(lock_path(&self.0));
    }
}

#[test]
fn a_second_bench_on_a_lab_in_use_is_refused_naming_the_holder() {
    if skip() {
        return;
    }
    let name = lab_name("b");
    let _cleanup = RemoveLockFile(name.clone());
    let held = LabLock::acquire(&name, "the lab_lock test").expect("the lock is free");
    let me = std::process::id();

    // In-process: the same refusal, naming this process.
    match LabLock::acquire(&name, "a second user") {
        Err(LabError::InUse { holder, .. }) => {
            assert!(holder.contains(&format!("PID {me}")), "{holder}");
            assert!(holder.contains("the lab_lock test"), "{holder}");
        }
        other => panic!("a held lock was taken again: {other:?}"),
    }

    // The real command: refused before it builds (or removes) anything.
    let out_dir = std::env::temp_dir().join(format!("siprace-lab-lock-{me}"));
    let out = siprace(&[
        "bench",
        "--quick",
        "--lab",
        &name,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is busy"), "{stderr}");
    assert!(stderr.contains(&format!("PID {me}")), "{stderr}");
    assert!(!out_dir.exists(), "a refused bench wrote results");
    let namespaces = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(list) = namespaces {
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.contains(&format!("sr-{name}-")),
            "a refused bench built the lab: {list}"
        );
    }

    // `lab down` refuses too.
    let down = siprace(&["lab", "down", "--name", &name]);
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("PID {me}")), "{stderr}");

    // Released: free again, and nobody is said to have been taken over
    // (the previous holder is this very process).
    drop(held);
    assert!(
        !lock_path(&name).exists(),
        "the released lock left its file behind"
    );
    assert_eq!(LabLock::holder(&name).unwrap(), None);
    assert!(!lock_path(&name).exists(), "a mere check made a lock file");
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    if skip() {
        return;
    }
    let name = lab_name("d");
    let _cleanup = RemoveLockFile(name.clone());
    // A process that held the lab and died: its PID is in the file, but the
    // kernel released its flock when it exited.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().unwrap();
    std::fs::create_dir_all(lock_path(&name).parent().unwrap()).unwrap();
    std::fs::write(lock_path(&name), format!("{dead}\nsiprace bench\n")).unwrap();

    assert_eq!(
        LabLock::holder(&name).unwrap(),
        None,
        "a dead holder counts as holding"
    );
    let lock = LabLock::acquire(&name, "the lab_lock test").expect("a stale lock is taken over");
    assert_eq!(lock.took_over_from, Some(dead));
    let recorded = std::fs::read_to_string(lock_path(&name)).unwrap();
    assert_eq!(
        recorded,
        format!("{}\nthe lab_lock test\n", std::process::id())
    );
    drop(lock);
    assert!(
        !lock_path(&name).exists(),
        "the lock file stayed after release"
    );
}
