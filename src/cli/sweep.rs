//! `dreamartist sweep FILE`: train a sweep file's runs (one after another in
//! this process, or `--jobs N` processes of this binary, each `--only INDEX`),
//! skip the finished ones, resume the interrupted ones, write the results.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::parse_device;
use super::train::progress_line;
use crate::concept::RunState;
use crate::sweep::{
    eval_pending, gather, run_planned, LazyClip, Next, SweepDir, SweepEvent, SweepPlan,
    SweepResults,
};
use crate::train::eta::Eta;
use crate::train::{TrainControl, TrainEvent};
use crate::workspace::Workspace;

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The sweep file (TOML): concept, seeds, [train], [grid], [[run]], [eval].
    pub file: PathBuf,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
    /// Print the expanded runs (index, options, status) and exit.
    #[arg(long, conflicts_with_all = ["report", "jobs"])]
    pub list: bool,
    /// Only these runs (indices from --list, comma-separated): one array-job task each.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<usize>,
    /// Train this many runs at once, each in its own process (CPU threads split among them).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Write and print the results table from the run folders, train nothing.
    #[arg(long, conflicts_with = "jobs")]
    pub report: bool,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Leave the results to the caller (the --jobs parent gathers them once).
    #[arg(long, hide = true)]
    pub no_results: bool,
    /// Read the sweep from this copy of FILE (a Slurm task: the file as it was submitted).
    #[arg(long, hide = true)]
    pub snapshot: Option<PathBuf>,
    #[command(flatten)]
    pub slurm: super::slurm::SlurmArgs,
}

pub fn run(args: SweepArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    let plan = match &args.snapshot {
        Some(snap) => {
            let text = std::fs::read_to_string(snap)
                .with_context(|| format!("{}: the sweep's snapshot", snap.display()))?;
            SweepPlan::from_text(&args.file, text, &ws)?
        }
        None => SweepPlan::load(&args.file, &ws)?,
    };
    let dir = SweepDir::of(&ws, &plan);
    dir.check(&plan)?;
    let count = plan.runs.len();
    if let Some(bad) = args.only.iter().find(|i| **i >= count) {
        bail!(
            "{}: --only {bad}: the sweep has runs 0 to {} (see --list)",
            args.file.display(),
            count - 1
        );
    }
    let indices: Vec<usize> = if args.only.is_empty() {
        (0..count).collect()
    } else {
        args.only.clone()
    };
    if args.slurm.slurm && (args.list || args.report || args.jobs > 1) {
        bail!("--slurm submits the runs to Slurm: leave out --list, --report and --jobs (`dreamartist status` follows them)");
    }
    if args.list {
        return list(&plan, &dir, &indices, args.json);
    }
    if args.slurm.slurm {
        return super::slurm::submit(&args.slurm, &ws, &plan, &args.only, args.json);
    }
    if args.report {
        let results = gather(&plan, &dir);
        finish(&results, &dir, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    dir.prepare(&plan)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let failed = if args.jobs > 1 && indices.len() > 1 {
        in_processes(&args, &plan, &dir, &indices, &stop)?
    } else {
        in_process(&args, &ws, &plan, &dir, &indices, &stop)?
    };
    if !args.no_results {
        finish(&gather(&plan, &dir), &dir, args.json)?;
    }
    let under_slurm = std::env::var_os("SLURM_JOB_ID").is_some();
    if stop.load(Ordering::SeqCst) {
        let unfinished = indices
            .iter()
            .any(|&i| matches!(dir.next(i), Next::Start | Next::Resume(_)));
        if under_slurm && unfinished {
            eprintln!("stopped with a checkpoint: the task's next attempt resumes it");
            // The batch script requeues on this status (see slurm::script).
            return Ok(ExitCode::from(crate::slurm::script::STOPPED_EXIT));
        } else if !under_slurm {
            eprintln!(
                "sweep interrupted; run `dreamartist sweep {}` again to continue where it stopped",
                args.file.display()
            );
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--list`: index, status, run folder, options.
fn list(plan: &SweepPlan, dir: &SweepDir, indices: &[usize], json: bool) -> Result<ExitCode> {
    for &i in indices {
        let r = &plan.runs[i];
        let (status, run) = match dir.next(i) {
            Next::Start => ("pending".to_string(), None),
            Next::Resume(id) => (
                dir.run_dir(i)
                    .map_or("stopped".into(), |d| d.state().label().to_string()),
                Some(id),
            ),
            Next::Done(id, s) => (s.label().to_string(), Some(id)),
            Next::Busy(id) => ("running".to_string(), Some(id)),
        };
        if json {
            let options: serde_json::Map<String, serde_json::Value> = r
                .options
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            println!(
                "{}",
                serde_json::json!({"index": i, "options": options, "status": status, "run": run})
            );
        } else {
            println!(
                "{i}\t{status}\t{}\t{}",
                run.as_deref().unwrap_or("-"),
                r.key()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the results and prints them (the table, or one JSON line).
pub(super) fn finish(results: &SweepResults, dir: &SweepDir, json: bool) -> Result<()> {
    let (md, js) = results.write(dir)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "results",
                "markdown": md,
                "json": js,
                "complete": results.complete(),
                "counts": results.counts(),
            })
        );
    } else {
        print!("{}", results.markdown());
        println!("\nwrote {} and {}", md.display(), js.display());
    }
    Ok(())
}

/// The runs one after another in this process (the model loaded once).
/// Returns whether any run failed.
fn in_process(
    args: &SweepArgs,
    ws: &Workspace,
    plan: &SweepPlan,
    dir: &SweepDir,
    indices: &[usize],
    stop: &AtomicBool,
) -> Result<bool> {
    // Nothing to train: do not load the model.
    let todo = indices.iter().any(|&i| {
        matches!(dir.next(i), Next::Start | Next::Resume(_)) || eval_pending(plan, dir, i)
    });
    if !todo {
        for &i in indices {
            run_planned_report(args.json, plan, dir, i);
        }
        return Ok(false);
    }
    let mut clip = LazyClip::new(
        plan.eval.as_ref().map(|e| e.clip().to_string()),
        parse_device(&ws.config.device)?,
    );
    // A missing CLIP model fails now, not after the first run.
    clip.load()?;
    let sd = ws.load_model()?;
    let tty = std::io::stderr().is_terminal() && !args.json;
    let (mut total, mut eta) = (0u64, Eta::new(0));
    let mut failed = false;
    let count = indices.len();
    for (n, &i) in indices.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let outcome = run_planned(&sd, ws, plan, dir, &mut clip, i, |ev| {
            report(args.json, n, count, ev);
            if let SweepEvent::Train { event, .. } = ev {
                match event {
                    TrainEvent::Started {
                        total_steps,
                        start_step,
                        ..
                    } => {
                        total = *total_steps;
                        eta = Eta::new(*start_step);
                    }
                    TrainEvent::Step(m) if tty => {
                        eta.observe(m.step, Instant::now());
                        eprint!("\r{}   ", progress_line(m, total, &eta));
                        let _ = std::io::stderr().flush();
                    }
                    TrainEvent::Finished(_) if tty => eprintln!(),
                    _ => {}
                }
            }
            if stop.load(Ordering::SeqCst) {
                TrainControl::Stop
            } else {
                TrainControl::Continue
            }
        })?;
        failed |= outcome.state == RunState::Failed && !outcome.interrupted;
        if outcome.interrupted {
            break;
        }
    }
    Ok(failed)
}

/// Reports a planned run that needs no work (`Skipped`), without the model.
fn run_planned_report(json: bool, plan: &SweepPlan, dir: &SweepDir, i: usize) {
    let run = &plan.runs[i];
    let (id, state) = match dir.next(i) {
        Next::Done(id, s) => (id, s),
        Next::Busy(id) => (id, RunState::Running),
        _ => return,
    };
    report(
        json,
        i,
        plan.runs.len(),
        &SweepEvent::Skipped {
            run,
            run_id: &id,
            state,
        },
    );
}

/// One line per run event: JSON on stdout, or text (starts on stderr, ends
/// on stdout).
fn report(json: bool, n: usize, count: usize, ev: &SweepEvent) {
    if json {
        let line = match ev {
            SweepEvent::Skipped { run, run_id, state } => {
                serde_json::json!({"event": "run_skipped", "index": run.index, "run": run_id, "status": state})
            }
            SweepEvent::Starting { run, resume } => {
                serde_json::json!({"event": "run_started", "index": run.index, "options": run.key(), "resume": resume})
            }
            SweepEvent::Ended {
                run,
                run_id,
                state,
                error,
            } => {
                serde_json::json!({"event": "run_ended", "index": run.index, "run": run_id, "status": state, "error": error})
            }
            SweepEvent::Evaluating { run, run_id } => {
                serde_json::json!({"event": "eval_started", "index": run.index, "run": run_id})
            }
            SweepEvent::Evaluated { run, report } => {
                serde_json::json!({"event": "eval_done", "index": run.index, "run": report.run, "fidelity": report.fidelity, "text_alignment": report.text_alignment, "diversity": report.diversity})
            }
            SweepEvent::Train { .. } => return,
        };
        println!("{line}");
        return;
    }
    let at = format!("[{}/{count}]", n + 1);
    match ev {
        SweepEvent::Skipped { run, run_id, state } => {
            println!("{at} #{} {state} ({run_id}): skipped", run.index)
        }
        SweepEvent::Starting { run, resume } => {
            // A one-run sweep (`train --slurm`) sets no options of its own.
            let key = match run.key() {
                k if k.is_empty() => String::new(),
                k => format!(" {k}"),
            };
            match resume {
                Some(id) => eprintln!("{at} #{}{key}: resuming run {id}", run.index),
                None => eprintln!("{at} #{}{key}: new run", run.index),
            }
        }
        SweepEvent::Ended {
            run,
            run_id,
            state,
            error,
        } => {
            let id = run_id.unwrap_or("-");
            match error {
                Some(e) => println!("{at} #{} {state} ({id}): {e}", run.index),
                None => println!("{at} #{} {state} ({id})", run.index),
            }
        }
        SweepEvent::Evaluating { run, .. } => eprintln!("{at} #{} evaluating", run.index),
        SweepEvent::Evaluated { run, report } => println!(
            "{at} #{} CLIP-I {:.3} CLIP-T {:.3}",
            run.index, report.fidelity, report.text_alignment
        ),
        SweepEvent::Train { .. } => {}
    }
}

/// `--jobs N`: up to N processes of this binary at once, each `--only INDEX`
/// (exactly what an array job's task runs). Returns whether any failed.
fn in_processes(
    args: &SweepArgs,
    plan: &SweepPlan,
    dir: &SweepDir,
    indices: &[usize],
    stop: &AtomicBool,
) -> Result<bool> {
    let exe = std::env::current_exe()?;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    let per_job = (threads / args.jobs).max(1);
    let mut queue: std::collections::VecDeque<usize> = indices
        .iter()
        .copied()
        .filter(|&i| {
            let work =
                matches!(dir.next(i), Next::Start | Next::Resume(_)) || eval_pending(plan, dir, i);
            if !work {
                run_planned_report(args.json, plan, dir, i);
            }
            work
        })
        .collect();
    let mut running: Vec<(usize, std::process::Child)> = Vec::new();
    let mut failed = false;
    let mut forwarded = false;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && !forwarded {
            forwarded = true;
            // Children of a terminal get Ctrl-C themselves; a signal sent to
            // this process alone (a scheduler's) is passed on.
            for (_, c) in &running {
                terminate(c.id());
            }
        }
        while !stopping && running.len() < args.jobs {
            let Some(i) = queue.pop_front() else { break };
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("sweep")
                .arg(&args.file)
                .arg("-w")
                .arg(&args.workspace)
                .arg("--only")
                .arg(i.to_string())
                .arg("--no-results")
                .env("RAYON_NUM_THREADS", per_job.to_string());
            if args.json {
                cmd.arg("--json");
            }
            running.push((i, cmd.spawn()?));
        }
        if running.is_empty() {
            break;
        }
        let mut still = Vec::new();
        for (i, mut c) in running {
            match c.try_wait()? {
                Some(status) => {
                    if !status.success() && !stopping {
                        eprintln!("run #{i}: its process exited with {status}");
                        failed = true;
                    }
                }
                None => still.push((i, c)),
            }
        }
        running = still;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(failed)
}

/// Asks process `pid` (a child this sweep started) to stop as Ctrl-C would.
fn terminate(pid: u32) {
    #[cfg(unix)]
    // SAFETY: sending a signal to a child process of ours by its id.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    #[cfg(not(unix))]
    let _ = pid;
}
