//! Sweeps and trainings on a Slurm cluster. We do not schedule anything
//! ourselves: a sweep becomes one sbatch **job array** (one task per planned
//! run, [`script`]), each task the same headless `sweep FILE --only INDEX` a
//! local sweep runs, over a workspace on the cluster's shared filesystem.
//! Preemption is normal there, so every task checkpoints on SIGTERM and the
//! requeued task resumes bit-exactly (the sweep folder's records say which
//! run folder each index trains in; [`crate::sweep::SweepDir`]).
//!
//! - [`script`]: the sbatch script (text only; snapshot-tested);
//! - [`commands`]: `sbatch`, `squeue`, `sacct`, `scancel` as processes;
//! - [`jobs`]: the sweep's `slurm/` folder (scripts, job ids, task logs);
//! - this file: submit, status (Slurm's view joined with each run's own
//!   progress), wait, cancel.

pub mod commands;
pub mod jobs;
pub mod script;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use commands::TaskInfo;
pub use jobs::{log_tail, SlurmDir, Submission};
pub use script::{ArrayScript, SbatchOptions, TaskCommand};

use crate::concept::RunState;
use crate::sweep::{gather, Next, SweepDir, SweepPlan};
use crate::workspace::Workspace;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{0}` is not on PATH: run this on the cluster's login node (or `module load slurm` \
         first); `--dry-run` prints the batch script without submitting it"
    )]
    NotInstalled(&'static str),
    #[error("Slurm refused the job: {message}")]
    Refused { message: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Sweep(#[from] crate::sweep::SweepError),
}

/// A sweep to submit, and how.
pub struct SubmitRequest<'a> {
    pub ws: &'a Workspace,
    pub plan: &'a SweepPlan,
    /// Only these runs (empty: all of them).
    pub only: &'a [usize],
    pub options: SbatchOptions,
    /// The `dreamartist` binary the tasks run (on the shared filesystem).
    pub binary: PathBuf,
}

/// What `submit` did.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The script's text.
    pub script: String,
    /// The runs it covers.
    pub indices: Vec<usize>,
    /// Runs left out: ended already, or queued/running in an earlier job.
    pub skipped: Vec<(usize, String)>,
    /// The array job's id; `None` for a dry run.
    pub job: Option<String>,
    /// Where the script was kept (not for a dry run).
    pub script_path: Option<PathBuf>,
}

/// Which runs still need a task: not ended, and not in the queue already
/// (two tasks of one run would race for its record).
fn runs_to_submit(
    plan: &SweepPlan,
    dir: &SweepDir,
    only: &[usize],
    queued: &[TaskInfo],
) -> (Vec<usize>, Vec<(usize, String)>) {
    let wanted: Vec<usize> = if only.is_empty() {
        (0..plan.runs.len()).collect()
    } else {
        only.to_vec()
    };
    let (mut todo, mut skipped) = (Vec::new(), Vec::new());
    for i in wanted {
        if let Some(t) = queued.iter().find(|t| t.index == i && t.is_active()) {
            skipped.push((
                i,
                format!("{} in job {}", t.state.to_lowercase(), t.array_job),
            ));
            continue;
        }
        match dir.next(i) {
            Next::Start | Next::Resume(_) => todo.push(i),
            _ if crate::sweep::eval_pending(plan, dir, i) => todo.push(i),
            Next::Done(id, state) => skipped.push((i, format!("{} (run {id})", state.label()))),
            Next::Busy(id) => skipped.push((i, format!("running elsewhere (run {id})"))),
        }
    }
    (todo, skipped)
}

/// The script for a sweep (what a dry run prints), without touching the
/// queue or the workspace.
pub fn script_for(
    req: &SubmitRequest,
    dir: &SweepDir,
    queued: &[TaskInfo],
    snapshot: &Path,
) -> Result<Submitted, SlurmError> {
    let (indices, skipped) = runs_to_submit(req.plan, dir, req.only, queued);
    if indices.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|(i, why)| format!("run {i} left out: {why}"))
            .collect();
        return Err(SlurmError::Invalid(format!(
            "no runs to submit ({}); `dreamartist status` shows the sweep",
            why.join("; ")
        )));
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let script = ArrayScript {
        job_name: job_name(&req.plan.concept.name, &req.plan.name),
        indices: indices.clone(),
        log_dir: abs(&SlurmDir::of(dir.path()).log_dir()),
        options: req.options.clone(),
        command: TaskCommand {
            binary: abs(&req.binary),
            sweep_file: abs(&req.plan.file),
            snapshot: abs(snapshot),
            workspace: abs(&req.ws.root),
        },
    }
    .render()?;
    Ok(Submitted {
        script,
        indices,
        skipped,
        job: None,
        script_path: None,
    })
}

/// `da-<concept>-<sweep>`, in the characters job names keep.
fn job_name(concept: &str, sweep: &str) -> String {
    format!("da-{concept}-{sweep}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the script and a snapshot of the sweep file into the sweep's
/// folder, submits the script, records the job.
pub fn submit(req: &SubmitRequest) -> Result<Submitted, SlurmError> {
    let dir = SweepDir::of(req.ws, req.plan);
    dir.check(req.plan)?;
    let slurm = SlurmDir::of(dir.path());
    // Fail on a missing sbatch, or a damaged record, before anything is written.
    commands::program_on_path("sbatch")?;
    let queued = commands::squeue(&slurm.job_ids()?)?;
    let (script_path, snapshot) = slurm.new_submission_paths();
    let mut sub = script_for(req, &dir, &queued, &snapshot)?;
    dir.prepare(req.plan)?;
    slurm.prepare()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| SlurmError::Io {
            path,
            message: e.to_string(),
        }
    };
    crate::fsutil::write_atomic(&snapshot, req.plan.text.as_bytes()).map_err(io(&snapshot))?;
    crate::fsutil::write_atomic(&script_path, sub.script.as_bytes()).map_err(io(&script_path))?;
    let job = commands::sbatch(&script_path)?;
    slurm.record(&Submission {
        job: job.clone(),
        submitted: crate::concept::rundir::unix_now(),
        indices: sub.indices.clone(),
        script: script_path.clone(),
        snapshot: Some(snapshot),
    })?;
    sub.job = Some(job);
    sub.script_path = Some(script_path);
    Ok(sub)
}

/// One planned run: the scheduler's view and the run's own.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub index: usize,
    /// The options this run sets (`train_cfg="2", seed=1`).
    pub options: String,
    /// Its latest array job, if it was submitted.
    pub job: Option<String>,
    /// What Slurm says of that task (`None`: never submitted, or forgotten
    /// by a cluster without accounting).
    pub slurm: Option<TaskInfo>,
    pub run: Option<String>,
    /// The run's status from its own files (`pending` before it starts).
    pub status: String,
    pub step: u64,
    pub total_steps: u64,
    pub loss: Option<f64>,
    /// The task's log.
    pub log: Option<PathBuf>,
    /// The queue could not be read: a missing task may still be running.
    #[serde(skip)]
    pub queue_unknown: bool,
}

impl TaskRow {
    /// `RUNNING`, `PENDING (Priority)`, `COMPLETED`; `ended` when the queue
    /// has forgotten the task and no accounting says more; `?` when the queue
    /// could not be read; `-` when never submitted.
    pub fn slurm_label(&self) -> String {
        match &self.slurm {
            None if self.job.is_some() && self.queue_unknown => "?".into(),
            None if self.job.is_some() => "ended".into(),
            Some(t)
                if t.live && t.state == "PENDING" && !t.reason.is_empty() && t.reason != "None" =>
            {
                format!("PENDING ({})", t.reason)
            }
            Some(t) => t.state.clone(),
            None => "-".into(),
        }
    }

    /// Whether its task is still in the queue.
    pub fn queued(&self) -> bool {
        self.slurm.as_ref().is_some_and(TaskInfo::is_active)
    }
}

/// A sweep as Slurm and its run folders see it.
#[derive(Debug, Clone, Serialize)]
pub struct SweepStatus {
    pub concept: String,
    pub sweep: String,
    pub jobs: Vec<String>,
    pub rows: Vec<TaskRow>,
    /// How many runs are in each status (`2 finished, 1 pending`).
    pub counts: String,
    /// Why the queue could not be read (the rows then show the runs only).
    pub slurm_error: Option<String>,
}

impl SweepStatus {
    /// Tasks still in the queue.
    pub fn active(&self) -> usize {
        self.rows.iter().filter(|r| r.queued()).count()
    }
}

/// Reads the sweep's jobs from the queue and its runs from their folders.
pub fn sweep_status(plan: &SweepPlan, dir: &SweepDir) -> SweepStatus {
    sweep_status_within(plan, dir, Duration::ZERO)
}

/// [`sweep_status`] with a queue answer up to `max_age` old (the workbench).
pub fn sweep_status_within(plan: &SweepPlan, dir: &SweepDir, max_age: Duration) -> SweepStatus {
    let subs = SlurmDir::of(dir.path()).submissions();
    let jobs: Vec<String> = subs.iter().flatten().map(|s| s.job.clone()).collect();
    let tasks = commands::tasks(&jobs, max_age);
    status_of(plan, dir, subs, tasks)
}

/// The sweep's rows from its submissions and what Slurm said of their tasks.
fn status_of(
    plan: &SweepPlan,
    dir: &SweepDir,
    subs: Result<Vec<Submission>, SlurmError>,
    tasks: Result<Vec<TaskInfo>, SlurmError>,
) -> SweepStatus {
    let slurm = SlurmDir::of(dir.path());
    let mut slurm_error = subs.as_ref().err().map(ToString::to_string);
    let subs = subs.unwrap_or_default();
    let jobs: Vec<String> = subs.iter().map(|s| s.job.clone()).collect();
    let (tasks, queue_unknown) = match tasks {
        Ok(t) => (t, false),
        Err(e) => {
            slurm_error.get_or_insert(e.to_string());
            (Vec::new(), true)
        }
    };
    let results = gather(plan, dir);
    let counts = results.counts();
    let rows = plan
        .runs
        .iter()
        .zip(results.runs)
        .map(|(planned, result)| {
            let sub = subs
                .iter()
                .rev()
                .find(|s| s.indices.contains(&planned.index));
            let job = sub.map(|s| s.job.clone());
            let slurm_task = job.as_ref().and_then(|j| {
                tasks
                    .iter()
                    .find(|t| &t.array_job == j && t.index == planned.index)
                    .cloned()
            });
            let summary = result.summary.as_ref();
            TaskRow {
                index: planned.index,
                options: planned.key(),
                log: job.as_ref().map(|j| slurm.log(j, planned.index)),
                job,
                slurm: slurm_task,
                run: result.run.clone(),
                status: result.status.clone(),
                step: summary.map_or(0, |s| s.step),
                total_steps: summary.map_or(planned.config.steps, |s| s.total_steps),
                loss: summary.and_then(|s| s.loss),
                queue_unknown,
            }
        })
        .collect();
    SweepStatus {
        concept: plan.concept.name.clone(),
        sweep: plan.name.clone(),
        jobs,
        rows,
        counts,
        slurm_error,
    }
}

/// How a waited-for task ended.
#[derive(Debug, Clone)]
pub struct TaskEnd {
    pub index: usize,
    pub run: Option<String>,
    pub state: Option<RunState>,
    /// The last lines of its log, when it did not finish.
    pub log_tail: Option<(PathBuf, String)>,
}

impl TaskEnd {
    pub fn finished(&self) -> bool {
        self.state == Some(RunState::Finished)
    }
}

/// Blocks until no task of array job `job` is in the queue, calling
/// `on_poll` with the sweep's status after every look; then says how each of
/// `indices` ended (from the runs' own files: the truth even on a cluster
/// without accounting).
pub fn wait(
    plan: &SweepPlan,
    dir: &SweepDir,
    job: &str,
    indices: &[usize],
    poll: Duration,
    mut on_poll: impl FnMut(&SweepStatus),
) -> Result<Vec<TaskEnd>, SlurmError> {
    let jobs = [job.to_string()];
    let slurm = SlurmDir::of(dir.path());
    // A busy controller times out now and then: give up only after several
    // failures in a row, waiting longer after each.
    const TRIES: u32 = 6;
    let mut failures = 0u32;
    loop {
        // One look at the queue per poll, for the loop and the status alike.
        let tasks = match commands::tasks(&jobs, Duration::ZERO) {
            Ok(tasks) => {
                failures = 0;
                tasks
            }
            Err(e @ SlurmError::NotInstalled(_)) => return Err(e),
            Err(e) => {
                failures += 1;
                if failures >= TRIES {
                    return Err(e);
                }
                std::thread::sleep(poll * 2u32.pow(failures));
                continue;
            }
        };
        let queued = tasks.iter().any(|t| t.live);
        on_poll(&status_of(plan, dir, slurm.submissions(), Ok(tasks)));
        if !queued {
            break;
        }
        std::thread::sleep(poll);
    }
    Ok(indices
        .iter()
        .map(|&index| {
            let run = dir.run_dir(index);
            let state = run.as_ref().map(|r| r.state());
            let finished = state == Some(RunState::Finished);
            let log = slurm.log(job, index);
            TaskEnd {
                index,
                run: run.map(|r| r.id().to_string()),
                state,
                log_tail: (!finished)
                    .then(|| log_tail(&log, 15).map(|t| (log.clone(), t)))
                    .flatten(),
            }
        })
        .collect())
}

/// Cancels task `index` of array job `job`, if the queue still holds it
/// (scancel itself says nothing of a task it does not know).
pub fn cancel_task(job: &str, index: usize) -> Result<(), SlurmError> {
    let live = commands::squeue(&[job.to_string()])?;
    if !live.iter().any(|t| t.index == index && t.is_active()) {
        return Err(SlurmError::Invalid(format!(
            "Slurm task {job}_{index} is no longer in the queue: nothing to cancel"
        )));
    }
    commands::scancel(job, Some(index))
}

/// Cancels the sweep's queued tasks (`only`: those runs'; empty: all of
/// them, each array job at once). Returns what was cancelled (`job` or
/// `job_index`); a task that ended meanwhile is no error.
pub fn cancel(dir: &SweepDir, only: &[usize]) -> Result<Vec<String>, SlurmError> {
    let live = commands::squeue(&SlurmDir::of(dir.path()).job_ids()?)?;
    let mut targets: Vec<(String, Option<usize>)> = live
        .iter()
        .filter(|t| t.is_active() && (only.is_empty() || only.contains(&t.index)))
        .map(|t| (t.array_job.clone(), (!only.is_empty()).then_some(t.index)))
        .collect();
    // squeue lists a job's tasks in its own order, not side by side.
    targets.sort();
    targets.dedup();
    let mut done = Vec::new();
    for (job, index) in targets {
        commands::scancel(&job, index)?;
        done.push(match index {
            Some(i) => format!("{job}_{i}"),
            None => job,
        });
    }
    Ok(done)
}
