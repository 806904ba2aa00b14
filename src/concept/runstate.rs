//! What became of a run, derived from the run's own files — never from what a
//! viewer last saw — so a run whose process was stopped, killed or lost with
//! an SSH session shows as such, and only a live process shows as running.
//!
//! - `lock` (see [`super::runlock`]) with a live holder: **running**, or
//!   **paused** while `paused` exists.
//! - `end.json`, written by the trainer when a session ends: **finished**,
//!   **stopped** (before its step total: Ctrl-C, the workbench's stop or quit),
//!   **diverged** (a non-finite loss, gradient or vector), **failed** (any other
//!   error; the message is kept).
//! - Neither, or a dead holder's lock: **crashed** — except for runs trained
//!   before these files existed, which read as finished (their pair and every
//!   step are there) or stopped (a pair, fewer steps).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::rundir::RunDir;
use super::runlock::read_lock;
use crate::fsutil::write_atomic;

pub const END_FILE: &str = "end.json";

/// How a training session ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    Finished,
    Stopped,
    Diverged,
    Failed,
}

/// `end.json`: written by the trainer as a session ends, removed when the run
/// is resumed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndRecord {
    pub outcome: EndKind,
    /// The last step done.
    pub step: u64,
    pub total_steps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Seconds since the Unix epoch.
    pub ended: u64,
    /// The error of a diverged or failed session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A run's status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A live process trains it.
    Running,
    /// A live process holds it paused (the workbench).
    Paused,
    /// Interrupted before its step total; resumable from its last checkpoint.
    Stopped,
    Finished,
    /// Stopped by a non-finite loss, gradient or vector.
    Diverged,
    /// Ended by another error.
    Failed,
    /// Its process is gone without saying how it ended (killed, power cut).
    Crashed,
}

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Running,
        RunState::Paused,
        RunState::Stopped,
        RunState::Finished,
        RunState::Diverged,
        RunState::Failed,
        RunState::Crashed,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopped => "stopped",
            RunState::Finished => "finished",
            RunState::Diverged => "diverged",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
        }
    }

    /// A process holds the run: it may still change.
    pub fn is_live(&self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }

    /// Training it again continues it (from its last checkpoint, if it has one).
    pub fn is_resumable(&self) -> bool {
        matches!(self, RunState::Stopped | RunState::Crashed)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl From<EndKind> for RunState {
    fn from(k: EndKind) -> Self {
        match k {
            EndKind::Finished => RunState::Finished,
            EndKind::Stopped => RunState::Stopped,
            EndKind::Diverged => RunState::Diverged,
            EndKind::Failed => RunState::Failed,
        }
    }
}

impl RunDir {
    pub fn end_path(&self) -> PathBuf {
        self.path().join(END_FILE)
    }

    /// `end.json`, if the run has a readable one.
    pub fn read_end(&self) -> Option<EndRecord> {
        serde_json::from_str(&std::fs::read_to_string(self.end_path()).ok()?).ok()
    }

    pub fn write_end(&self, end: &EndRecord) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(end).map_err(std::io::Error::other)?;
        write_atomic(&self.end_path(), format!("{text}\n").as_bytes())
    }

    /// Forgets how the last session ended (a resumed run is live again).
    pub fn clear_end(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.end_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the run folder holds a finished (or interrupted) pair.
    pub fn has_pair(&self) -> bool {
        std::fs::read_dir(self.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                !name.starts_with('.') && name.ends_with(".safetensors")
            })
    }

    /// The run's status, from its files (see the module doc).
    pub fn state(&self) -> RunState {
        if let Some(lock) = read_lock(&self.lock_path()) {
            if lock.holder_alive(self.heartbeat(), SystemTime::now()) {
                return if self.paused_path().exists() {
                    RunState::Paused
                } else {
                    RunState::Running
                };
            }
        }
        if let Some(end) = self.read_end() {
            return end.outcome.into();
        }
        if self.lock_path().exists() {
            // Its process died without ending the session.
            return RunState::Crashed;
        }
        // A run from before lock and end.json.
        let step = self.last_metrics().map_or(0, |m| m.step);
        let total = self.total_steps();
        match self.has_pair() {
            true if total > 0 && step >= total => RunState::Finished,
            true => RunState::Stopped,
            false => RunState::Crashed,
        }
    }
}

/// What the concept list shows for a concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConceptStatus {
    /// No run and no pair.
    New,
    /// Its latest run finished and the concept has its active pair.
    Trained,
    /// The state of its latest run, when that is not a finished one.
    Latest(RunState),
}

impl ConceptStatus {
    pub fn label(&self) -> &'static str {
        match self {
            ConceptStatus::New => "new",
            ConceptStatus::Trained => "trained",
            ConceptStatus::Latest(s) => s.label(),
        }
    }
}

/// The status of concept `name` in `concept_dir`: its latest run's, or
/// `new`/`trained` by whether it has a pair (an imported one has no run).
pub fn concept_status(concept_dir: &Path, name: &str) -> ConceptStatus {
    let active = concept_dir.join(format!("{name}.safetensors")).is_file();
    match RunDir::latest(concept_dir).map(|r| r.state()) {
        None if active => ConceptStatus::Trained,
        None => ConceptStatus::New,
        Some(RunState::Finished) if active => ConceptStatus::Trained,
        Some(s) => ConceptStatus::Latest(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concept::runlock::{host_name, LockInfo, RunLock};
    use crate::concept::StepMetrics;

    fn metrics(step: u64) -> String {
        let m = StepMetrics {
            step,
            loss: 0.5,
            mse: 0.5,
            rec: None,
            lr: 1e-3,
            lr_neg: 1e-3,
            grad_norm_pos: 1.0,
            grad_norm_neg: 1.0,
            it_s: 10.0,
        };
        format!("{}\n", serde_json::to_string(&m).unwrap())
    }

    /// A run folder of concept `cat` with `steps` of `total` done.
    fn fake_run(concept: &Path, id: &str, steps: u64, total: u64) -> RunDir {
        let run = RunDir::at(concept, id);
        std::fs::create_dir_all(run.checkpoints_dir()).unwrap();
        std::fs::write(run.config_path(), format!("[train]\nsteps = {total}\n")).unwrap();
        std::fs::write(
            run.metrics_path(),
            (1..=steps).map(metrics).collect::<String>(),
        )
        .unwrap();
        run
    }

    fn end(outcome: EndKind, step: u64, total: u64) -> EndRecord {
        EndRecord {
            outcome,
            step,
            total_steps: total,
            loss: Some(0.5),
            ended: 1,
            message: None,
        }
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn states_from_fake_run_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let concept = tmp.path().join("cat");

        let finished = fake_run(&concept, "a-finished", 40, 40);
        finished.write_end(&end(EndKind::Finished, 40, 40)).unwrap();
        assert_eq!(finished.state(), RunState::Finished);

        // The workbench's quit at 226/400: stopped, not live, resumable.
        let stopped = fake_run(&concept, "b-stopped", 226, 400);
        stopped.write_end(&end(EndKind::Stopped, 226, 400)).unwrap();
        assert_eq!(stopped.state(), RunState::Stopped);
        assert!(!stopped.state().is_live() && stopped.state().is_resumable());

        let diverged = fake_run(&concept, "c-diverged", 7, 40);
        diverged
            .write_end(&EndRecord {
                message: Some("step 8: training diverged".into()),
                ..end(EndKind::Diverged, 7, 40)
            })
            .unwrap();
        assert_eq!(diverged.state(), RunState::Diverged);

        // A lock whose process is gone, no end record: crashed, never running.
        let dead = fake_run(&concept, "d-dead", 12, 40);
        let lock = LockInfo {
            pid: dead_pid(),
            ..LockInfo::current()
        };
        std::fs::write(dead.lock_path(), serde_json::to_string(&lock).unwrap()).unwrap();
        assert_eq!(dead.state(), RunState::Crashed);

        // Held from another host: live while the heartbeat is fresh.
        let remote = fake_run(&concept, "e-remote", 12, 40);
        let lock = LockInfo {
            host: format!("{}-node7", host_name()),
            ..LockInfo::current()
        };
        std::fs::write(remote.lock_path(), serde_json::to_string(&lock).unwrap()).unwrap();
        assert_eq!(remote.state(), RunState::Running);
        let old = SystemTime::now() - crate::concept::runlock::STALE_AFTER * 2;
        for p in [remote.lock_path(), remote.metrics_path()] {
            std::fs::File::options()
                .append(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        assert_eq!(remote.state(), RunState::Crashed);

        // Held by this (live) process: running, then paused, and an old end
        // record does not matter while it is live.
        let live = fake_run(&concept, "f-live", 3, 40);
        live.write_end(&end(EndKind::Stopped, 3, 40)).unwrap();
        let held = RunLock::acquire(&live).unwrap();
        assert_eq!(live.state(), RunState::Running);
        live.set_paused(true).unwrap();
        assert_eq!(live.state(), RunState::Paused);
        drop(held);
        assert_eq!(live.state(), RunState::Stopped);

        // Runs from before these files: read off the pair and the steps.
        let old_done = fake_run(&concept, "g-old", 40, 40);
        std::fs::write(old_done.path().join("cat.safetensors"), b"x").unwrap();
        assert_eq!(old_done.state(), RunState::Finished);
        let old_stopped = fake_run(&concept, "h-old", 20, 40);
        std::fs::write(old_stopped.path().join("cat.safetensors"), b"x").unwrap();
        assert_eq!(old_stopped.state(), RunState::Stopped);
        let old_killed = fake_run(&concept, "i-old", 20, 40);
        assert_eq!(old_killed.state(), RunState::Crashed);
    }

    #[test]
    fn concept_status_follows_the_latest_run() {
        let tmp = tempfile::tempdir().unwrap();
        let concept = tmp.path().join("cat");
        std::fs::create_dir_all(&concept).unwrap();
        assert_eq!(concept_status(&concept, "cat"), ConceptStatus::New);
        // A run stopped before it finished: not "new".
        let run = fake_run(&concept, "20261201-031500", 226, 400);
        run.write_end(&end(EndKind::Stopped, 226, 400)).unwrap();
        assert_eq!(
            concept_status(&concept, "cat"),
            ConceptStatus::Latest(RunState::Stopped)
        );
        assert_eq!(concept_status(&concept, "cat").label(), "stopped");
        run.write_end(&end(EndKind::Finished, 400, 400)).unwrap();
        assert_eq!(
            concept_status(&concept, "cat"),
            ConceptStatus::Latest(RunState::Finished)
        );
        std::fs::write(concept.join("cat.safetensors"), b"x").unwrap();
        assert_eq!(concept_status(&concept, "cat"), ConceptStatus::Trained);
    }
}
