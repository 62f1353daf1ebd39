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
//!
//! Releasing the lock removes the file (no empty lock files pile up in
//! `/run/siprace-lab`), while still holding the lock and only if the path
//! still names the file that was locked. That opens a race every
//! remove-on-release lock has: a second process may have opened the file
//! just before it was removed and then lock the removed file, which nobody
//! else can see. So a locker checks, once it holds the lock, that the path
//! still names the file it locked, and starts again if not.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::LabError;
use super::names::{check_name, STATE_ROOT};

/// The lock file of lab `name`.
pub fn lock_path(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("{name}.lock"))
}

/// A held lab lock; dropping it releases it and removes its file (the
/// process dying releases it too, leaving the file for the next holder).
#[derive(Debug)]
pub struct LabLock {
    _locked: LockedFile,
    /// The holder recorded before this one, if that process is gone
    /// (its lock was released when it died: this lock took over).
    pub took_over_from: Option<u32>,
}

impl LabLock {
    /// Takes lab `name`'s lock for this process, recording `what` (e.g.
    /// "siprace bench") as the user. Never waits: a lock held by a live
    /// process is [`LabError::InUse`], naming it.
    pub fn acquire(name: &str, what: &str) -> Result<LabLock, LabError> {
        let (mut locked, previous) = try_lock(name)?;
        let file = &mut locked.file;
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
            _locked: locked,
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
            Ok((mut free, _)) => {
                free.remove_on_drop = false;
                Ok(None)
            }
            Err(LabError::InUse { holder, .. }) => Ok(Some(holder)),
            Err(e) => Err(e),
        }
    }
}

/// A lock file this process holds the `flock` of. Dropping it removes the
/// file, if the path still names it, then closes it (releasing the lock).
#[derive(Debug)]
struct LockedFile {
    file: File,
    path: PathBuf,
    /// False for a lock taken only to look ([`LabLock::holder`]): what the
    /// file says of a dead holder stays for the next real locker.
    remove_on_drop: bool,
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        // Still holding the lock: nobody else can be between their check
        // and their use of this file, so removing it cannot pull it from
        // under a holder. A path that names another file (or nothing) is
        // left alone.
        if self.remove_on_drop && names_file(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` names the very file `file` has open (same device and
/// inode), rather than nothing or a file that replaced it.
fn names_file(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
        _ => false,
    }
}

/// Locks lab `name`'s lock file; the file (holding the lock until it is
/// dropped) and what it said about the previous holder.
fn try_lock(name: &str) -> Result<(LockedFile, Holder), LabError> {
    check_name(name)?;
    if !super::sys::is_root() {
        return Err(LabError::NotRoot);
    }
    lock_file(name, &lock_path(name), &mut || {})
}

/// How often a locker starts again because the file it locked was removed
/// by its previous holder in the meantime (each time, another process
/// released the lock just then: a handful of retries is plenty).
const LOCK_RETRIES: usize = 8;

/// Locks the lock file at `path` (of lab `name`, for messages) without
/// waiting. `after_open` runs between opening and locking (tests use it to
/// release a previous holder exactly there).
fn lock_file(
    name: &str,
    path: &Path,
    after_open: &mut dyn FnMut(),
) -> Result<(LockedFile, Holder), LabError> {
    for _ in 0..LOCK_RETRIES {
        let mut file = open_lock_file(path)?;
        after_open();
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
        if !names_file(path, &file) {
            // The previous holder removed this file as it released it: the
            // lock is on a file nobody else will open. Start again.
            continue;
        }
        let previous = read_holder(&mut file);
        let locked = LockedFile {
            file,
            path: path.to_path_buf(),
            remove_on_drop: true,
        };
        return Ok((locked, previous));
    }
    Err(LabError::Io {
        context: format!("locking {}", path.display()),
        source: std::io::Error::other(format!(
            "the lock file was replaced {LOCK_RETRIES} times in a row"
        )),
    })
}

/// Opens (creating it and `STATE_ROOT` if needed) the lock file. Another
/// lab's teardown may remove an empty `STATE_ROOT` between the two steps,
/// so that is tried a few times.
fn open_lock_file(path: &Path) -> Result<File, LabError> {
    let mut last = None;
    let dir = path.parent().unwrap_or(Path::new(STATE_ROOT));
    for _ in 0..3 {
        std::fs::create_dir_all(dir)
            .map_err(LabError::io(format!("creating {}", dir.display())))?;
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
#[derive(Debug)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of this test's own under the temporary directory.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("siprace-lock-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn release_removes_the_file_and_the_next_locker_makes_a_new_one() {
        let dir = scratch("release");
        let path = dir.join("lab.lock");
        let (first, _) = lock_file("lab", &path, &mut || {}).unwrap();
        assert!(path.exists());
        assert!(matches!(
            lock_file("lab", &path, &mut || {}),
            Err(LabError::InUse { .. })
        ));
        drop(first);
        assert!(!path.exists(), "an empty lock file was left behind");
        let (second, _) = lock_file("lab", &path, &mut || {}).unwrap();
        assert!(path.exists());
        drop(second);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_locker_is_not_fooled_by_the_removal_race() {
        // B opens the file while A holds it; A releases (removing the file)
        // before B locks. B's flock then succeeds on the removed file: B
        // must notice and lock the file the path names now, so that C,
        // coming next, is refused instead of holding the lab too.
        let dir = scratch("race");
        let path = dir.join("lab.lock");
        let (a, _) = lock_file("lab", &path, &mut || {}).unwrap();
        let mut a = Some(a);
        let mut opened = 0;
        let (b, _) = lock_file("lab", &path, &mut || {
            opened += 1;
            drop(a.take());
        })
        .unwrap();
        assert_eq!(opened, 2, "B did not start again after the removal");
        assert!(names_file(&path, &b.file), "B holds a removed file");
        match lock_file("lab", &path, &mut || {}) {
            Err(LabError::InUse { .. }) => {}
            other => panic!("C took a lock B holds: {other:?}"),
        }
        drop(b);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_file_replaced_under_a_holder_is_not_removed_on_release() {
        let dir = scratch("replaced");
        let path = dir.join("lab.lock");
        let (a, _) = lock_file("lab", &path, &mut || {}).unwrap();
        // Someone replaced the file (another inode at the same path).
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "other\n").unwrap();
        drop(a);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other\n");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}
