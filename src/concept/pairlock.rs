//! One writer at a time for a concept's active pair (`<name>.safetensors`,
//! `<name>-neg.safetensors` and its adapters). Runs that finish together —
//! a sweep's `--jobs` processes, its Slurm tasks on several nodes, a promote
//! from the workbench — each replace the pair; each file's write is atomic,
//! but two writers interleaved would leave the positive of one run and the
//! negative of another (a torn pair, which the word bank refuses). The
//! writers take `.pair.lock` in the concept's folder first: created
//! exclusively (also on network filesystems), removed when done.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::runlock::LockInfo;

pub const PAIR_LOCK_FILE: &str = ".pair.lock";

/// A pair is written in well under this; a lock older than it, from another
/// host, was left by a writer that died.
const STALE_AFTER: Duration = Duration::from_secs(120);
/// How long a writer waits for another before giving up.
const WAIT_AT_MOST: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum PairLockError {
    #[error(
        "{path}: another process ({holder}) has been writing the concept's pair for over \
         {secs} s; if it is gone, delete this file",
        secs = WAIT_AT_MOST.as_secs()
    )]
    Timeout { path: PathBuf, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while this process writes the concept's pair; released when dropped.
#[derive(Debug)]
pub struct PairLock {
    path: PathBuf,
    info: LockInfo,
}

impl PairLock {
    /// Waits for the concept's pair to be free and takes it.
    pub fn acquire(concept_dir: &Path) -> Result<Self, PairLockError> {
        let path = concept_dir.join(PAIR_LOCK_FILE);
        let info = LockInfo::current();
        let text = serde_json::to_string(&info).unwrap_or_default();
        let start = Instant::now();
        loop {
            match create_new(&path, text.as_bytes()) {
                Ok(()) => return Ok(Self { path, info }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(PairLockError::Io { path, source }),
            }
            let held = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<LockInfo>(&t).ok());
            let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let now = SystemTime::now();
            let alive = match &held {
                Some(h) => {
                    h.holder_alive(written, now)
                        && written.is_some_and(|t| {
                            h.host == super::runlock::host_name()
                                || now.duration_since(t).unwrap_or_default() < STALE_AFTER
                        })
                }
                // Being written right now, or garbage: garbage once old.
                None => {
                    written.is_some_and(|t| now.duration_since(t).unwrap_or_default() < STALE_AFTER)
                }
            };
            if !alive {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if start.elapsed() > WAIT_AT_MOST {
                let holder =
                    held.map_or("unknown".into(), |h| format!("pid {} on {}", h.pid, h.host));
                return Err(PairLockError::Timeout { path, holder });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PairLock {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<LockInfo>(&t).ok())
            .is_some_and(|h| h == self.info);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `path` with `bytes`, failing if it exists.
fn create_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_take_turns_and_a_dead_writers_lock_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (dir, order) = (dir.to_path_buf(), order.clone());
                std::thread::spawn(move || {
                    // One process: the lock excludes by file, not by pid.
                    let _lock = PairLock::acquire(&dir).unwrap();
                    order.lock().unwrap().push(("in", i));
                    std::thread::sleep(Duration::from_millis(20));
                    order.lock().unwrap().push(("out", i));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let order = order.lock().unwrap();
        for pair in order.chunks(2) {
            assert_eq!((pair[0].0, pair[1].0), ("in", "out"), "{order:?}");
            assert_eq!(pair[0].1, pair[1].1, "interleaved: {order:?}");
        }
        assert!(!dir.join(PAIR_LOCK_FILE).exists(), "released");

        // A lock of a process that is gone.
        let dead = LockInfo {
            pid: 4_194_000,
            proc_start: None,
            ..LockInfo::current()
        };
        std::fs::write(
            dir.join(PAIR_LOCK_FILE),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let lock = PairLock::acquire(dir).unwrap();
        drop(lock);
        assert!(!dir.join(PAIR_LOCK_FILE).exists());
    }
}
