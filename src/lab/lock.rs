//! Who is using a lab: an advisory lock (`flock`) on
//! `/run/siprace-lab/<name>.lock`, held for as long as a `siprace bench`
//! (or any other user) runs its dials in the lab, so that a second run with
//! the same lab name cannot tear down the lab under the first.
//!
//! The lock file lives beside the lab's state directory, not inside it:
//! tearing a lab down removes its state directory, and the lock must
//! outlive that. The kernel releases a `flock` when its holder dies, so a
//! lock left by a killed process is simply taken over; the PID written in
//! the file is only there to name the holder in the refusal.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::LabError;
use super::names::{check_name, STATE_ROOT};

/// The lock file of lab `name`.
pub fn lock_path(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("{name}.lock"))
}

/// A held lab lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct LabLock {
    _file: File,
    /// The holder recorded before this one, if that process is gone
    /// (its lock was released when it died: this lock took over).
    pub took_over_from: Option<u32>,
}

impl LabLock {
    /// Takes lab `name`'s lock for this process, recording `what` (e.g.
    /// "siprace bench") as the user. Never waits: a lock held by a live
    /// process is [`LabError::InUse`], naming it.
    pub fn acquire(name: &str, what: &str) -> Result<LabLock, LabError> {
        let (mut file, previous) = try_lock(name)?;
        let took_over_from = previous.pid.filter(|pid| *pid != std::process::id());
        let record = format!("{}\n{what}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(LabError::io(format!(
                "writing {}",
                lock_path(name).display()
            )))?;
        Ok(LabLock {
            _file: file,
            took_over_from,
        })
    }

    /// Who holds lab `name`'s lock right now (a description for messages),
    /// or `None` when nobody does. The check takes the lock for a moment.
    pub fn holder(name: &str) -> Result<Option<String>, LabError> {
        check_name(name)?;
        if !lock_path(name).exists() {
            return Ok(None); // never locked: no file is made just to check
        }
        match try_lock(name) {
            Ok(_free) => Ok(None),
            Err(LabError::InUse { holder, .. }) => Ok(Some(holder)),
            Err(e) => Err(e),
        }
    }
}

/// Locks lab `name`'s lock file; the file (holding the lock until it is
/// closed) and what it said about the previous holder.
fn try_lock(name: &str) -> Result<(File, Holder), LabError> {
    check_name(name)?;
    if !super::sys::is_root() {
        return Err(LabError::NotRoot);
    }
    let path = lock_path(name);
    let mut file = open_lock_file(&path)?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Err(LabError::InUse {
                name: name.to_string(),
                holder: describe_holder(&read_holder(&mut file)),
            });
        }
        return Err(LabError::Io {
            context: format!("locking {}", path.display()),
            source: err,
        });
    }
    let previous = read_holder(&mut file);
    Ok((file, previous))
}

/// Opens (creating it and `STATE_ROOT` if needed) the lock file. Another
/// lab's teardown may remove an empty `STATE_ROOT` between the two steps,
/// so that is tried a few times.
fn open_lock_file(path: &Path) -> Result<File, LabError> {
    let mut last = None;
    for _ in 0..3 {
        std::fs::create_dir_all(STATE_ROOT)
            .map_err(LabError::io(format!("creating {STATE_ROOT}")))?;
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(LabError::io(format!("opening {}", path.display()))(e)),
        }
    }
    Err(LabError::io(format!("opening {}", path.display()))(
        last.unwrap_or_else(|| std::io::Error::other("vanished")),
    ))
}

/// What a lock file says about its holder.
struct Holder {
    pid: Option<u32>,
    text: Option<String>,
}

fn read_holder(file: &mut File) -> Holder {
    let mut content = String::new();
    let _ = file
        .rewind()
        .and_then(|()| file.take(4096).read_to_string(&mut content));
    let mut lines = content.lines();
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    let text = lines
        .next()
        .map(|l| crate::report::terminal_safe(l).into_owned());
    Holder { pid, text }
}

fn describe_holder(h: &Holder) -> String {
    match (h.pid, &h.text) {
        (Some(pid), Some(what)) => format!("{what} (PID {pid})"),
        (Some(pid), None) => format!("PID {pid}"),
        _ => "another process (PID not recorded yet)".to_string(),
    }
}
