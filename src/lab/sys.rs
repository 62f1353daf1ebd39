//! Small system helpers: running `ip`/`sysctl`/`nft`, privilege and tool checks,
//! entering a namespace on a dedicated thread, process bookkeeping, blocking socket
//! reads that survive signals.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::net::{TcpStream, UdpSocket};
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

/// SIGTERM, then SIGKILL after `grace`; waits (bounded: 10 s, generous for a loaded
/// machine, ended as soon as they are) until every one is gone.
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
    while start.elapsed() < Duration::from_secs(10) && pids.iter().any(|p| alive(*p)) {
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

/// A socket whose blocking reads take a timeout (`SO_RCVTIMEO`).
pub trait ReadTimeout {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ReadTimeout for UdpSocket {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UdpSocket::set_read_timeout(self, timeout)
    }
}

impl ReadTimeout for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// Runs the blocking read `read` (a `recv`, `recv_from` or `read` on `sock`, which
/// must be in blocking mode) until it gives data or an error, or `deadline` passes:
/// then the error is `TimedOut`.
///
/// One plain call with a socket timeout is not enough: Linux cuts such a call short
/// with EINTR whenever a signal is delivered to the thread, whatever its handler or
/// `SA_RESTART` (signal(7)), and also after a stop/continue or a cgroup freeze. The
/// lab and its tests start many processes, and a child's SIGCHLD that arrives while
/// the spawning thread has every signal blocked (glibc's `posix_spawn` does that) is
/// queued and handed to another thread of the process, e.g. one waiting here. So
/// each call gets what is left of the deadline as its timeout, and an interrupted
/// call (or one that timed out a little early) is simply made again.
pub fn read_with_deadline<S, T>(
    sock: &S,
    deadline: Instant,
    mut read: impl FnMut(&S) -> io::Result<T>,
) -> io::Result<T>
where
    S: ReadTimeout + ?Sized,
{
    // Bounded: every pass either returns or waits in the kernel until a signal or
    // the deadline, which ends the loop.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "nothing received before the deadline",
            ));
        }
        sock.set_read_timeout(Some(left))?;
        match read(sock) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            result => return result,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    extern "C" fn on_sigusr1(_: libc::c_int) {}

    /// A no-op SIGUSR1 handler with SA_RESTART, the kind that "should not" interrupt anything.
    fn install_restarting_handler() {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigusr1 as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
    }

    /// Sends SIGUSR1 to `thread` every 2 ms until `enough()` (at most 5000 times).
    fn pester(thread: libc::pthread_t, enough: impl Fn() -> bool) {
        for _ in 0..5000 {
            if enough() {
                return;
            }
            // SAFETY: the thread is alive: the caller joins it only after this returns.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the reading thread never got far enough");
    }

    fn local_pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    #[test]
    fn a_signal_interrupts_a_plain_timed_recv() {
        // The failure read_with_deadline exists for, shown on a plain recv.
        install_restarting_handler();
        let (rx, _tx) = local_pair();
        rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let reader = {
            let done = done.clone();
            std::thread::spawn(move || {
                let r = rx.recv(&mut [0u8; 16]).map_err(|e| e.kind());
                done.store(1, Ordering::SeqCst);
                r
            })
        };
        pester(reader.as_pthread_t(), || done.load(Ordering::SeqCst) == 1);
        assert_eq!(reader.join().unwrap(), Err(io::ErrorKind::Interrupted));
    }

    #[test]
    fn read_with_deadline_survives_signals() {
        install_restarting_handler();
        let (rx, tx) = local_pair();
        let calls = Arc::new(AtomicUsize::new(0));
        let reader = {
            let calls = calls.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                let deadline = Instant::now() + Duration::from_secs(60);
                let n = read_with_deadline(&rx, deadline, |s| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    s.recv(&mut buf)
                });
                n.map(|n| buf[..n].to_vec())
            })
        };
        // Each interrupted recv is made again: wait until that happened twice.
        pester(reader.as_pthread_t(), || calls.load(Ordering::SeqCst) >= 3);
        tx.send(b"hello").unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"hello");
    }

    #[test]
    fn read_with_deadline_times_out_at_the_deadline_not_before() {
        let (rx, _tx) = local_pair();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let e = read_with_deadline(&rx, deadline, |s| s.recv(&mut [0u8; 16])).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() >= deadline);
        // A deadline already passed: no call at all.
        let e = read_with_deadline(&rx, start, |_| -> io::Result<()> {
            panic!("called after the deadline")
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
