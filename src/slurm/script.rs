//! The sbatch job-array script of a sweep: one array index per planned run,
//! each task the same headless `dreamartist sweep FILE --only INDEX` a local
//! sweep would run, made safe for preemption.
//!
//! How a task survives being stopped: Slurm signals it (preemption and
//! `scontrol requeue` signal every process of the job, `--signal=B:TERM@N`
//! only the script, N seconds before the time limit). The script forwards
//! the signal to `dreamartist`, which saves a checkpoint and exits; the next
//! attempt of the task resumes that checkpoint (the sweep folder records
//! which run folder each index trains in). When the job is still `RUNNING`
//! at that point — the time-limit warning, or `scancel --batch --signal=TERM`
//! — nobody else will requeue it, so the script does; when it is already
//! `COMPLETING` (cancelled, preempted, requeued by an admin) it leaves the
//! decision to Slurm, so `scancel` stays a cancel.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::SlurmError;

/// Seconds before the time limit at which the script is warned, by default.
pub const DEFAULT_SIGNAL_SECONDS: u32 = 120;

/// What the user asks of the scheduler (the sbatch options of `--slurm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbatchOptions {
    pub partition: Option<String>,
    /// e.g. `gpu:1` or `gpu:a100:1`.
    pub gres: Option<String>,
    /// Slurm's time formats: `MM`, `HH:MM:SS`, `D-HH:MM:SS`, …
    pub time: Option<String>,
    /// At most this many tasks at once (`--array=…%N`).
    pub max_parallel: Option<usize>,
    pub cpus_per_task: Option<usize>,
    /// e.g. `16G`.
    pub mem: Option<String>,
    /// Warning before the time limit, in seconds (the checkpoint must fit).
    pub signal_seconds: Option<u32>,
    /// More `#SBATCH` options, each one whole (`--account=lab`, `--qos=low`).
    pub extra: Vec<String>,
}

/// Everything one task needs to run: the binary, the sweep file and the
/// workspace, all absolute (tasks start in another working directory, maybe
/// on another host with the same shared filesystem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCommand {
    pub binary: PathBuf,
    pub sweep_file: PathBuf,
    /// The sweep file's text as submitted, which the task reads instead of
    /// the file (edited or deleted since, maybe).
    pub snapshot: PathBuf,
    pub workspace: PathBuf,
}

/// A job array over some of a sweep's runs.
#[derive(Debug, Clone)]
pub struct ArrayScript {
    /// `--job-name`.
    pub job_name: String,
    /// The planned runs' indices, one array task each.
    pub indices: Vec<usize>,
    /// Where each task's log goes (`<job>_<index>.log`, appended across attempts).
    pub log_dir: PathBuf,
    pub options: SbatchOptions,
    pub command: TaskCommand,
}

impl ArrayScript {
    /// The script's text. Refuses options and paths that an `#SBATCH` line
    /// cannot carry, naming the fix.
    pub fn render(&self) -> Result<String, SlurmError> {
        if self.indices.is_empty() {
            return Err(SlurmError::Invalid(
                "no runs to submit: every run of the sweep has ended (see `dreamartist status`)"
                    .into(),
            ));
        }
        let o = &self.options;
        let mut array = array_spec(&self.indices);
        if let Some(n) = o.max_parallel {
            if n == 0 {
                return Err(SlurmError::Invalid(
                    "--max-parallel must be at least 1".into(),
                ));
            }
            write!(array, "%{n}").ok();
        }
        let mut s = String::from("#!/bin/bash\n");
        s.push_str("# Written by `dreamartist`: one task per planned run of the sweep.\n");
        s.push_str("# Resubmit as it is with `sbatch` (finished runs are skipped by the tasks).\n");
        let mut directive = |flag: &str, value: &str| -> Result<(), SlurmError> {
            check_directive(flag, value)?;
            if value.is_empty() {
                writeln!(s, "#SBATCH {flag}").ok();
            } else {
                writeln!(s, "#SBATCH {flag}={value}").ok();
            }
            Ok(())
        };
        directive("--job-name", &self.job_name)?;
        directive("--array", &array)?;
        // `%` starts one of Slurm's filename patterns: a literal one is `%%`.
        let log_text = path_text(&self.log_dir)?.replace('%', "%%");
        directive("--output", &format!("{log_text}/%A_%a.log"))?;
        directive("--open-mode", "append")?;
        directive("--requeue", "")?;
        let signal = o.signal_seconds.unwrap_or(DEFAULT_SIGNAL_SECONDS);
        directive("--signal", &format!("B:TERM@{signal}"))?;
        directive("--ntasks", "1")?;
        if let Some(p) = &o.partition {
            directive("--partition", p)?;
        }
        if let Some(g) = &o.gres {
            directive("--gres", g)?;
        }
        if let Some(t) = &o.time {
            check_time(t)?;
            directive("--time", t)?;
        }
        if let Some(c) = o.cpus_per_task {
            if c == 0 {
                return Err(SlurmError::Invalid(
                    "--cpus-per-task must be at least 1".into(),
                ));
            }
            directive("--cpus-per-task", &c.to_string())?;
        }
        if let Some(m) = &o.mem {
            directive("--mem", m)?;
        }
        for extra in &o.extra {
            let extra = extra.trim();
            if !extra.starts_with('-') || extra.contains(char::is_whitespace) {
                return Err(SlurmError::Invalid(format!(
                    "--sbatch-arg `{extra}`: give one whole sbatch option with `=`, e.g. \
                     --sbatch-arg=--account=lab"
                )));
            }
            let (flag, value) = extra.split_once('=').unwrap_or((extra, ""));
            if let Some(own) = OWN_FLAGS.iter().find(|f| flag == f.0 || flag == f.1) {
                return Err(SlurmError::Invalid(format!(
                    "--sbatch-arg `{extra}`: the script sets {} itself{}",
                    own.0, own.2
                )));
            }
            directive(flag, value)?;
        }
        let c = &self.command;
        let task = format!(
            "{} sweep {} --snapshot {} -w {} --only \"$SLURM_ARRAY_TASK_ID\" --no-results",
            sh_quote(&path_text(&c.binary)?),
            sh_quote(&path_text(&c.sweep_file)?),
            sh_quote(&path_text(&c.snapshot)?),
            sh_quote(&path_text(&c.workspace)?),
        );
        let body = BODY
            .replace("{TASK}", &task)
            .replace("{STOPPED}", &STOPPED_EXIT.to_string());
        write!(s, "{body}").ok();
        Ok(s)
    }
}

/// The options the script sets itself (long, short, what to use instead):
/// a second one from `--sbatch-arg` would fight it.
const OWN_FLAGS: [(&str, &str, &str); 7] = [
    ("--array", "-a", " (one index per run; --only picks runs)"),
    (
        "--output",
        "-o",
        " (one log per task in the sweep's folder)",
    ),
    ("--error", "-e", " (stderr goes to the task's log)"),
    ("--open-mode", "--open-mode", ""),
    ("--signal", "--signal", " (use --signal-seconds)"),
    ("--job-name", "-J", ""),
    (
        "--no-requeue",
        "--no-requeue",
        " (tasks must requeue to survive preemption)",
    ),
];

/// A task's exit status when its trainer stopped on a signal and saved a
/// checkpoint (EX_TEMPFAIL): the run wants another attempt.
pub const STOPPED_EXIT: u8 = 75;

/// The script after its `#SBATCH` lines. `{TASK}` is the task's command.
const BODY: &str = r#"
set -u
attempt=$(( ${SLURM_RESTART_COUNT:-0} + 1 ))
echo "dreamartist: task ${SLURM_ARRAY_TASK_ID} (job ${SLURM_JOB_ID}), attempt ${attempt}, on $(hostname) at $(date -Is)"

# The trainer runs in the background so that this shell can take Slurm's
# signal and pass it on (the trap is set first: no signal is lost).
child=""
signalled=0
on_signal() {
    signalled=1
    echo "dreamartist: signal at $(date -Is): saving a checkpoint"
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap on_signal TERM INT USR1
{TASK} &
child=$!
if [ "$signalled" = 1 ]; then kill -TERM "$child" 2>/dev/null; fi
wait "$child"
status=$?
# A trapped signal ends `wait` early: wait again while the trainer runs.
while [ -n "$(jobs -pr)" ]; do
    wait "$child"
    status=$?
done
if [ "$status" = {STOPPED} ]; then
    state=$(squeue -h -j "$SLURM_JOB_ID" -o %T 2>/dev/null || true)
    if [ "$state" = RUNNING ]; then
        # The time-limit warning (or scancel --batch --signal=TERM): nobody
        # else requeues this task.
        echo "dreamartist: requeueing task ${SLURM_ARRAY_TASK_ID} to resume from its checkpoint"
        scontrol requeue "$SLURM_JOB_ID" || echo "dreamartist: could not requeue; submit the sweep again to resume"
    else
        # Cancelled, preempted or requeued by Slurm: its decision stands.
        echo "dreamartist: job is ${state:-gone}; left to Slurm (a requeued task resumes from its checkpoint)"
    fi
fi
echo "dreamartist: task ${SLURM_ARRAY_TASK_ID} exits with ${status} at $(date -Is)"
exit "$status"
"#;

/// `0-3`, `1,3,5-7`: the indices (sorted, deduplicated) as Slurm's array spec.
pub fn array_spec(indices: &[usize]) -> String {
    let mut v = indices.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// A path as UTF-8 text.
fn path_text(p: &Path) -> Result<String, SlurmError> {
    p.to_str().map(str::to_string).ok_or_else(|| {
        SlurmError::Invalid(format!(
            "{}: the path is not UTF-8, which a batch script cannot carry; rename it",
            p.display()
        ))
    })
}

/// An `#SBATCH` line ends at whitespace and knows no quoting.
fn check_directive(flag: &str, value: &str) -> Result<(), SlurmError> {
    let bad = |c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '#';
    if flag.chars().any(bad) || value.chars().any(bad) {
        return Err(SlurmError::Invalid(format!(
            "`{flag}={value}` has a space or quote, which an #SBATCH line cannot carry: \
             for a path, move the workspace to one without spaces; for a value, drop them"
        )));
    }
    Ok(())
}

/// Slurm's time formats: minutes, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`, or `UNLIMITED`.
fn check_time(t: &str) -> Result<(), SlurmError> {
    let numbers = |s: &str| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    let ok = t.eq_ignore_ascii_case("unlimited")
        || t.eq_ignore_ascii_case("infinite")
        || match t.split_once('-') {
            Some((d, rest)) => {
                !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()) && numbers(rest)
            }
            None => numbers(t),
        };
    if ok {
        Ok(())
    } else {
        Err(SlurmError::Invalid(format!(
            "--time `{t}`: give HH:MM:SS, D-HH:MM:SS or minutes (e.g. --time 04:00:00)"
        )))
    }
}

/// One shell word.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_are_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[5, 1, 3, 6, 7, 3]), "1,3,5-7");
        assert_eq!(array_spec(&[4]), "4");
    }

    #[test]
    fn times_and_quoting() {
        for ok in ["30", "04:00:00", "1-12", "2-00:30:00", "10:00", "UNLIMITED"] {
            assert!(check_time(ok).is_ok(), "{ok}");
        }
        for bad in ["4h", "", "1-", "a:b", "1:2:3:4"] {
            assert!(check_time(bad).is_err(), "{bad}");
        }
        assert_eq!(sh_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn own_options_are_not_given_twice_and_percent_signs_stay_literal() {
        let mut script = ArrayScript {
            job_name: "x".into(),
            indices: vec![0, 1],
            log_dir: "/ws/100%/logs".into(),
            options: SbatchOptions::default(),
            command: TaskCommand {
                binary: "/bin/dreamartist".into(),
                sweep_file: "/ws/s.toml".into(),
                snapshot: "/ws/snap.toml".into(),
                workspace: "/ws".into(),
            },
        };
        let text = script.render().unwrap();
        assert!(
            text.contains("#SBATCH --output=/ws/100%%/logs/%A_%a.log\n"),
            "{text}"
        );
        for bad in ["--array=0-9", "-o=x", "--signal=USR1@60", "--no-requeue"] {
            script.options.extra = vec![bad.into()];
            let err = script.render().unwrap_err().to_string();
            assert!(err.contains("the script sets"), "{bad}: {err}");
        }
        script.options.extra = vec!["-A lab".into()];
        assert!(script
            .render()
            .unwrap_err()
            .to_string()
            .contains("with `=`"));
        script.options.extra = vec!["--exclusive".into(), "--account=lab".into()];
        let text = script.render().unwrap();
        assert!(
            text.contains("#SBATCH --exclusive\n#SBATCH --account=lab\n"),
            "{text}"
        );
    }

    #[test]
    fn directives_cannot_carry_spaces() {
        let script = ArrayScript {
            job_name: "x".into(),
            indices: vec![0],
            log_dir: "/my workspace/logs".into(),
            options: SbatchOptions::default(),
            command: TaskCommand {
                binary: "/bin/dreamartist".into(),
                sweep_file: "/ws/s.toml".into(),
                snapshot: "/ws/snap.toml".into(),
                workspace: "/ws".into(),
            },
        };
        let err = script.render().unwrap_err().to_string();
        assert!(
            err.contains("/my workspace/logs") && err.contains("space"),
            "{err}"
        );
    }
}
