//! `dreamartist train`: headless training with a progress line or JSON events.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::TrainArgs;
use crate::concept::Concept;
use crate::train::eta::{format_eta, Eta};
use crate::train::{train, StepMetrics, TrainControl, TrainEvent, TrainRequest};
use crate::workspace::Workspace;

/// `[#####-----] 12/40 loss 0.1234 3.20 it/s ETA 0:09`: the terminal's
/// progress bar (`train`, and each run of a sweep).
pub(super) fn progress_line(m: &StepMetrics, total: u64, eta: &Eta) -> String {
    let width = 24usize;
    let filled = ((m.step as f64 / total.max(1) as f64) * width as f64) as usize;
    format!(
        "[{}{}] {}/{} loss {:.4} {:.2} it/s ETA {}",
        "#".repeat(filled.min(width)),
        "-".repeat(width - filled.min(width)),
        m.step,
        total,
        m.loss,
        m.it_s,
        format_eta(eta.remaining(total))
    )
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    let concept = Concept::load(&ws, &args.name)?;
    let cfg = config(&args, &concept)?;
    if args.slurm.slurm {
        return on_slurm(&args, &ws, &concept, &cfg);
    }
    train_here(args, ws, concept, cfg)
}

/// `train --slurm`: the run as a one-run sweep, submitted.
fn on_slurm(
    args: &TrainArgs,
    ws: &Workspace,
    concept: &Concept,
    cfg: &crate::concept::TrainConfig,
) -> Result<ExitCode> {
    if args.resume.is_some() {
        anyhow::bail!(
            "--resume with --slurm: a task resumes its own run after preemption by itself; \
             to continue a stopped run, train it here or resubmit its sweep (`dreamartist status` names it)"
        );
    }
    let (file, text) = super::slurm::train_sweep(ws, &concept.name, cfg)?;
    let plan = crate::sweep::SweepPlan::from_text(&file, text.clone(), ws)?;
    if args.slurm.dry_run {
        return super::slurm::submit(&args.slurm, ws, &plan, &[], args.json);
    }
    let dir = file.parent().unwrap_or(&file).to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    crate::fsutil::write_atomic(&file, text.as_bytes())
        .with_context(|| file.display().to_string())?;
    let result = super::slurm::submit(&args.slurm, ws, &plan, &[], args.json);
    // A refused submission leaves nothing behind.
    let submitted = crate::slurm::SlurmDir::of(&dir)
        .submissions()
        .is_ok_and(|s| !s.is_empty());
    if !submitted {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The concept's options with the command line's on top.
fn config(args: &TrainArgs, concept: &Concept) -> Result<crate::concept::TrainConfig> {
    let mut cfg = concept.train.clone();
    if let Some(v) = args.steps {
        cfg.steps = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = &args.lr {
        cfg.lr = v.clone();
    }
    if let Some(v) = &args.train_cfg {
        cfg.train_cfg = v.clone();
    }
    if let Some(v) = args.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = args.grad_accum {
        cfg.grad_accum = v;
    }
    if let Some(v) = args.neg_lr_weight {
        cfg.neg_lr_weight = v;
    }
    if let Some(v) = args.rec_weight {
        cfg.rec_weight = v;
    }
    if let Some(v) = &args.template {
        cfg.template = v.clone();
    }
    if let Some(v) = args.size {
        cfg.size = Some(crate::concept::TrainSize::Square(v));
    }
    if let (Some(w), Some(h)) = (args.width, args.height) {
        cfg.size = Some(crate::concept::TrainSize::WidthHeight([w, h]));
    }
    if let Some(v) = args.ema_decay {
        cfg.ema_decay = Some(v);
    }
    if let Some(v) = args.checkpoint_every {
        cfg.checkpoint_every = v;
    }
    if let Some(v) = args.sample_every {
        cfg.sample_every = v;
    }
    if let Some(v) = args.weight_decay {
        cfg.weight_decay = v;
    }
    if let Some(v) = args.clip_grad_norm {
        cfg.clip_grad_norm = v;
    }
    if args.vae_sample {
        cfg.vae_sample = true;
    }
    if args.recompute {
        cfg.recompute = true;
    }
    if let Some(v) = &args.method {
        cfg.method = v
            .parse::<crate::concept::Method>()
            .map_err(anyhow::Error::msg)?
            .name()
            .into();
    }
    if let Some(v) = args.lora_rank {
        cfg.lora_rank = v;
    }
    if let Some(v) = args.lora_alpha {
        cfg.lora_alpha = v;
    }
    if let Some(v) = &args.lora_lr {
        cfg.lora_lr = v.clone();
    }
    if let Some(v) = &args.lora_targets {
        cfg.lora_targets = v.clone();
    }
    if let Some(v) = args.min_snr_gamma {
        cfg.min_snr_gamma = Some(v);
    }
    Ok(cfg)
}

fn train_here(
    args: TrainArgs,
    ws: Workspace,
    concept: Concept,
    cfg: crate::concept::TrainConfig,
) -> Result<ExitCode> {
    let sd = ws.load_model()?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while saving falls through to the default handler.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let tty = std::io::stderr().is_terminal();
    let json = args.json;
    let mut total = 0u64;
    let mut eta = Eta::new(0);
    let req = TrainRequest {
        concept,
        config: cfg,
        resume: args.resume.clone(),
    };
    let outcome = train(&sd, &ws, &req, |ev| {
        if json {
            if let Ok(line) = serde_json::to_string(ev) {
                println!("{line}");
            }
        }
        match ev {
            TrainEvent::Started {
                total_steps,
                run_id,
                start_step,
                ..
            } => {
                total = *total_steps;
                eta = Eta::new(*start_step);
                if !json {
                    eprintln!("run {run_id}: steps {start_step}..{total_steps}");
                }
            }
            TrainEvent::Step(m) if !json && tty => {
                // The same estimate as the workbench's: warm-up steps left out.
                eta.observe(m.step, Instant::now());
                eprint!("\r{}   ", progress_line(m, total, &eta));
                let _ = std::io::stderr().flush();
            }
            TrainEvent::Checkpoint { step, path } if !json && !tty => {
                eprintln!("step {step}: checkpoint {}", path.display());
            }
            _ => {}
        }
        if stop.load(Ordering::SeqCst) {
            TrainControl::Stop
        } else {
            TrainControl::Continue
        }
    })?;
    if !json {
        if tty {
            eprintln!();
        }
        if outcome.interrupted {
            eprintln!(
                "stopped at step {}; resume with --resume {}",
                outcome.steps, outcome.run_id
            );
        }
        println!("positive: {}", outcome.positive.display());
        match &outcome.negative {
            Some(n) => println!("negative: {}", n.display()),
            None => println!("negative: none (train cfg 1: Textual Inversion baseline)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
