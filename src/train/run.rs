//! The training loop: runs folder, metrics, checkpoints, exact resume.
//!
//! A run lives in `concepts/<name>/runs/<run-id>/`: `config.toml` (resolved),
//! `metrics.jsonl` (one line per step), `checkpoints/step-NNNNNNNN.safetensors`
//! (vectors, AdamW moments, EMA, RNG state, step) and, when done, the pair
//! `<name>.safetensors` + `<name>-neg.safetensors` (also copied to the concept
//! folder). Every random draw comes from one seeded [`Rng`] whose state is in
//! the checkpoint, so a resumed run continues bit for bit.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::data::{load_references, Reference};
use super::init::{initial_vectors, InitMode};
use super::schedule::LrSchedule;
use super::template::{fill, template_lines};
use super::{
    clip_grad_norm_blocks, cpt_loss, AdamW, AdamWConfig, CfgSpec, ConceptPrompts, CptBatch,
    TrainConfig, TrainError,
};
use crate::concept::{save_embedding, Concept, EmbeddingMeta};
use crate::rng::Rng;
use crate::sd::{PseudoWord, StableDiffusion, Tokens};
use crate::workspace::fsutil::save_safetensors_atomic;
use crate::workspace::{write_atomic, Workspace};

/// Progress of a run, as the CLI and the TUI see it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Started {
        run_id: String,
        run_dir: PathBuf,
        start_step: u64,
        total_steps: u64,
    },
    Step(StepMetrics),
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    /// A preview image rendered with the current vectors.
    Sample {
        step: u64,
        path: PathBuf,
        prompt: String,
        seed: u64,
    },
    Finished(TrainOutcome),
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub mse: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rec: Option<f64>,
    pub lr: f64,
    pub lr_neg: f64,
    pub grad_norm_pos: f64,
    pub grad_norm_neg: f64,
    pub it_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub positive: PathBuf,
    /// `None` for a Textual Inversion baseline (train cfg 1): no negative word.
    pub negative: Option<PathBuf>,
    pub steps: u64,
    pub loss: Option<f64>,
    /// Stopped before the total (Ctrl-C / stop): a checkpoint was saved.
    pub interrupted: bool,
}

/// What the event callback asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainControl {
    Continue,
    /// Save a checkpoint now and go on.
    SaveCheckpoint,
    /// Save a checkpoint and return.
    Stop,
}

/// A training run to start or continue.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub concept: Concept,
    /// The resolved options (the concept's, with command-line overrides).
    pub config: TrainConfig,
    /// `Some("latest")` or `Some(run_id)` to continue a run up to `config.steps`.
    pub resume: Option<String>,
}

/// `config.toml` of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunConfig {
    concept: String,
    model: String,
    pos_vectors: usize,
    neg_vectors: usize,
    init_text: String,
    references: Vec<String>,
    train: TrainConfig,
}

struct State {
    pos: Var,
    neg: Var,
    opt_pos: AdamW,
    opt_neg: AdamW,
    ema: Option<(Tensor, Tensor)>,
    rng: Rng,
    step: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A sortable, readable run id from the current UTC time.
fn new_run_id(runs: &Path) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let base = format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    let mut id = base.clone();
    let mut n = 2;
    while runs.join(&id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// Run ids of a concept, oldest first.
pub fn list_runs(concept_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(concept_dir.join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("config.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    ids.sort();
    ids
}

/// The checkpoints of a run, by step.
pub fn list_checkpoints(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut cps: Vec<(u64, PathBuf)> = std::fs::read_dir(run_dir.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    cps.sort();
    cps
}

/// A short hash of the base model: A1111's legacy 8-hex "model hash" (SHA-256
/// of 64 KiB at offset 1 MiB) of the checkpoint file, or of the UNet weights
/// of a diffusers folder.
pub fn model_hash(sd: &StableDiffusion) -> String {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let candidates = if sd.root.is_file() {
        vec![sd.root.clone()]
    } else {
        [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ]
        .iter()
        .map(|n| sd.root.join("unet").join(n))
        .collect()
    };
    for p in candidates {
        let Ok(mut f) = std::fs::File::open(&p) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // Small files (tests, tiny models) have nothing at 1 MiB: hash their start.
        let offset = if len > 0x100000 { 0x100000 } else { 0 };
        let mut buf = Vec::with_capacity(0x10000);
        if f.seek(SeekFrom::Start(offset)).is_err()
            || f.take(0x10000).read_to_end(&mut buf).is_err()
        {
            continue;
        }
        let digest = Sha256::digest(&buf);
        return digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    }
    String::new()
}

/// Trains (or resumes) a concept. The callback sees every event and may stop
/// the run (a checkpoint is then saved).
pub fn train(
    sd: &StableDiffusion,
    ws: &Workspace,
    req: &TrainRequest,
    mut on_event: impl FnMut(&TrainEvent) -> TrainControl,
) -> Result<TrainOutcome, TrainError> {
    let concept = &req.concept;
    let concept_dir = ws.concept_dir(&concept.name);
    let runs_dir = concept_dir.join("runs");

    // Which run, and with which settings.
    let (run_id, mut cfg, resume_from) = match &req.resume {
        None => (new_run_id(&runs_dir), req.config.clone(), None),
        Some(which) => {
            let runs = list_runs(&concept_dir);
            let id = if which == "latest" {
                runs.last().cloned().ok_or_else(|| {
                    TrainError::Config(format!(
                        "concept `{}` has no runs to resume; train without --resume first",
                        concept.name
                    ))
                })?
            } else if runs.contains(which) {
                which.clone()
            } else {
                return Err(TrainError::Config(format!(
                    "run `{which}` not found for concept `{}` (runs: {})",
                    concept.name,
                    if runs.is_empty() {
                        "none".into()
                    } else {
                        runs.join(", ")
                    }
                )));
            };
            let run_dir = runs_dir.join(&id);
            let cfg_path = run_dir.join("config.toml");
            let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
            let rc: RunConfig = toml::from_str(&text).map_err(|e| TrainError::Checkpoint {
                path: cfg_path.clone(),
                message: e.to_string(),
            })?;
            let (step, cp) = list_checkpoints(&run_dir).pop().ok_or_else(|| {
                TrainError::Config(format!("run `{id}` has no checkpoint to resume from"))
            })?;
            let mut train = rc.train;
            train.steps = req.config.steps;
            (id, train, Some((step, cp)))
        }
    };
    cfg.steps = cfg.steps.max(1);
    let run_dir = runs_dir.join(&run_id);
    let cp_dir = run_dir.join("checkpoints");
    std::fs::create_dir_all(&cp_dir).map_err(io_err(&cp_dir))?;

    // Validated options.
    let cfg_spec: CfgSpec = cfg.train_cfg.parse().map_err(TrainError::Config)?;
    let is_ti = cfg_spec.is_plain_ti();
    let schedule = LrSchedule::parse(&cfg.lr, &cfg.lr_schedule, cfg.warmup_steps, cfg.steps)
        .map_err(TrainError::Config)?;
    let lines = template_lines(&cfg.template).map_err(TrainError::Config)?;
    let init_mode: InitMode = cfg.init_mode.parse().map_err(TrainError::Config)?;
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return Err(TrainError::Config(
            "batch_size and grad_accum must be at least 1".into(),
        ));
    }
    if concept.pos_vectors == 0 || concept.neg_vectors == 0 {
        return Err(TrainError::Config(
            "a concept needs at least one positive and one negative vector".into(),
        ));
    }
    let native = sd.native_size();
    let size = cfg.size.unwrap_or(native);
    let refs = load_references(sd, &concept.reference_paths(ws), size)?;

    // Words and prompt pairs: positive word first, as the stacked matrix.
    let pos_word = concept.positive_word();
    let neg_word = concept.negative_word();
    let words = [
        PseudoWord {
            name: pos_word.clone(),
            vectors: concept.pos_vectors,
        },
        PseudoWord {
            name: neg_word.clone(),
            vectors: concept.neg_vectors,
        },
    ];
    let tokenize = |s: &str| -> Tokens { sd.tokenize(s, &words) };

    let adam = AdamWConfig {
        beta1: cfg.betas[0],
        beta2: cfg.betas[1],
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    };
    let mut st = match &resume_from {
        None => {
            let mut rng = Rng::seed(cfg.seed);
            let (pos0, neg0) = initial_vectors(
                sd,
                &concept.init_text,
                init_mode,
                cfg.init_noise,
                (concept.pos_vectors, concept.neg_vectors),
                &mut rng,
            )?;
            let pos = Var::from_tensor(&pos0)?;
            let neg = Var::from_tensor(&neg0)?;
            let rc = RunConfig {
                concept: concept.name.clone(),
                model: ws.config.model.clone(),
                pos_vectors: concept.pos_vectors,
                neg_vectors: concept.neg_vectors,
                init_text: concept.init_text.clone(),
                references: concept.references.clone(),
                train: cfg.clone(),
            };
            let cfg_path = run_dir.join("config.toml");
            let text =
                toml::to_string_pretty(&rc).map_err(|e| TrainError::Config(e.to_string()))?;
            write_atomic(&cfg_path, text.as_bytes()).map_err(io_err(&cfg_path))?;
            State {
                opt_pos: AdamW::new(&pos, adam)?,
                opt_neg: AdamW::new(&neg, adam)?,
                ema: cfg.ema_decay.map(|_| (pos0.clone(), neg0.clone())),
                pos,
                neg,
                rng,
                step: 0,
            }
        }
        Some((_, cp)) => load_checkpoint(cp, adam, &sd.device)?,
    };
    if st.pos.dim(0)? != concept.pos_vectors || st.neg.dim(0)? != concept.neg_vectors {
        return Err(TrainError::Config(format!(
            "the checkpoint has {}+{} vectors but the concept asks for {}+{}",
            st.pos.dim(0)?,
            st.neg.dim(0)?,
            concept.pos_vectors,
            concept.neg_vectors
        )));
    }

    // Metrics: keep the lines up to the resumed step, then append.
    let metrics_path = run_dir.join("metrics.jsonl");
    if let Some((step, _)) = &resume_from {
        truncate_metrics(&metrics_path, *step)?;
    }
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(io_err(&metrics_path))?;

    on_event(&TrainEvent::Started {
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        start_step: st.step,
        total_steps: cfg.steps,
    });

    let base_model_hash = model_hash(sd);
    let meta = |name: String, step: u64| EmbeddingMeta {
        name,
        step,
        base_model: sd.name.clone(),
        base_model_hash: base_model_hash.clone(),
        pos_vectors: concept.pos_vectors,
        neg_vectors: concept.neg_vectors,
        widths: sd.text_widths(),
    };
    let num_train = sd.schedule.num_train_timesteps() as u64;
    let mut last_loss = None;
    let mut interrupted = false;
    while st.step < cfg.steps {
        let started = Instant::now();
        let step = st.step + 1;
        let lr = schedule.at(step);
        let lr_neg = lr * cfg.neg_lr_weight;
        let mut acc_pos = st.pos.zeros_like()?;
        let mut acc_neg = st.neg.zeros_like()?;
        let (mut loss_sum, mut mse_sum, mut rec_sum) = (0f64, 0f64, 0f64);
        for _ in 0..cfg.grad_accum {
            let mb = draw_batch(
                &mut st.rng,
                &refs,
                &lines,
                cfg.batch_size,
                cfg.flip,
                cfg.vae_sample,
                num_train,
                &sd.device,
            )?;
            let prompts: Vec<ConceptPrompts> = mb
                .picks
                .iter()
                .map(|(ri, li)| {
                    let fw = refs[*ri].caption.as_deref();
                    ConceptPrompts {
                        positive: tokenize(&fill(&lines[*li], &pos_word, fw)),
                        negative: tokenize(&fill(
                            &lines[*li],
                            &neg_word,
                            if cfg.filewords_positive_only {
                                None
                            } else {
                                fw
                            },
                        )),
                    }
                })
                .collect();
            let batch = CptBatch {
                z0: &mb.z0,
                noise: &mb.noise,
                timesteps: &mb.timesteps,
                image: Some(&mb.image),
                mask: mb.mask.as_ref(),
            };
            let loss = cpt_loss(
                sd,
                &prompts,
                st.pos.as_tensor(),
                st.neg.as_tensor(),
                &cfg_spec,
                cfg.rec_weight,
                &batch,
            )?;
            let value = loss.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                let checkpoint = list_checkpoints(&run_dir)
                    .pop()
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_else(|| "none yet".into());
                return Err(TrainError::NonFinite {
                    step,
                    value,
                    checkpoint,
                });
            }
            loss_sum += value;
            mse_sum += loss.mse.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if let Some(r) = &loss.rec {
                rec_sum += r.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
            let scaled = (loss.total / cfg.grad_accum as f64)?;
            let grads = scaled.backward()?;
            if let Some(g) = grads.get(st.pos.as_tensor()) {
                acc_pos = (acc_pos + g)?;
            }
            if let Some(g) = grads.get(st.neg.as_tensor()) {
                acc_neg = (acc_neg + g)?;
            }
        }
        let widths = sd.text_widths();
        let (g_pos, norm_pos) = clip_grad_norm_blocks(&acc_pos, &widths, cfg.clip_grad_norm)?;
        let (g_neg, norm_neg) = clip_grad_norm_blocks(&acc_neg, &widths, cfg.clip_grad_norm)?;
        if !norm_pos.is_finite() || !norm_neg.is_finite() {
            let checkpoint = list_checkpoints(&run_dir)
                .pop()
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_else(|| "none yet".into());
            let value = if norm_pos.is_finite() {
                norm_neg
            } else {
                norm_pos
            };
            return Err(TrainError::NonFinite {
                step,
                value,
                checkpoint,
            });
        }
        st.opt_pos.update(&st.pos, &g_pos, lr)?;
        if !is_ti {
            st.opt_neg.update(&st.neg, &g_neg, lr_neg)?;
        }
        let magnitude = (st.pos.abs()?.sum_all()? + st.neg.abs()?.sum_all()?)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        if !magnitude.is_finite() || magnitude > 1e12 {
            let checkpoint = list_checkpoints(&run_dir)
                .pop()
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_else(|| "none yet".into());
            return Err(TrainError::NonFinite {
                step,
                value: magnitude,
                checkpoint,
            });
        }
        if let (Some(decay), Some((ep, en))) = (cfg.ema_decay, st.ema.as_mut()) {
            // Detached: the average must not chain a gradient graph across steps.
            *ep = ((&*ep * decay)? + (st.pos.as_tensor().detach() * (1.0 - decay))?)?;
            *en = ((&*en * decay)? + (st.neg.as_tensor().detach() * (1.0 - decay))?)?;
            if cfg.ema_replace_every > 0 && step % cfg.ema_replace_every == 0 {
                st.pos.set(ep)?;
                st.neg.set(en)?;
            }
        }
        st.step = step;
        let k = cfg.grad_accum as f64;
        let m = StepMetrics {
            step,
            loss: loss_sum / k,
            mse: mse_sum / k,
            rec: (cfg.rec_weight > 0.0).then_some(rec_sum / k),
            lr,
            lr_neg: if is_ti { 0.0 } else { lr_neg },
            grad_norm_pos: norm_pos,
            grad_norm_neg: norm_neg,
            it_s: 1.0 / started.elapsed().as_secs_f64().max(1e-9),
        };
        last_loss = Some(m.loss);
        let line = serde_json::to_string(&m).map_err(|e| TrainError::Config(e.to_string()))?;
        writeln!(metrics, "{line}").map_err(io_err(&metrics_path))?;
        let mut control = on_event(&TrainEvent::Step(m));
        if cfg.sample_every > 0 && (step % cfg.sample_every == 0 || step == cfg.steps) {
            let (path, prompt) = render_preview(sd, &cfg, concept, &st, &run_dir, step)?;
            let c = on_event(&TrainEvent::Sample {
                step,
                path,
                prompt,
                seed: cfg.sample_seed,
            });
            if c != TrainControl::Continue {
                control = c;
            }
        }
        let periodic = cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0;
        let stop = control == TrainControl::Stop;
        if periodic || stop || control == TrainControl::SaveCheckpoint || step == cfg.steps {
            let path = save_checkpoint(&cp_dir, &st)?;
            on_event(&TrainEvent::Checkpoint { step, path });
        }
        if stop && step < cfg.steps {
            interrupted = true;
            break;
        }
    }
    metrics.flush().map_err(io_err(&metrics_path))?;

    // The finished (or interrupted) pair: EMA weights when EMA is on.
    let (pos_out, neg_out) = match &st.ema {
        Some((ep, en)) => (ep.clone(), en.clone()),
        None => (st.pos.as_tensor().detach(), st.neg.as_tensor().detach()),
    };
    let pos_path = run_dir.join(format!("{}.safetensors", concept.name));
    save_embedding(&pos_path, &pos_out, &meta(concept.name.clone(), st.step))?;
    let neg_path = if is_ti {
        None
    } else {
        let p = run_dir.join(format!("{}-neg.safetensors", concept.name));
        save_embedding(
            &p,
            &neg_out,
            &meta(format!("{}-neg", concept.name), st.step),
        )?;
        Some(p)
    };
    // The concept's current vectors follow its latest finished run.
    let (positive, negative) = if interrupted {
        (pos_path, neg_path)
    } else {
        let cp = concept_dir.join(format!("{}.safetensors", concept.name));
        let cn = concept_dir.join(format!("{}-neg.safetensors", concept.name));
        save_embedding(&cp, &pos_out, &meta(concept.name.clone(), st.step))?;
        if is_ti {
            let _ = std::fs::remove_file(&cn);
            (cp, None)
        } else {
            save_embedding(
                &cn,
                &neg_out,
                &meta(format!("{}-neg", concept.name), st.step),
            )?;
            (cp, Some(cn))
        }
    };
    let outcome = TrainOutcome {
        run_id,
        run_dir,
        positive,
        negative,
        steps: st.step,
        loss: last_loss,
        interrupted,
    };
    on_event(&TrainEvent::Finished(outcome.clone()));
    Ok(outcome)
}

/// Renders the preview prompt with the live vectors (its own seed: the
/// training RNG is untouched, so previews never change the run).
fn render_preview(
    sd: &StableDiffusion,
    cfg: &TrainConfig,
    concept: &Concept,
    st: &State,
    run_dir: &Path,
    step: u64,
) -> Result<(PathBuf, String), TrainError> {
    use crate::generate::{generate, GenerateRequest, StepControl, WordBank};
    let mut bank = WordBank::new();
    bank.insert(
        &concept.positive_word(),
        // Detached: a preview must not build a gradient graph (slow, and memory).
        st.pos.as_tensor().detach(),
        "live vectors",
    );
    if !CfgSpec::is_plain_ti(&cfg.train_cfg.parse().map_err(TrainError::Config)?) {
        bank.insert(
            &concept.negative_word(),
            st.neg.as_tensor().detach(),
            "live vectors",
        );
    }
    let prompt = cfg
        .sample_prompt
        .replace("[name]", &concept.positive_word());
    let req = GenerateRequest {
        prompt: prompt.clone(),
        seed: cfg.sample_seed as i64,
        steps: cfg.sample_steps.max(1),
        cfg: cfg.sample_cfg,
        width: cfg.size.unwrap_or(0),
        height: cfg.size.unwrap_or(0),
        ..Default::default()
    };
    let images = generate(sd, &bank, &req, |_| StepControl::Continue)
        .map_err(|e| TrainError::Config(format!("preview sample: {e}")))?;
    let dir = run_dir.join("samples");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!("step-{step:08}.png"));
    if let Some(g) = images.first() {
        let params = crate::generate::pipeline::a1111_parameters(&req, g, &sd.name, "", &[]);
        let bytes = crate::generate::png::encode_png(
            &g.image,
            &[("parameters", &params), ("step", &step.to_string())],
        )?;
        write_atomic(&path, &bytes).map_err(io_err(&path))?;
    }
    Ok((path, prompt))
}

struct MicroBatch {
    z0: Tensor,
    noise: Tensor,
    timesteps: Vec<usize>,
    image: Tensor,
    mask: Option<Tensor>,
    /// (reference index, template line) per sample.
    picks: Vec<(usize, usize)>,
}

/// Draws one micro-batch. The order of draws is part of the resume contract:
/// per sample, reference, flip, template line, timestep, the noise, then (with
/// `vae_sample`) the posterior sample's ε.
#[allow(clippy::too_many_arguments)]
fn draw_batch(
    rng: &mut Rng,
    refs: &[Reference],
    lines: &[String],
    batch: usize,
    flip: bool,
    vae_sample: bool,
    num_train: u64,
    device: &candle_core::Device,
) -> Result<MicroBatch, TrainError> {
    let mut z0 = Vec::with_capacity(batch);
    let mut noise = Vec::with_capacity(batch);
    let mut images = Vec::with_capacity(batch);
    let mut masks = Vec::with_capacity(batch);
    let mut timesteps = Vec::with_capacity(batch);
    let mut picks = Vec::with_capacity(batch);
    let any_mask = refs.iter().any(|r| r.mask.is_some());
    for _ in 0..batch {
        let ri = rng.below(refs.len() as u64) as usize;
        let flipped = flip && rng.coin();
        let li = rng.below(lines.len() as u64) as usize;
        let t = rng.below(num_train) as usize;
        let r = &refs[ri];
        let (lat, std, img, mask) = if flipped {
            (
                &r.latent_flipped,
                &r.latent_std_flipped,
                &r.image_flipped,
                &r.mask_flipped,
            )
        } else {
            (&r.latent, &r.latent_std, &r.image, &r.mask)
        };
        noise.push(rng.randn(lat.dims(), device)?);
        if vae_sample {
            let eps = rng.randn(lat.dims(), device)?;
            z0.push((lat + (std * eps)?)?);
        } else {
            z0.push(lat.clone());
        }
        images.push(img.clone());
        if any_mask {
            masks.push(match mask {
                Some(m) => m.clone(),
                None => {
                    let (_, _, h, w) = lat.dims4()?;
                    Tensor::ones((1, 1, h, w), DType::F32, device)?
                }
            });
        }
        timesteps.push(t);
        picks.push((ri, li));
    }
    Ok(MicroBatch {
        z0: Tensor::cat(&z0, 0)?,
        noise: Tensor::cat(&noise, 0)?,
        timesteps,
        image: Tensor::cat(&images, 0)?,
        mask: if any_mask {
            Some(Tensor::cat(&masks, 0)?)
        } else {
            None
        },
        picks,
    })
}

fn save_checkpoint(dir: &Path, st: &State) -> Result<PathBuf, TrainError> {
    let path = dir.join(format!("step-{:08}.safetensors", st.step));
    let mut tensors: Vec<(&str, &Tensor)> = vec![
        ("pos", st.pos.as_tensor()),
        ("neg", st.neg.as_tensor()),
        ("adam_m_pos", &st.opt_pos.m),
        ("adam_v_pos", &st.opt_pos.v),
        ("adam_m_neg", &st.opt_neg.m),
        ("adam_v_neg", &st.opt_neg.v),
    ];
    if let Some((ep, en)) = &st.ema {
        tensors.push(("ema_pos", ep));
        tensors.push(("ema_neg", en));
    }
    let rng = st
        .rng
        .state()
        .iter()
        .map(|w| format!("{w:016x}"))
        .collect::<Vec<_>>()
        .join(",");
    let meta = HashMap::from([
        ("format".to_string(), "dreamartist-checkpoint-1".to_string()),
        ("step".to_string(), st.step.to_string()),
        ("adam_step_pos".to_string(), st.opt_pos.step.to_string()),
        ("adam_step_neg".to_string(), st.opt_neg.step.to_string()),
        ("rng".to_string(), rng),
    ]);
    save_safetensors_atomic(&path, &tensors, Some(meta)).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: format!("{e:#}"),
    })?;
    Ok(path)
}

fn load_checkpoint(
    path: &Path,
    adam: AdamWConfig,
    device: &candle_core::Device,
) -> Result<State, TrainError> {
    let bad = |message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable ({e})")))?;
    let meta = md.metadata().clone().unwrap_or_default();
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(e.to_string()))?;
    let get = |k: &str| {
        tensors
            .get(k)
            .cloned()
            .ok_or_else(|| bad(format!("missing tensor `{k}`")))
    };
    let num = |k: &str| -> Result<u64, TrainError> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("missing metadata `{k}`")))
    };
    let words: Vec<u64> = meta
        .get("rng")
        .map(|s| {
            s.split(',')
                .filter_map(|w| u64::from_str_radix(w, 16).ok())
                .collect()
        })
        .unwrap_or_default();
    let rng: [u64; 4] = words
        .try_into()
        .map_err(|_| bad("bad `rng` state".into()))?;
    let pos = Var::from_tensor(&get("pos")?)?;
    let neg = Var::from_tensor(&get("neg")?)?;
    let ema = match (tensors.get("ema_pos"), tensors.get("ema_neg")) {
        (Some(p), Some(n)) => Some((p.clone(), n.clone())),
        _ => None,
    };
    Ok(State {
        opt_pos: AdamW {
            config: adam,
            m: get("adam_m_pos")?,
            v: get("adam_v_pos")?,
            step: num("adam_step_pos")?,
        },
        opt_neg: AdamW {
            config: adam,
            m: get("adam_m_neg")?,
            v: get("adam_v_neg")?,
            step: num("adam_step_neg")?,
        },
        pos,
        neg,
        ema,
        rng: Rng::from_state(rng),
        step: num("step")?,
    })
}

fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<StepMetrics>(l)
                .map(|m| m.step <= step)
                .unwrap_or(false)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes()).map_err(io_err(path))
}
