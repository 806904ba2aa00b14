//! `--slurm` of `sweep` and `train` (submit a job array, maybe wait for it)
//! and `dreamartist status` (each run's Slurm state joined with its own
//! progress; cancel).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::runs::table::aligned_lines;
use crate::slurm::{self, SbatchOptions, SlurmDir, SubmitRequest, SweepStatus};
use crate::sweep::{gather, SweepDir, SweepPlan};
use crate::workspace::Workspace;

/// The options of `--slurm` (shared by `sweep` and `train`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SlurmArgs {
    /// Submit to Slurm as a job array (one task per run) instead of training here.
    #[arg(long)]
    pub slurm: bool,
    /// sbatch --partition.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// sbatch --gres, e.g. gpu:1.
    #[arg(long, requires = "slurm")]
    pub gres: Option<String>,
    /// Time limit per task (HH:MM:SS, D-HH:MM:SS); tasks near it checkpoint and requeue.
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// At most this many tasks at once.
    #[arg(long, requires = "slurm")]
    pub max_parallel: Option<usize>,
    #[arg(long, requires = "slurm")]
    pub cpus_per_task: Option<usize>,
    /// Memory per task (sbatch --mem, e.g. 32G).
    #[arg(long, requires = "slurm")]
    pub mem: Option<String>,
    /// Seconds of warning before the time limit (default 120).
    #[arg(long, requires = "slurm")]
    pub signal_seconds: Option<u32>,
    /// Another sbatch option, whole (repeatable): --sbatch-arg=--account=lab.
    #[arg(long = "sbatch-arg", requires = "slurm", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Print the batch script and submit nothing.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,
    /// Block until every task has ended; exit 1 if a run did not finish.
    #[arg(long, requires = "slurm", conflicts_with = "dry_run")]
    pub wait: bool,
}

impl SlurmArgs {
    fn options(&self) -> SbatchOptions {
        SbatchOptions {
            partition: self.partition.clone(),
            gres: self.gres.clone(),
            time: self.time.clone(),
            max_parallel: self.max_parallel,
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            signal_seconds: self.signal_seconds,
            extra: self.sbatch_args.clone(),
        }
    }
}

/// How often `--wait` asks the queue.
fn poll_interval() -> Duration {
    let secs = std::env::var("DREAMARTIST_SLURM_POLL")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 3600.0)
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs)
}

/// Submits the plan's runs (or prints the script); with `--wait`, follows
/// them to the end and writes the results like a local sweep.
pub fn submit(
    args: &SlurmArgs,
    ws: &Workspace,
    plan: &SweepPlan,
    only: &[usize],
    json: bool,
) -> Result<ExitCode> {
    let binary = std::env::current_exe().context("finding this binary for the tasks")?;
    let req = SubmitRequest {
        ws,
        plan,
        only,
        options: args.options(),
        binary,
    };
    let dir = SweepDir::of(ws, plan);
    if args.dry_run {
        dir.check(plan)?;
        // The queue only when Slurm is here: a dry run works anywhere.
        let queued = slurm::commands::program_on_path("squeue")
            .ok()
            .and_then(|_| SlurmDir::of(dir.path()).job_ids().ok())
            .and_then(|jobs| slurm::commands::squeue(&jobs).ok())
            .unwrap_or_default();
        // Where the snapshot would go: a dry run writes nothing.
        let (_, snapshot) = SlurmDir::of(dir.path()).new_submission_paths();
        let sub = slurm::script_for(&req, &dir, &queued, &snapshot)?;
        print!("{}", sub.script);
        for (i, why) in &sub.skipped {
            eprintln!("run {i} left out: {why}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sub = slurm::submit(&req)?;
    let job = sub.job.clone().unwrap_or_default();
    let logs = SlurmDir::of(dir.path()).log_dir();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "submitted",
                "job": job,
                "indices": sub.indices,
                "script": sub.script_path,
                "logs": logs,
                "skipped": sub.skipped.iter().map(|(i, w)| serde_json::json!({"index": i, "why": w})).collect::<Vec<_>>(),
            })
        );
    } else {
        for (i, why) in &sub.skipped {
            eprintln!("run {i} left out: {why}");
        }
        println!(
            "submitted job {job}: {} run(s) of sweep {} (concept {}), array {}",
            sub.indices.len(),
            plan.name,
            plan.concept.name,
            slurm::script::array_spec(&sub.indices)
        );
        if let Some(p) = &sub.script_path {
            println!("script: {}", p.display());
        }
        println!("logs:   {}/{job}_<index>.log", logs.display());
        println!(
            "follow: dreamartist status {}/{} -w {}",
            plan.concept.name,
            plan.name,
            ws.root.display()
        );
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last: Vec<String> = Vec::new();
    let ends = slurm::wait(plan, &dir, &job, &sub.indices, poll_interval(), |status| {
        let lines = progress_lines(status, &sub.indices);
        for (i, line) in lines.iter().enumerate() {
            if last.get(i) != Some(line) {
                if json {
                    if let Some(row) = status.rows.iter().find(|r| r.index == sub.indices[i]) {
                        println!(
                            "{}",
                            serde_json::json!({"event": "task", "row": row, "slurm_state": row.slurm_label()})
                        );
                    }
                } else {
                    eprintln!("{line}");
                }
            }
        }
        last = lines;
    })?;
    super::sweep::finish(&gather(plan, &dir), &dir, json)?;
    let failed: Vec<_> = ends.iter().filter(|e| !e.finished()).collect();
    for e in &failed {
        let state = e.state.map_or("never started", |s| s.label());
        eprintln!(
            "task {} ({}) did not finish: {state}",
            e.index,
            e.run
                .as_deref()
                .map_or("no run".into(), |r| format!("run {r}"))
        );
        match &e.log_tail {
            Some((path, tail)) => eprintln!("last lines of {}:\n{tail}", path.display()),
            None => eprintln!(
                "its log {} is empty or missing",
                SlurmDir::of(dir.path()).log(&job, e.index).display()
            ),
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line per task: `task 2: RUNNING on node7, run 0004 12/20 loss 0.1234`.
fn progress_lines(status: &SweepStatus, indices: &[usize]) -> Vec<String> {
    indices
        .iter()
        .filter_map(|i| status.rows.iter().find(|r| r.index == *i))
        .map(|r| {
            let node = r
                .slurm
                .as_ref()
                .filter(|t| t.live && !t.node.is_empty())
                .map_or(String::new(), |t| format!(" on {}", t.node));
            let run = r.run.as_deref().map_or(String::new(), |id| {
                format!(", run {id} {} {}/{}", r.status, r.step, r.total_steps)
            });
            format!("task {}: {}{node}{run}", r.index, r.slurm_label())
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A sweep: its file, its name, or CONCEPT/NAME (default: every sweep of the workspace).
    pub sweep: Option<String>,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
    /// One JSON object per sweep.
    #[arg(long)]
    pub json: bool,
    /// Cancel the sweep's queued and running tasks (scancel); with --only, those runs'.
    #[arg(long, requires = "sweep")]
    pub cancel: bool,
    /// With --cancel: only these runs (indices).
    #[arg(long, value_delimiter = ',', requires = "cancel")]
    pub only: Vec<usize>,
}

/// `dreamartist status [SWEEP]`.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    let dirs = match &args.sweep {
        Some(s) => vec![find_sweep(&ws, s)?],
        None => SweepDir::list(&ws),
    };
    if dirs.is_empty() {
        println!(
            "no sweeps in {} yet (`dreamartist sweep FILE --slurm` submits one)",
            ws.root.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.cancel {
        let dir = &dirs[0];
        if SlurmDir::of(dir.path()).job_ids()?.is_empty() {
            println!(
                "nothing to cancel: sweep {} was never submitted to Slurm",
                dir.name()
            );
            return Ok(ExitCode::SUCCESS);
        }
        let cancelled = slurm::cancel(dir, &args.only)?;
        if cancelled.is_empty() {
            println!(
                "nothing to cancel: no task of sweep {} is queued",
                dir.name()
            );
        } else {
            println!("cancelled {}", cancelled.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (n, dir) in dirs.iter().enumerate() {
        let plan = match dir.load_plan(&ws) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("sweep {}: {e}", dir.path().display());
                continue;
            }
        };
        let status = slurm::sweep_status(&plan, dir);
        if args.json {
            println!("{}", serde_json::to_string(&status)?);
            continue;
        }
        if n > 0 {
            println!();
        }
        print!("{}", status_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// A sweep's status as text: a heading, the table, the queue's problem.
pub fn status_text(status: &SweepStatus) -> String {
    let jobs = if status.jobs.is_empty() {
        "not submitted to Slurm".to_string()
    } else {
        format!("job {}", status.jobs.join(", "))
    };
    let mut s = format!(
        "sweep {}/{} ({jobs}): {}\n",
        status.concept, status.sweep, status.counts
    );
    let rows: Vec<Vec<String>> = status
        .rows
        .iter()
        .map(|r| {
            vec![
                r.index.to_string(),
                r.slurm_label(),
                r.run.clone().unwrap_or_else(|| "-".into()),
                r.status.clone(),
                format!("{}/{}", r.step, r.total_steps),
                r.loss.map_or("-".into(), |l| format!("{l:.4}")),
                r.options.clone(),
            ]
        })
        .collect();
    for line in aligned_lines(
        &["#", "slurm", "run", "status", "steps", "loss", "options"],
        &rows,
    ) {
        s.push_str(&line);
        s.push('\n');
    }
    if let Some(e) = &status.slurm_error {
        s.push_str(&format!("slurm: {e}\n"));
    }
    s
}

/// A sweep by file, `CONCEPT/NAME` or name.
fn find_sweep(ws: &Workspace, typed: &str) -> Result<SweepDir> {
    let as_file = [PathBuf::from(typed), ws.root.join(typed)]
        .into_iter()
        .find(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"));
    if let Some(file) = as_file {
        let plan = SweepPlan::load(&file, ws)?;
        return Ok(SweepDir::of(ws, &plan));
    }
    let all = SweepDir::list(ws);
    let label = |d: &SweepDir| {
        let concept = d
            .concept_dir()
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        format!("{concept}/{}", d.name())
    };
    let matches: Vec<&SweepDir> = all
        .iter()
        .filter(|d| label(d) == typed || d.name() == typed)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no sweep `{typed}` in {}: give its file or one of: {}",
            ws.root.display(),
            if all.is_empty() {
                "(none yet)".into()
            } else {
                all.iter().map(label).collect::<Vec<_>>().join(", ")
            }
        ),
        many => bail!(
            "`{typed}` names sweeps of several concepts: {}; give CONCEPT/NAME",
            many.iter().map(|d| label(d)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `train NAME --slurm`: the run as a one-run sweep whose file pins every
/// option (`concepts/<c>/sweeps/train-<time>/sweep.toml`), so the task and
/// its requeued attempts resume the same run. The file's path and text; the
/// caller writes it (a dry run does not).
pub fn train_sweep(
    ws: &Workspace,
    concept: &str,
    config: &crate::concept::TrainConfig,
) -> Result<(PathBuf, String)> {
    let sweeps = ws.concept_dir(concept).join("sweeps");
    let stamp = crate::concept::rundir::format_utc_id(crate::concept::rundir::unix_now());
    // Two submissions in one second get their own folders.
    let name = (0..)
        .map(|n| match n {
            0 => format!("train-{stamp}"),
            n => format!("train-{stamp}-{n}"),
        })
        .find(|n| !sweeps.join(n).exists())
        .unwrap_or_default();
    let train = toml::Value::try_from(config).context("writing the run's options")?;
    let mut file = toml::Table::new();
    file.insert("concept".into(), concept.into());
    file.insert("name".into(), name.clone().into());
    file.insert("train".into(), train);
    let text = format!(
        "# `dreamartist train {concept} --slurm`: one run, every option pinned.\n{}",
        toml::to_string(&file)?
    );
    Ok((sweeps.join(name).join("sweep.toml"), text))
}
