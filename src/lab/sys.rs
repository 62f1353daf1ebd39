//! Small system helpers: running `ip`/`sysctl`/`nft`, privilege and tool checks,
//! entering a namespace on a dedicated thread, process bookkeeping.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::LabError;

/// Finds `tool` in PATH (the same lookup `Command::new(tool)` does).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Root and `ip` present: the preconditions of every lab operation.
pub fn preflight() -> Result<(), LabError> {
    if !is_root() {
        return Err(LabError::NotRoot);
    }
    if which("ip").is_none() {
        return Err(LabError::MissingTool("ip", "iproute2"));
    }
    Ok(())
}

pub fn require(tool: &'static str, package: &'static str) -> Result<PathBuf, LabError> {
    which(tool).ok_or(LabError::MissingTool(tool, package))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, optionally feeding `stdin`; error with its stderr on failure.
pub fn run_input(cmd: &mut Command, stdin: Option<&str>) -> Result<String, LabError> {
    let text = describe(cmd);
    tracing::debug!(cmd = %text, "lab");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(LabError::io(format!("spawning `{text}`")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .map_err(LabError::io(format!("writing to `{text}`")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(LabError::io(format!("waiting for `{text}`")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: text,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

pub fn run(cmd: &mut Command) -> Result<String, LabError> {
    run_input(cmd, None)
}

/// `ip ARGS...`
pub fn ip<I, S>(args: I) -> Result<String, LabError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args))
}

/// `ip -n NS ARGS...` (split on whitespace: the lab never needs quoted arguments).
pub fn ipn(ns: &str, args: &str) -> Result<String, LabError> {
    run(Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args.split_whitespace()))
}

/// A `Command` that runs `program` inside namespace `ns` (`ip netns exec NS PROGRAM`).
pub fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Names of the existing named network namespaces (`/run/netns`).
pub fn netns_list() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// PIDs of the processes inside namespace `ns` (`ip netns pids`).
pub fn netns_pids(ns: &str) -> Vec<u32> {
    ip(["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a fresh std thread that first entered namespace `ns` (setns is per
/// thread: never do this on a tokio worker). Sockets created inside `f` stay in
/// `ns` for their whole life and may be handed back to any thread.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T, LabError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let path = Path::new("/run/netns").join(ns);
    let file =
        std::fs::File::open(&path).map_err(LabError::io(format!("opening {}", path.display())))?;
    let handle = std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            // SAFETY: valid fd, CLONE_NEWNET; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .map_err(LabError::io("spawning a namespace thread"))?;
    match handle.join() {
        Ok(r) => r.map_err(LabError::io(format!("setns into {ns}"))),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" that closes comm
            let state = s
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// True if process `pid` carries `SIPRACE_LAB_NAME=<name>` in its environment,
/// i.e. was started by this lab (guards against recycled PIDs).
pub fn belongs_to_lab(pid: u32, name: &str) -> bool {
    let want = format!("SIPRACE_LAB_NAME={name}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL after `grace`; waits (bounded) until every one is gone.
pub fn kill_all(pids: &[u32], grace: Duration) {
    let pids: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| *p > 1 && alive(*p))
        .collect();
    if pids.is_empty() {
        return;
    }
    for p in &pids {
        // SAFETY: plain kill(2) on a positive pid.
        unsafe { libc::kill(*p as libc::pid_t, libc::SIGTERM) };
    }
    let start = Instant::now();
    while start.elapsed() < grace && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in pids.iter().filter(|p| alive(**p)) {
        // SAFETY: as above.
        unsafe { libc::kill(*p as libc::pid_t, libc::SIGKILL) };
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `data` to `path` atomically: a temporary file next to it, unique to this
/// process and call (so concurrent writers, e.g. `impair` and the shaper, never share
/// one), then a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LabError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, data).map_err(LabError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        LabError::io(format!("renaming to {}", path.display()))(e)
    })
}

/// Bounded polling: calls `check` up to `tries` times, `every` apart, until it gives
/// `Some`; `None` if it never does (the caller names what did not happen).
pub fn poll<T>(tries: u32, every: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    for i in 0..tries {
        if let Some(v) = check() {
            return Some(v);
        }
        if i + 1 < tries {
            std::thread::sleep(every);
        }
    }
    None
}
