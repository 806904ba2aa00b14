//! Which process is training a run: the run folder's `lock` file.
//!
//! The trainer takes the lock when a session starts and removes it when the
//! session ends, however it ends short of a hard kill. A lock left behind by a
//! dead process must not make the run look live, so a reader checks its
//! holder: on this host, that its pid still runs *and* is the same process
//! (its start time, on Linux, so a reused pid does not count); on another
//! host (a cluster node sharing the workspace), that the run's heartbeat — the
//! newest of `metrics.jsonl` (appended every step), `lock` and `paused` — is
//! younger than [`STALE_AFTER`]. Under Slurm, a lock taken by an *earlier
//! attempt* of the same job (same `SLURM_JOB_ID`, lower `SLURM_RESTART_COUNT`:
//! a task preempted or requeued after a hard kill, maybe on another node) is
//! dead at once: Slurm never runs two attempts of one job together, so the
//! requeued task need not wait out the heartbeat. Processes of the same
//! attempt (job steps, `--jobs` children) share the job id and are told apart
//! the usual way.
//!
//! `paused` exists while the workbench holds a run paused (the engine writes
//! it; the trainer removes it when the session ends).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::rundir::{unix_now, RunDir};
pub use crate::fsutil::host_name;
use crate::fsutil::{process_alive, temp_name, write_atomic};

pub const LOCK_FILE: &str = "lock";
pub const PAUSED_FILE: &str = "paused";
/// A run held from another host counts as dead once its heartbeat is older
/// than this. Generous: one step of a large model on a CPU takes minutes.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// The contents of `lock`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    /// When the session started, seconds since the Unix epoch.
    pub started: u64,
    /// The process's start time in clock ticks since boot (Linux), which tells
    /// a reused pid from the process that took the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start: Option<u64>,
    /// The Slurm job the holder ran in (`SLURM_JOB_ID`; each array task has
    /// its own) and which attempt of it (`SLURM_RESTART_COUNT`, 0 at first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<SlurmAttempt>,
}

/// One attempt of one Slurm job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlurmAttempt {
    pub job: String,
    pub restart: u32,
}

/// This process's Slurm job and attempt, if it runs in one.
fn slurm_attempt() -> Option<SlurmAttempt> {
    let job = std::env::var("SLURM_JOB_ID")
        .ok()
        .filter(|s| !s.is_empty())?;
    let restart = std::env::var("SLURM_RESTART_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some(SlurmAttempt { job, restart })
}

impl LockInfo {
    /// This process, now.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            host: host_name(),
            started: unix_now(),
            proc_start: process_start(pid),
            slurm_job: slurm_attempt(),
        }
    }

    /// Whether the holder still runs: see the module doc. `heartbeat` is the
    /// run's newest heartbeat file time, for a holder on another host.
    pub fn holder_alive(&self, heartbeat: Option<SystemTime>, now: SystemTime) -> bool {
        self.holder_alive_in(heartbeat, now, slurm_attempt().as_ref())
    }

    /// [`Self::holder_alive`] asked from Slurm attempt `mine` (if any).
    fn holder_alive_in(
        &self,
        heartbeat: Option<SystemTime>,
        now: SystemTime,
        mine: Option<&SlurmAttempt>,
    ) -> bool {
        if let (Some(held), Some(mine)) = (&self.slurm_job, mine) {
            if held.job == mine.job && held.restart < mine.restart {
                // An earlier attempt of this very job: Slurm has ended it.
                return false;
            }
        }
        if self.host == host_name() {
            if !process_alive(self.pid) || is_zombie(self.pid) {
                return false;
            }
            return match (self.proc_start, process_start(self.pid)) {
                (Some(a), Some(b)) => a == b,
                // Nothing more to tell by: the pid runs.
                _ => true,
            };
        }
        heartbeat.is_some_and(|t| now.duration_since(t).unwrap_or_default() < STALE_AFTER)
    }
}

/// Another live process trains the run.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error(
        "run `{run}` is being trained by process {pid} on {host} (started {started}); wait for it, \
         or stop it first. If that process is gone, delete {lock}"
    )]
    Busy {
        run: String,
        pid: u32,
        host: String,
        started: String,
        lock: PathBuf,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock of a run this process trains; removed when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    paused: PathBuf,
    info: LockInfo,
}

impl RunLock {
    /// Takes the lock of `run`, replacing one left by a dead process.
    ///
    /// The lock is written whole to a temporary file and hard-linked into
    /// place, which fails if a lock exists: two processes never both hold it.
    /// (Two that replace the same *dead* lock at the same moment are not
    /// told apart.)
    pub fn acquire(run: &RunDir) -> Result<Self, RunLockError> {
        let path = run.lock_path();
        let info = LockInfo::current();
        let text = serde_json::to_string(&info).map_err(|e| RunLockError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let tmp = temp_name(&path);
        write_atomic(&tmp, text.as_bytes()).map_err(io(&tmp))?;
        let result = (|| {
            for _ in 0..2 {
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if let Some(held) = read_lock(&path) {
                            if held.holder_alive(run.heartbeat(), SystemTime::now()) {
                                return Err(RunLockError::Busy {
                                    run: run.id().to_string(),
                                    pid: held.pid,
                                    host: held.host,
                                    started: super::rundir::format_utc(held.started),
                                    lock: path.clone(),
                                });
                            }
                        }
                        // A dead holder's (or an unreadable) lock.
                        match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io(&path)(e)),
                        }
                    }
                    // A file system without hard links: no exclusion, but a lock.
                    Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                        return std::fs::rename(&tmp, &path).map_err(io(&path));
                    }
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            Err(io(&path)(std::io::Error::other(
                "another process keeps taking this run's lock",
            )))
        })();
        let _ = std::fs::remove_file(&tmp);
        result?;
        // A mark left by a session that died paused does not describe this one.
        let paused = run.paused_path();
        let _ = std::fs::remove_file(&paused);
        Ok(Self { path, paused, info })
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }
}

impl Drop for RunLock {
    /// Removes the lock (if it is still ours) and the paused marker.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.paused);
        if read_lock(&self.path).as_ref() == Some(&self.info) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunLockError {
    let path = path.to_path_buf();
    move |source| RunLockError::Io { path, source }
}

/// The lock of a run, if it has a readable one.
pub fn read_lock(path: &Path) -> Option<LockInfo> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

impl RunDir {
    pub fn lock_path(&self) -> PathBuf {
        self.path().join(LOCK_FILE)
    }

    pub fn paused_path(&self) -> PathBuf {
        self.path().join(PAUSED_FILE)
    }

    /// Marks the run paused (or running again); the workbench's engine calls
    /// this when it pauses the run it trains.
    pub fn set_paused(&self, paused: bool) -> std::io::Result<()> {
        let path = self.paused_path();
        if paused {
            write_atomic(&path, unix_now().to_string().as_bytes())
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }

    /// The newest of the files a live trainer touches: `metrics.jsonl` (every
    /// step), `lock` (start) and `paused`.
    pub fn heartbeat(&self) -> Option<SystemTime> {
        [self.metrics_path(), self.lock_path(), self.paused_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }
}

/// Fields 3 onwards of `/proc/<pid>/stat` (Linux); `None` elsewhere.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); `None` where that cannot be read.
pub fn process_start(pid: u32) -> Option<u64> {
    proc_stat(pid)?.get(19)?.parse().ok()
}

/// A killed process its parent has not reaped yet: it answers signal 0 but
/// runs no more (`Z`, or `X` while it goes).
fn is_zombie(pid: u32) -> bool {
    proc_stat(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s == "Z" || s == "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(tmp: &Path) -> RunDir {
        let run = RunDir::at(&tmp.join("cat"), "r1");
        std::fs::create_dir_all(run.path()).unwrap();
        run
    }

    /// The pid of a process that has ended.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn one_holder_at_a_time_and_a_dead_holder_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let lock = RunLock::acquire(&run).unwrap();
        assert_eq!(read_lock(&run.lock_path()).as_ref(), Some(lock.info()));
        // This process is alive: a second take is refused, naming the holder.
        let err = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        run.set_paused(true).unwrap();
        drop(lock);
        assert!(!run.lock_path().exists() && !run.paused_path().exists());
        // A paused mark left behind by a dead session goes with the next lock.
        run.set_paused(true).unwrap();
        let lock = RunLock::acquire(&run).unwrap();
        assert!(!run.paused_path().exists());
        drop(lock);

        // A killed process not yet reaped by its parent is not alive either.
        #[cfg(target_os = "linux")]
        {
            let mut child = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            let zombie = LockInfo {
                pid: child.id(),
                host: host_name(),
                started: 0,
                proc_start: process_start(child.id()),
                slurm_job: None,
            };
            assert!(zombie.holder_alive(None, SystemTime::now()));
            child.kill().unwrap();
            // Not reaped yet: wait for the kernel to show it dead (nothing timed).
            while !is_zombie(child.id()) {
                std::thread::yield_now();
            }
            assert!(!zombie.holder_alive(None, SystemTime::now()));
            child.wait().unwrap();
        }

        // A lock left by a dead process does not block.
        let stale = LockInfo {
            pid: dead_pid(),
            ..LockInfo::current()
        };
        std::fs::write(run.lock_path(), serde_json::to_string(&stale).unwrap()).unwrap();
        assert!(!stale.holder_alive(run.heartbeat(), SystemTime::now()));
        let lock = RunLock::acquire(&run).unwrap();
        assert_eq!(lock.info().pid, std::process::id());
    }

    #[test]
    fn liveness_on_this_host_and_elsewhere() {
        let now = SystemTime::now();
        let me = LockInfo::current();
        assert!(me.holder_alive(None, now));
        // Same pid, another process start: a reused pid.
        if let Some(s) = me.proc_start {
            let reused = LockInfo {
                proc_start: Some(s + 1),
                ..me.clone()
            };
            assert!(!reused.holder_alive(None, now));
        }
        let remote = LockInfo {
            host: format!("{}-elsewhere", host_name()),
            ..me
        };

        assert!(remote.holder_alive(Some(now - Duration::from_secs(60)), now));
        assert!(!remote.holder_alive(Some(now - STALE_AFTER * 2), now));
        assert!(!remote.holder_alive(None, now));

        // A requeued Slurm task (same job id) on another node: the earlier
        // attempt's lock is dead however fresh its heartbeat; another job's is not.
        let attempt = |job: &str, restart| SlurmAttempt {
            job: job.into(),
            restart,
        };
        let first = LockInfo {
            slurm_job: Some(attempt("4242", 0)),
            ..remote
        };
        let fresh = Some(now - Duration::from_secs(5));
        assert!(!first.holder_alive_in(fresh, now, Some(&attempt("4242", 1))));
        // The same attempt (a job step, a --jobs child) or another job: alive.
        assert!(first.holder_alive_in(fresh, now, Some(&attempt("4242", 0))));
        assert!(first.holder_alive_in(fresh, now, Some(&attempt("4243", 1))));
        assert!(first.holder_alive_in(fresh, now, None));
    }
}
