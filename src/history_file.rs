//! The history file (`--history-file`), shared by concurrent processes.
//!
//! [`History::load_file`] never fails a dial (a missing, unreadable or
//! corrupt file is an empty history, with a warning for the latter two; so
//! is a file of the format before networks, whose entries cannot be placed
//! on one),
//! and [`History::save_merged`] replaces the file atomically under an
//! advisory lock, applying this process's observations to what the file
//! holds by then (the merge rules are the history's), so concurrent dials lose
//! nothing. The history itself is plain data in [`crate::race::history`];
//! this module is its storage, kept out of the pure engine.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::race::history::History;

/// How long a save waits for another process's save to finish.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting save retries the lock.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Larger files are not read (a full history is far smaller; this also
/// stops `--history-file /dev/zero` from reading forever).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a history could not be saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryFileError {
    /// The lock file (`<path>.lock`) could not be opened or created.
    #[error("cannot open the history lock {}: {source}", path.display())]
    OpenLock {
        /// The lock file.
        path: PathBuf,
        /// The error of the open.
        source: std::io::Error,
    },
    /// Another process held the lock for the whole wait (5 s).
    #[error("the history lock {} is still held by another process after {waited:?}", path.display())]
    LockHeld {
        /// The lock file.
        path: PathBuf,
        /// How long the save waited for it.
        waited: Duration,
    },
    /// `flock` on the lock file failed for another reason than a holder.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error of `flock`.
        source: std::io::Error,
    },
    /// The history could not be encoded as JSON.
    #[error("cannot encode the history: {0}")]
    Encode(#[from] serde_json::Error),
    /// The path names no file (e.g. it ends in `..` or is `/`).
    #[error("history file {}: not a file name", .0.display())]
    NotAFile(PathBuf),
    /// Writing the temporary file or renaming it over the history file
    /// failed (the temporary file is removed).
    #[error("cannot save the history to {}: {source}", path.display())]
    Write {
        /// The history file.
        path: PathBuf,
        /// The error of the write, sync or rename.
        source: std::io::Error,
    },
}

impl History {
    /// Loads a history file. A missing file is an empty history. An
    /// unreadable or corrupt file is an empty history too, with a warning
    /// to print: one bad file must not fail every later dial, and the next
    /// [`save_merged`](History::save_merged) replaces it. Entries dated in
    /// the future are dropped (see [`History::prune`]).
    pub fn load_file(path: &Path) -> (History, Option<String>) {
        let (mut history, warning) = read_history(path);
        history.prune(SystemTime::now());
        history.cap_entries();
        (history, warning)
    }

    /// Saves this history's observations to `path`, safely when other
    /// processes share the file: under an advisory lock (`flock`) on the
    /// sidecar file `<path>.lock`, it re-reads `path` (corrupt counts as
    /// empty), applies the observations made since this history was loaded
    /// or last saved (the newer observation of a path wins, RTT samples
    /// combine), writes the result to a uniquely named temporary file in
    /// the same directory, syncs it and renames it over `path`. Readers
    /// never see half a file; concurrent saves lose nothing. On success
    /// `self` becomes the merged history, with nothing left unsaved.
    pub fn save_merged(&mut self, path: &Path) -> Result<(), HistoryFileError> {
        let _lock = FileLock::acquire(&sidecar(path, "lock"), LOCK_WAIT)?;
        let (on_disk, _corrupt_is_replaced) = read_history(path);
        let merged = self.merged_into(on_disk, SystemTime::now());
        let text = serde_json::to_string_pretty(&merged)?;
        write_atomically(path, text.as_bytes())?;
        *self = merged;
        Ok(())
    }
}

/// Reads and parses a history file; see [`History::load_file`].
fn read_history(path: &Path) -> (History, Option<String>) {
    let empty = |why: String| {
        let warning = format!(
            "history file {}: {why}; starting with an empty history (the next save replaces it)",
            path.display()
        );
        (History::default(), Some(warning))
    };
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|f| {
        use std::io::Read as _;
        f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)
    });
    match read {
        Ok(_) if bytes.len() as u64 > MAX_FILE_BYTES => {
            empty(format!("larger than {MAX_FILE_BYTES} bytes"))
        }
        Ok(_) => match serde_json::from_slice::<History>(&bytes) {
            Ok(history) => (history, None),
            Err(_) if is_version_1(&bytes) => empty(
                "was written by an older siprace (format 1, history not kept per network); \
                 its entries cannot be placed on a network, so they are not used"
                    .into(),
            ),
            Err(e) => empty(format!("not a valid history ({e})")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (History::default(), None),
        Err(e) => empty(format!("cannot be read ({e})")),
    }
}

/// Whether `bytes` are a history file of format 1 (before networks): an
/// object with an `entries` list and no `version`.
fn is_version_1(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Version1 {
        #[allow(dead_code)]
        entries: Vec<serde::de::IgnoredAny>,
        version: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Version1>(bytes).is_ok_and(|v| v.version.is_none())
}

/// `<path>.<suffix>`: a file next to `path`, e.g. `history.json.lock`.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (unique per process and call, created exclusively), synced before it is
/// renamed over `path`; the directory is synced after, where it can be.
/// The new file keeps the permissions of the one it replaces.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HistoryFileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| HistoryFileError::NotAFile(path.to_path_buf()))?;
    let tmp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Best effort: some filesystems cannot sync a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        HistoryFileError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// An exclusive `flock` on a lock file, released when dropped (closing the
/// file releases it, also if the process dies). The lock file itself stays:
/// removing it would let two processes lock two different files.
struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock, retrying for at most `wait` while another process
    /// holds it (a save takes milliseconds; a process stuck holding it must
    /// not stall this one for ever).
    fn acquire(path: &Path, wait: Duration) -> Result<FileLock, HistoryFileError> {
        use std::os::fd::AsRawFd as _;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| HistoryFileError::OpenLock {
                path: path.to_path_buf(),
                source,
            })?;
        let started = Instant::now();
        loop {
            // SAFETY: flock only reads the descriptor, which `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock if started.elapsed() < wait => {
                    std::thread::sleep(LOCK_RETRY)
                }
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    return Err(HistoryFileError::LockHeld {
                        path: path.to_path_buf(),
                        waited: wait,
                    })
                }
                _ => {
                    return Err(HistoryFileError::Lock {
                        path: path.to_path_buf(),
                        source: err,
                    })
                }
            }
        }
    }
}
