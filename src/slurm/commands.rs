//! Slurm's own commands (`sbatch`, `squeue`, `sacct`, `scancel`), run as
//! processes and their output parsed. The one state kept is the last
//! `squeue` answer, which callers may reuse for a while ([`squeue_within`]);
//! our own `sbatch` and `scancel` forget it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::SlurmError;

/// A Slurm command found on `PATH`.
pub fn program_on_path(name: &'static str) -> Result<PathBuf, SlurmError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(SlurmError::NotInstalled(name))
}

/// Runs `name args…`; its stdout, or the scheduler's message as the error.
fn run(name: &'static str, args: &[&str]) -> Result<String, SlurmError> {
    let exe = program_on_path(name)?;
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|e| SlurmError::Command {
            command: format!("{name} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(SlurmError::Command {
            command: format!("{name} {}", args.join(" ")),
            message: if message.is_empty() {
                format!("exited with {}", out.status)
            } else {
                message
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits a batch script; its job id.
pub fn sbatch(script: &Path) -> Result<String, SlurmError> {
    let path = script.to_string_lossy();
    match run("sbatch", &["--parsable", &path]) {
        Ok(out) => {
            forget_queue();
            parse_job_id(&out).ok_or_else(|| SlurmError::Refused {
                message: format!("sbatch answered `{}`, not a job id", out.trim()),
            })
        }
        Err(SlurmError::Command { message, .. }) => Err(SlurmError::Refused { message }),
        Err(e) => Err(e),
    }
}

/// `sbatch --parsable` prints `jobid` or `jobid;cluster`.
pub fn parse_job_id(out: &str) -> Option<String> {
    let id = out.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// One array task as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskInfo {
    /// The array's job id (the one sbatch printed).
    pub array_job: String,
    /// The array index: the sweep's run index.
    pub index: usize,
    /// `PENDING`, `RUNNING`, `COMPLETING`, … from squeue; `COMPLETED`,
    /// `FAILED`, `CANCELLED`, `TIMEOUT`, … from sacct.
    pub state: String,
    /// Why it waits (squeue's reason), or the exit code (sacct).
    pub reason: String,
    /// The node it runs on.
    pub node: String,
    /// Whether the answer came from the live queue (else from accounting).
    pub live: bool,
}

impl TaskInfo {
    /// Still in the queue: pending, running, being requeued or suspended.
    pub fn is_active(&self) -> bool {
        self.live
            || matches!(
                self.state.as_str(),
                "PENDING"
                    | "RUNNING"
                    | "REQUEUED"
                    | "REQUEUE_HOLD"
                    | "REQUEUE_FED"
                    | "SUSPENDED"
                    | "CONFIGURING"
                    | "COMPLETING"
                    | "RESIZING"
                    | "SIGNALING"
                    | "STAGE_OUT"
            )
    }
}

const SQUEUE_FORMAT: &str = "%F|%K|%T|%r|%N";

/// The live tasks of these array jobs (the user's own queue, read once).
pub fn squeue(array_jobs: &[String]) -> Result<Vec<TaskInfo>, SlurmError> {
    squeue_within(array_jobs, Duration::ZERO)
}

/// The user's queue as last read, and when.
static LAST_QUEUE: Mutex<Option<(Instant, Vec<TaskInfo>)>> = Mutex::new(None);

/// [`squeue`], reusing an answer younger than `max_age`: the workbench
/// refreshes every few seconds, and clusters ask users not to poll the
/// controller that often.
pub fn squeue_within(
    array_jobs: &[String],
    max_age: Duration,
) -> Result<Vec<TaskInfo>, SlurmError> {
    if array_jobs.is_empty() {
        return Ok(Vec::new());
    }
    let cached = LAST_QUEUE.lock().ok().and_then(|last| {
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, t)| t.clone())
    });
    let all = match cached {
        Some(all) => all,
        None => {
            // Not `--jobs`: squeue fails on an id it has forgotten.
            let out = run(
                "squeue",
                &["--me", "--noheader", "--array", "--format", SQUEUE_FORMAT],
            )?;
            let all = parse_squeue(&out);
            if let Ok(mut last) = LAST_QUEUE.lock() {
                *last = Some((Instant::now(), all.clone()));
            }
            all
        }
    };
    Ok(all
        .into_iter()
        .filter(|t| array_jobs.contains(&t.array_job))
        .collect())
}

/// Lines of `%F|%K|%T|%r|%N`. A pending array not yet split shows `%K` as a
/// range (`0-3%2`): one entry per index.
pub fn parse_squeue(out: &str) -> Vec<TaskInfo> {
    let mut tasks = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        if f.len() < 5 {
            continue;
        }
        for index in expand_indices(f[1]) {
            tasks.push(TaskInfo {
                array_job: f[0].to_string(),
                index,
                state: f[2].to_string(),
                reason: f[3].to_string(),
                node: f[4].to_string(),
                live: true,
            });
        }
    }
    tasks
}

/// `3`, `0-3`, `[0-3%2]`, `1,4-5`: the indices.
fn expand_indices(spec: &str) -> Vec<usize> {
    let spec = spec.trim().trim_start_matches('[').trim_end_matches(']');
    let spec = spec.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    if b >= a && b - a < 1_000_000 {
                        out.extend(a..=b);
                    }
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// How these array jobs' tasks ended, from Slurm's accounting. `None` where
/// the cluster keeps no accounting (sacct refuses): the runs' own files
/// still say how each one ended.
pub fn sacct(array_jobs: &[String]) -> Option<Vec<TaskInfo>> {
    if array_jobs.is_empty() {
        return Some(Vec::new());
    }
    let jobs = array_jobs.join(",");
    let out = run(
        "sacct",
        &[
            "--noheader",
            "--parsable2",
            "--allocations",
            "--jobs",
            &jobs,
            "--format",
            "JobID,State,ExitCode,NodeList",
        ],
    )
    .ok()?;
    Some(parse_sacct(&out))
}

/// Lines of `JobID|State|ExitCode|NodeList`, array tasks as `123_4`.
pub fn parse_sacct(out: &str) -> Vec<TaskInfo> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').collect();
            if f.len() < 4 {
                return None;
            }
            let (job, index) = f[0].split_once('_')?;
            Some(TaskInfo {
                array_job: job.to_string(),
                index: index.parse().ok()?,
                // `CANCELLED by 1000`
                state: f[1].split_whitespace().next().unwrap_or("").to_string(),
                reason: format!("exit {}", f[2]),
                node: f[3].to_string(),
                live: false,
            })
        })
        .collect()
}

/// The tasks of these array jobs: live ones from the queue (an answer up to
/// `max_age` old will do), ended ones from accounting where it answers —
/// asked only for a fresh answer (`max_age` zero): the workbench's frequent
/// refreshes leave the accounting daemon alone and show `ended`.
pub fn tasks(array_jobs: &[String], max_age: Duration) -> Result<Vec<TaskInfo>, SlurmError> {
    let live = squeue_within(array_jobs, max_age)?;
    // Accounting only for what the queue no longer holds.
    let ended: Vec<String> = array_jobs
        .iter()
        .filter(|j| !live.iter().any(|t| &t.array_job == *j && t.is_active()))
        .cloned()
        .collect();
    let mut all = if ended.is_empty() || !max_age.is_zero() {
        Vec::new()
    } else {
        sacct(&ended).unwrap_or_default()
    };
    // The queue is fresher than accounting for what is still in it.
    all.retain(|t| {
        !live
            .iter()
            .any(|l| l.array_job == t.array_job && l.index == t.index)
    });
    all.extend(live);
    Ok(all)
}

/// Cancels one task (`index`) or the whole array.
pub fn scancel(array_job: &str, index: Option<usize>) -> Result<(), SlurmError> {
    let target = match index {
        Some(i) => format!("{array_job}_{i}"),
        None => array_job.to_string(),
    };
    run("scancel", &[&target])?;
    forget_queue();
    Ok(())
}

/// The next look at the queue asks Slurm again (after a change of ours).
pub fn forget_queue() {
    if let Ok(mut last) = LAST_QUEUE.lock() {
        *last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_from_sbatch() {
        assert_eq!(parse_job_id("1234\n"), Some("1234".into()));
        assert_eq!(parse_job_id("77;cluster-a\n"), Some("77".into()));
        assert_eq!(parse_job_id("Submitted batch job 5"), None);
    }

    #[test]
    fn squeue_lines_with_pending_ranges() {
        let out = "12|[2-4%2]|PENDING|JobArrayTaskLimit|\n12|0|RUNNING|None|node7\n13|1|PENDING|BeginTime|\nbad\n";
        let t = parse_squeue(out);
        assert_eq!(t.len(), 5);
        assert_eq!((t[0].index, t[2].index), (2, 4));
        assert_eq!(t[3].state, "RUNNING");
        assert_eq!(t[3].node, "node7");
        assert_eq!(t[4].array_job, "13");
        assert!(t.iter().all(TaskInfo::is_active));
        assert_eq!(expand_indices("1,4-5"), vec![1, 4, 5]);
    }

    #[test]
    fn sacct_lines_of_array_tasks() {
        let out = "12_0|COMPLETED|0:0|node7\n12_1|CANCELLED by 1000|0:15|node7\n12|FAILED|1:0|n\n";
        let t = parse_sacct(out);
        assert_eq!(t.len(), 2, "the array's own line is not a task");
        assert_eq!(t[1].state, "CANCELLED");
        assert_eq!(t[1].reason, "exit 0:15");
        assert!(!t[0].is_active());
    }
}
