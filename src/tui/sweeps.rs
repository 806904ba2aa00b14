//! Sweeps from the workbench: a sweep file runs in a detached
//! `dreamartist sweep FILE` process (like "keep training headless": the
//! workbench can quit and the sweep goes on), and each sweep of a concept is
//! summed up from its folder (`concepts/<c>/sweeps/<name>/`: the copy of the
//! sweep file and one record per started run, each run's status from its own
//! files) for the runs browser's queue lines.

use std::path::{Path, PathBuf};

use crate::slurm::{self, SlurmDir};
use crate::sweep::report::gather;
use crate::sweep::spec::SweepPlan;
use crate::sweep::state::SweepDir;
use crate::workspace::Workspace;

/// Why a sweep could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SweepStartError {
    #[error("{}: no such sweep file (sweeps/*.toml in the workspace, or a path)", .0.display())]
    Missing(PathBuf),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Sweep(#[from] crate::sweep::SweepError),
}

/// A typed sweep path: as given when it exists, else relative to the
/// workspace (`sweeps/grid.toml`), else `sweeps/<name>.toml`.
pub fn resolve(ws: &Workspace, typed: &str) -> Result<PathBuf, SweepStartError> {
    let typed = typed.trim();
    let p = PathBuf::from(typed);
    let candidates = [
        p.clone(),
        ws.root.join(&p),
        ws.root.join("sweeps").join(&p),
        ws.root.join("sweeps").join(format!("{typed}.toml")),
    ];
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or(SweepStartError::Missing(p))
}

/// Checks the sweep file (so a bad one is reported here, not in a log), then
/// starts `dreamartist sweep FILE -w WS` in its own session, its output in
/// the sweep's folder (`sweep.log`). Returns the plan's concept, its number of
/// runs and the log's path.
pub fn spawn(ws: &Workspace, file: &Path) -> Result<(String, usize, PathBuf), SweepStartError> {
    let plan = SweepPlan::load(file, ws)?;
    let dir = SweepDir::of(ws, &plan);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| SweepStartError::Io {
            path,
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir.path()).map_err(io(dir.path()))?;
    let log_path = dir.path().join("sweep.log");
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let exe = std::env::current_exe().map_err(io(file))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("sweep")
        .arg(file)
        .arg("-w")
        .arg(&ws.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io(&log_path))?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own session: quitting the workbench or closing the terminal
        // does not stop the sweep.
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    cmd.spawn().map_err(io(file))?;
    Ok((plan.concept.name.clone(), plan.runs.len(), log_path))
}

/// A run's task on Slurm, as the runs browser shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmCell {
    /// The run folder the task trains in.
    pub run: String,
    /// The array job and index (`scancel JOB_INDEX`).
    pub job: String,
    pub index: usize,
    /// `RUNNING`, `PENDING (Priority)`, `ended`, …
    pub label: String,
    /// Still in the queue (so it can be cancelled).
    pub queued: bool,
}

/// How long a queue answer is reused by the browser's refreshes.
const QUEUE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// The concept's sweeps, those with queued tasks first: one line each (`sweep grid (Slurm job 12: 2
/// RUNNING, 1 PENDING): 1 finished, 2 running, 1 pending`; a sweep whose file
/// no longer loads says why), and the Slurm task of each run that has one.
pub fn concept_sweeps(ws: &Workspace, concept_dir: &Path) -> (Vec<String>, Vec<SlurmCell>) {
    // (has queued tasks, line): the browser shows a few lines, live sweeps first.
    let (mut lines, mut cells): (Vec<(bool, String)>, _) = (Vec::new(), Vec::new());
    for dir in SweepDir::of_concept(concept_dir) {
        let name = dir.name();
        let plan = match dir.load_plan(ws) {
            Ok(plan) => plan,
            Err(e) => {
                lines.push((false, format!("sweep {name}: {e}")));
                continue;
            }
        };
        // Never submitted: no queue to ask. (A damaged record goes on to the
        // status, which says so.)
        if matches!(SlurmDir::of(dir.path()).job_ids(), Ok(jobs) if jobs.is_empty()) {
            lines.push((
                false,
                format!("sweep {name}: {}", gather(&plan, &dir).counts()),
            ));
            continue;
        }
        let status = slurm::sweep_status_within(&plan, &dir, QUEUE_MAX_AGE);
        let mut queue: Vec<(String, usize)> = Vec::new();
        for row in status.rows.iter().filter(|r| r.queued()) {
            let state = row
                .slurm
                .as_ref()
                .map_or("?", |t| t.state.as_str())
                .to_string();
            match queue.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => queue.push((state, 1)),
            }
        }
        let queue = if queue.is_empty() {
            "nothing queued".to_string()
        } else {
            queue
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let problem = status
            .slurm_error
            .as_ref()
            .map_or(String::new(), |e| format!(" · slurm: {e}"));
        lines.push((
            status.active() > 0,
            format!(
                "sweep {name} (Slurm job {}: {queue}): {}{problem}",
                status.jobs.last().map_or("?", String::as_str),
                status.counts
            ),
        ));
        for row in status.rows {
            if let (Some(run), Some(job)) = (&row.run, &row.job) {
                cells.push(SlurmCell {
                    run: run.clone(),
                    job: job.clone(),
                    index: row.index,
                    label: row.slurm_label(),
                    queued: row.queued(),
                });
            }
        }
    }
    lines.sort_by_key(|(live, _)| !live);
    (lines.into_iter().map(|(_, l)| l).collect(), cells)
}
