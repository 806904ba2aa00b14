//! The training loop: set-up ([`Session::start`]), one optimiser step
//! ([`Session::step`]), checkpoints and previews, and the finish
//! ([`Session::finish`]); [`train`] drives them and reports events.
//!
//! A run lives in a [`RunDir`]: `config.toml` (resolved), `metrics.jsonl` (one
//! line per step), checkpoints (vectors, AdamW moments, EMA, RNG state, step)
//! and, when done, the pair `<name>.safetensors` + `<name>-neg.safetensors`
//! (also copied to the concept folder). Every random draw comes from one
//! seeded [`Rng`] whose state is in the checkpoint, so a resumed run continues
//! bit for bit.
//!
//! A session holds the run's `lock` while it trains and writes `end.json`
//! (finished, stopped, diverged or failed) as it ends, so anyone reading the
//! folder can tell a live run from one whose process is gone
//! ([`crate::concept::runstate`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adapters::{AdapterTraining, Branch};
use super::data::{load_references, Reference};
use super::init::{initial_vectors, InitMode};
use super::schedule::LrSchedule;
use super::template::{fill, template_lines};
use super::{
    clip_grad_norm_blocks, cpt_loss, AdamW, AdamWConfig, CfgSpec, ConceptPrompts, CptBatch,
    TrainConfig, TrainError,
};
pub use crate::concept::rundir::StepMetrics;
use crate::concept::rundir::{lora_paths, unix_now, MetricsWriter, RunDir};
use crate::concept::Method;
use crate::concept::{save_embedding, Concept, EmbeddingMeta, EndKind, EndRecord, RunLock};
use crate::rng::Rng;
use crate::sd::lora::{self, Targets};
use crate::sd::lora_file::save_kohya;
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
    /// The concept's preset when the run started (runs from before it was
    /// recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preset: Option<String>,
    pos_vectors: usize,
    neg_vectors: usize,
    init_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    neg_init_text: Option<String>,
    references: Vec<String>,
    train: TrainConfig,
}

struct State {
    pos: Var,
    neg: Var,
    opt_pos: AdamW,
    opt_neg: AdamW,
    ema: Option<(Tensor, Tensor)>,
    /// DreamArtist++'s two LoRA networks and their optimiser state.
    adapters: Option<AdapterTraining>,
    rng: Rng,
    step: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Trains (or resumes) a concept. The callback sees every event and may stop
/// the run (a checkpoint is then saved).
pub fn train(
    sd: &StableDiffusion,
    ws: &Workspace,
    req: &TrainRequest,
    mut on_event: impl FnMut(&TrainEvent) -> TrainControl,
) -> Result<TrainOutcome, TrainError> {
    let mut session = Session::start(sd, ws, req)?;
    on_event(&TrainEvent::Started {
        run_id: session.run.id().to_string(),
        run_dir: session.run.path().to_path_buf(),
        start_step: session.st.step,
        total_steps: session.cfg.steps,
    });
    let interrupted = match drive(&mut session, &mut on_event) {
        Ok(i) => i,
        Err(e) => {
            session.record_end(ended_by(&e), Some(e.to_string()));
            return Err(e);
        }
    };
    let outcome = session.finish(interrupted)?;
    on_event(&TrainEvent::Finished(outcome.clone()));
    Ok(outcome)
}

/// Steps until the total or a stop; whether it was stopped before the total.
fn drive(
    session: &mut Session<'_>,
    on_event: &mut impl FnMut(&TrainEvent) -> TrainControl,
) -> Result<bool, TrainError> {
    while !session.done() {
        let m = session.step()?;
        let step = m.step;
        let mut control = on_event(&TrainEvent::Step(m));
        if session.preview_due() {
            let (path, prompt) = session.render_preview()?;
            let c = on_event(&TrainEvent::Sample {
                step,
                path,
                prompt,
                seed: session.cfg.sample_seed,
            });
            if c != TrainControl::Continue {
                control = c;
            }
        }
        if session.checkpoint_due(control) {
            let path = session.save_checkpoint()?;
            on_event(&TrainEvent::Checkpoint { step, path });
        }
        if control == TrainControl::Stop && !session.done() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How an error ends a session in `end.json`.
fn ended_by(e: &TrainError) -> EndKind {
    match e {
        TrainError::NonFinite { .. } => EndKind::Diverged,
        _ => EndKind::Failed,
    }
}

/// The run `req` asks for: a new one, or the resumed one with its recorded
/// options (the step count from the request) and the checkpoint to load.
fn open_run(
    concept_dir: &Path,
    req: &TrainRequest,
) -> Result<(RunDir, TrainConfig, Option<PathBuf>), TrainError> {
    let Some(which) = &req.resume else {
        let run = RunDir::create(concept_dir).map_err(io_err(&RunDir::root(concept_dir)))?;
        return Ok((run, req.config.clone(), None));
    };
    let run = RunDir::find(&req.concept.name, concept_dir, which)?;
    let cfg_path = run.config_path();
    let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let rc: RunConfig = toml::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: cfg_path.clone(),
        message: e.to_string(),
    })?;
    let (_, cp) = run
        .latest_checkpoint()
        .ok_or_else(|| TrainError::NoCheckpoint {
            run: run.id().to_string(),
        })?;
    let mut cfg = rc.train;
    cfg.steps = req.config.steps;
    Ok((run, cfg, Some(cp)))
}

/// A run in progress: everything one step needs, resolved once.
struct Session<'a> {
    sd: &'a StableDiffusion,
    concept: &'a Concept,
    concept_dir: PathBuf,
    cfg: TrainConfig,
    cfg_spec: CfgSpec,
    is_ti: bool,
    schedule: LrSchedule,
    /// The adapters' learning rate (DreamArtist++).
    lora_schedule: Option<LrSchedule>,
    lines: Vec<String>,
    refs: Vec<Reference>,
    words: [PseudoWord; 2],
    run: RunDir,
    /// Held while the session lives (dropped with it).
    _lock: RunLock,
    metrics: MetricsWriter,
    st: State,
    base_model_hash: String,
    last_loss: Option<f64>,
}

impl<'a> Session<'a> {
    /// Validates the options, opens (or creates) the run folder, loads the
    /// references and the starting state (initial vectors or a checkpoint).
    fn start(
        sd: &'a StableDiffusion,
        ws: &Workspace,
        req: &'a TrainRequest,
    ) -> Result<Self, TrainError> {
        let concept_dir = ws.concept_dir(&req.concept.name);
        let (run, cfg, resume_from) = open_run(&concept_dir, req)?;
        let fresh = resume_from.is_none();
        let folder = run.clone();
        let lock = RunLock::acquire(&run).inspect_err(|_| {
            if fresh {
                let _ = std::fs::remove_dir_all(folder.path());
            }
        })?;
        Self::prepare(sd, ws, req, run, lock, cfg, resume_from).inspect_err(|_| {
            // A new run refused before its config.toml: leave no empty folder
            // for `--resume latest` to trip over.
            if fresh && !folder.config_path().exists() {
                let _ = std::fs::remove_dir_all(folder.path());
            }
        })
    }

    fn prepare(
        sd: &'a StableDiffusion,
        ws: &Workspace,
        req: &'a TrainRequest,
        run: RunDir,
        lock: RunLock,
        cfg: TrainConfig,
        resume_from: Option<PathBuf>,
    ) -> Result<Self, TrainError> {
        let concept = &req.concept;
        let concept_dir = ws.concept_dir(&concept.name);

        let method = cfg.method().map_err(TrainError::Config)?;
        let cfg_spec: CfgSpec = match method {
            // Textual Inversion is the guided loss at cfg 1.
            Method::TextualInversion => CfgSpec::Constant(1.0),
            _ => cfg.train_cfg.parse().map_err(TrainError::Config)?,
        };
        let targets: Targets = cfg.lora_targets.parse().map_err(TrainError::Config)?;
        let lora_schedule = if method.has_adapters() {
            if cfg.lora_rank == 0 || cfg.lora_rank > MAX_LORA_RANK {
                return Err(TrainError::Config(format!(
                    "lora_rank {} must be between 1 and {MAX_LORA_RANK}",
                    cfg.lora_rank
                )));
            }
            if !(cfg.lora_alpha.is_finite() && cfg.lora_alpha > 0.0) {
                return Err(TrainError::Config(format!(
                    "lora_alpha {} must be a positive number",
                    cfg.lora_alpha
                )));
            }
            Some(
                LrSchedule::parse(&cfg.lora_lr, &cfg.lr_schedule, cfg.warmup_steps, cfg.steps)
                    .map_err(|e| TrainError::Config(format!("lora_lr: {e}")))?,
            )
        } else {
            None
        };
        if let Some(g) = cfg.min_snr_gamma {
            if !(g.is_finite() && g > 0.0) {
                return Err(TrainError::Config(format!(
                    "min_snr_gamma {g} must be a positive number (5 is usual)"
                )));
            }
        }
        let lowest = match cfg_spec {
            CfgSpec::Constant(g) => g,
            CfgSpec::Dynamic { lo, hi, .. } => lo.min(hi),
        };
        if lowest < 0.0 {
            return Err(TrainError::Config(format!(
                "train_cfg `{}` goes below 0; use 1 for Textual Inversion or the method's 3-5",
                cfg.train_cfg
            )));
        }
        let schedule = LrSchedule::parse(&cfg.lr, &cfg.lr_schedule, cfg.warmup_steps, cfg.steps)
            .map_err(TrainError::Config)?;
        let lines = template_lines(&cfg.template, &ws.root).map_err(TrainError::Config)?;
        let init_mode: InitMode = cfg.init_mode.parse().map_err(TrainError::Config)?;
        check_limits(sd, concept, &cfg)?;
        let native = sd.native_size();
        let size = cfg.size.map_or((native, native), |s| s.dims());
        let refs = load_references(sd, &concept.reference_paths(ws), size)?;

        // Positive word first, as the stacked matrix.
        let words = [
            PseudoWord {
                name: concept.positive_word(),
                vectors: concept.pos_vectors,
            },
            PseudoWord {
                name: concept.negative_word(),
                vectors: concept.neg_vectors,
            },
        ];
        let adam = AdamWConfig {
            beta1: cfg.betas[0],
            beta2: cfg.betas[1],
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        };
        let adapters = method.has_adapters().then_some(&targets);
        let st = match &resume_from {
            None => {
                let st = initial_state(sd, concept, &cfg, init_mode, adam, adapters)?;
                let rc = RunConfig {
                    concept: concept.name.clone(),
                    model: ws.config.model.clone(),
                    preset: Some(concept.preset.clone()),
                    pos_vectors: concept.pos_vectors,
                    neg_vectors: concept.neg_vectors,
                    init_text: concept.init_text.clone(),
                    neg_init_text: concept.neg_init_text.clone(),
                    references: concept.references.clone(),
                    train: cfg.clone(),
                };
                let cfg_path = run.config_path();
                let text =
                    toml::to_string_pretty(&rc).map_err(|e| TrainError::Config(e.to_string()))?;
                write_atomic(&cfg_path, text.as_bytes()).map_err(io_err(&cfg_path))?;
                st
            }
            Some(cp) => load_checkpoint(cp, adam, sd, adapters, &cfg)?,
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
        if resume_from.is_some() {
            run.truncate_metrics(st.step)
                .map_err(io_err(&run.metrics_path()))?;
        }
        let metrics = run.metrics_writer().map_err(io_err(&run.metrics_path()))?;
        // Live again: how an earlier session ended no longer describes it.
        run.clear_end().map_err(io_err(&run.end_path()))?;
        Ok(Self {
            sd,
            concept,
            concept_dir,
            is_ti: cfg_spec.is_plain_ti(),
            cfg,
            cfg_spec,
            schedule,
            lora_schedule,
            lines,
            refs,
            words,
            run,
            _lock: lock,
            metrics,
            st,
            base_model_hash: sd.model_hash(),
            last_loss: None,
        })
    }

    fn done(&self) -> bool {
        self.st.step >= self.cfg.steps
    }

    /// The divergence error for `step`: names the last good checkpoint.
    fn diverged(&self, step: u64, value: f64) -> TrainError {
        TrainError::NonFinite {
            step,
            value,
            checkpoint: self
                .run
                .latest_checkpoint()
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_else(|| "none yet".into()),
        }
    }

    fn tokenize(&self, s: &str) -> Tokens {
        self.sd.tokenize(s, &self.words)
    }

    /// The prompt pairs of a micro-batch's (reference, template line) picks.
    fn prompts(&self, picks: &[(usize, usize)]) -> Vec<ConceptPrompts> {
        let (pos_word, neg_word) = (&self.words[0].name, &self.words[1].name);
        picks
            .iter()
            .map(|(ri, li)| {
                let fw = self.refs[*ri].caption.as_deref();
                let neg_fw = if self.cfg.filewords_positive_only {
                    None
                } else {
                    fw
                };
                ConceptPrompts {
                    positive: self.tokenize(&fill(&self.lines[*li], pos_word, fw)),
                    negative: self.tokenize(&fill(&self.lines[*li], neg_word, neg_fw)),
                }
            })
            .collect()
    }

    /// One optimiser step over `grad_accum` micro-batches; appends its metrics line.
    fn step(&mut self) -> Result<StepMetrics, TrainError> {
        let started = Instant::now();
        let step = self.st.step + 1;
        let lr = self.schedule.at(step);
        let lr_neg = lr * self.cfg.neg_lr_weight;
        let num_train = self.sd.schedule.num_train_timesteps() as u64;
        let mut acc_pos = self.st.pos.zeros_like()?;
        let mut acc_neg = self.st.neg.zeros_like()?;
        let (mut loss_sum, mut mse_sum, mut rec_sum) = (0f64, 0f64, 0f64);
        for _ in 0..self.cfg.grad_accum {
            let mb = draw_batch(
                &mut self.st.rng,
                &self.refs,
                &self.lines,
                self.cfg.batch_size,
                self.cfg.flip,
                self.cfg.vae_sample,
                num_train,
                &self.sd.device,
            )?;
            let prompts = self.prompts(&mb.picks);
            // DreamArtist++: the adapters act in this forward and backward.
            let scope = self.st.adapters.as_ref().map(|a| a.scope(self.is_ti));
            let _adapters = lora::enter(scope.clone());
            let batch = CptBatch {
                z0: &mb.z0,
                noise: &mb.noise,
                timesteps: &mb.timesteps,
                image: Some(&mb.image),
                mask: mb.mask.as_ref(),
                recompute: self.cfg.recompute,
                min_snr_gamma: self.cfg.min_snr_gamma,
            };
            let loss = cpt_loss(
                self.sd,
                &prompts,
                self.st.pos.as_tensor(),
                self.st.neg.as_tensor(),
                &self.cfg_spec,
                self.cfg.rec_weight,
                &batch,
            )?;
            let value = loss.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(self.diverged(step, value));
            }
            loss_sum += value;
            mse_sum += loss.mse.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if let Some(r) = &loss.rec {
                rec_sum += r.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
            let scaled = (loss.total / self.cfg.grad_accum as f64)?;
            let mut grads = scaled.backward()?;
            if let (Some(scope), Some(adapters)) = (&scope, self.st.adapters.as_mut()) {
                scope.merge_side_grads(&mut grads)?;
                adapters.accumulate(&grads)?;
            }
            if let Some(g) = grads.get(self.st.pos.as_tensor()) {
                acc_pos = (acc_pos + g)?;
            }
            if let Some(g) = grads.get(self.st.neg.as_tensor()) {
                acc_neg = (acc_neg + g)?;
            }
        }
        let widths = self.sd.text_widths();
        let clip = self.cfg.clip_grad_norm;
        let (g_pos, norm_pos) = clip_grad_norm_blocks(&acc_pos, &widths, clip)?;
        let (g_neg, norm_neg) = clip_grad_norm_blocks(&acc_neg, &widths, clip)?;
        for norm in [norm_pos, norm_neg] {
            if !norm.is_finite() {
                return Err(self.diverged(step, norm));
            }
        }
        self.st.opt_pos.update(&self.st.pos, &g_pos, lr)?;
        if !self.is_ti {
            self.st.opt_neg.update(&self.st.neg, &g_neg, lr_neg)?;
        }
        let mut magnitude = (self.st.pos.abs()?.sum_all()? + self.st.neg.abs()?.sum_all()?)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        if let (Some(adapters), Some(sched)) = (self.st.adapters.as_mut(), &self.lora_schedule) {
            let lora_lr = sched.at(step);
            let lora_lr_neg = (!self.is_ti).then_some(lora_lr * self.cfg.neg_lr_weight);
            for norm in adapters.update(lora_lr, lora_lr_neg, clip)? {
                if !norm.is_finite() {
                    return Err(self.diverged(step, norm));
                }
            }
            magnitude += adapters.magnitude()?;
        }
        if !magnitude.is_finite() || magnitude > 1e12 {
            return Err(self.diverged(step, magnitude));
        }
        if let Some((ep, en)) = self.st.ema.as_mut() {
            let cfg = &self.cfg;
            // A matrix without a decay of its own follows its live vectors.
            let decay_pos = cfg.ema_decay.unwrap_or(0.0);
            let decay_neg = cfg.ema_decay_neg.or(cfg.ema_decay).unwrap_or(0.0);
            // Detached: the average must not chain a gradient graph across steps.
            *ep = ((&*ep * decay_pos)? + (self.st.pos.as_tensor().detach() * (1.0 - decay_pos))?)?;
            *en = ((&*en * decay_neg)? + (self.st.neg.as_tensor().detach() * (1.0 - decay_neg))?)?;
            let every_pos = cfg.ema_replace_every;
            let every_neg = cfg.ema_replace_every_neg.unwrap_or(every_pos);
            if every_pos > 0 && step % every_pos == 0 {
                self.st.pos.set(ep)?;
            }
            if every_neg > 0 && step % every_neg == 0 {
                self.st.neg.set(en)?;
            }
            if let Some(adapters) = self.st.adapters.as_mut() {
                adapters.update_ema(
                    [decay_neg, decay_pos],
                    [
                        every_neg > 0 && step % every_neg == 0,
                        every_pos > 0 && step % every_pos == 0,
                    ],
                )?;
            }
        }
        self.st.step = step;
        let k = self.cfg.grad_accum as f64;
        let m = StepMetrics {
            step,
            loss: loss_sum / k,
            mse: mse_sum / k,
            rec: (self.cfg.rec_weight > 0.0).then_some(rec_sum / k),
            lr,
            lr_neg: if self.is_ti { 0.0 } else { lr_neg },
            grad_norm_pos: norm_pos,
            grad_norm_neg: norm_neg,
            it_s: 1.0 / started.elapsed().as_secs_f64().max(1e-9),
        };
        self.last_loss = Some(m.loss);
        self.metrics
            .append(&m)
            .map_err(io_err(&self.run.metrics_path()))?;
        Ok(m)
    }

    fn preview_due(&self) -> bool {
        let every = self.cfg.sample_every;
        every > 0 && (self.st.step % every == 0 || self.st.step == self.cfg.steps)
    }

    fn checkpoint_due(&self, control: TrainControl) -> bool {
        let every = self.cfg.checkpoint_every;
        (every > 0 && self.st.step % every == 0) || control != TrainControl::Continue || self.done()
    }

    fn save_checkpoint(&self) -> Result<PathBuf, TrainError> {
        save_checkpoint(&self.run.checkpoint_path(self.st.step), &self.st)
    }

    fn render_preview(&self) -> Result<(PathBuf, String), TrainError> {
        render_preview(
            self.sd,
            &self.cfg,
            self.concept,
            &self.st,
            &self.run,
            &self.base_model_hash,
        )
    }

    fn meta(&self, name: String) -> EmbeddingMeta {
        EmbeddingMeta {
            name,
            step: self.st.step,
            base_model: self.sd.name.clone(),
            base_model_hash: self.base_model_hash.clone(),
            pos_vectors: self.concept.pos_vectors,
            neg_vectors: self.concept.neg_vectors,
            widths: self.sd.text_widths(),
            run: self.run.id().to_string(),
        }
    }

    /// Writes `end.json` (best effort: a run without one reads as crashed,
    /// which is still not live).
    fn record_end(&self, outcome: EndKind, message: Option<String>) {
        let _ = self.run.write_end(&EndRecord {
            outcome,
            step: self.st.step,
            total_steps: self.cfg.steps,
            loss: self.last_loss,
            ended: unix_now(),
            message,
        });
    }

    /// Writes the run's pair and the concept's ([`Session::write_pairs`]),
    /// then records how the session ended.
    fn finish(mut self, interrupted: bool) -> Result<TrainOutcome, TrainError> {
        let result = self.write_pairs(interrupted);
        match &result {
            Ok(_) if interrupted => self.record_end(EndKind::Stopped, None),
            Ok(_) => self.record_end(EndKind::Finished, None),
            Err(e) => self.record_end(EndKind::Failed, Some(e.to_string())),
        }
        result
    }

    /// Writes the DreamArtist++ adapters (EMA weights when EMA is on) as kohya
    /// LoRA files at `paths` (positive, negative); nothing without adapters.
    fn write_adapters(
        &self,
        paths: &(PathBuf, PathBuf),
    ) -> Result<Option<(PathBuf, Option<PathBuf>)>, TrainError> {
        let Some(adapters) = &self.st.adapters else {
            return Ok(None);
        };
        let sites = self.sd.linear_sites();
        let write = |branch: Branch, path: &Path, word: String| -> Result<(), TrainError> {
            let network = adapters.finished(branch)?;
            let extra = BTreeMap::from([
                (
                    "dreamartist_method".to_string(),
                    "dreamartist++".to_string(),
                ),
                (
                    "dreamartist_branch".to_string(),
                    match branch {
                        Branch::Positive => "positive",
                        Branch::Negative => "negative",
                    }
                    .to_string(),
                ),
                ("dreamartist_word".to_string(), word),
                ("dreamartist_step".to_string(), self.st.step.to_string()),
                ("dreamartist_run".to_string(), self.run.id().to_string()),
                (
                    "dreamartist_targets".to_string(),
                    self.cfg.lora_targets.clone(),
                ),
                ("ss_sd_model_name".to_string(), self.sd.name.clone()),
                (
                    "dreamartist_base_model_hash".to_string(),
                    self.base_model_hash.clone(),
                ),
            ]);
            save_kohya(path, &network, &sites, self.sd.family, &extra).map_err(|e| {
                TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }
            })
        };
        write(Branch::Positive, &paths.0, self.concept.positive_word())?;
        if self.is_ti {
            let _ = std::fs::remove_file(&paths.1);
            return Ok(Some((paths.0.clone(), None)));
        }
        write(Branch::Negative, &paths.1, self.concept.negative_word())?;
        Ok(Some((paths.0.clone(), Some(paths.1.clone()))))
    }

    /// Writes the run's pair (EMA weights when EMA is on) and, unless the run
    /// was interrupted, the concept's current pair.
    fn write_pairs(&mut self, interrupted: bool) -> Result<TrainOutcome, TrainError> {
        self.metrics
            .flush()
            .map_err(io_err(&self.run.metrics_path()))?;
        let (pos_out, neg_out) = match &self.st.ema {
            Some((ep, en)) => (ep.clone(), en.clone()),
            None => (
                self.st.pos.as_tensor().detach(),
                self.st.neg.as_tensor().detach(),
            ),
        };
        let name = &self.concept.name;
        let (pos_path, neg_path) = self.run.pair_paths(name);
        let pos_meta = self.meta(name.clone());
        let neg_meta = self.meta(format!("{name}-neg"));
        save_embedding(&pos_path, &pos_out, &pos_meta)?;
        let neg_path = if self.is_ti {
            None
        } else {
            save_embedding(&neg_path, &neg_out, &neg_meta)?;
            Some(neg_path)
        };
        let lora_files = self.write_adapters(&self.run.lora_paths(name))?;
        // The concept's current vectors follow its latest finished run.
        let (positive, negative) = if interrupted {
            (pos_path, neg_path)
        } else {
            // Runs finishing together (a sweep's parallel tasks) take turns.
            let _pair = crate::concept::pairlock::PairLock::acquire(&self.concept_dir)?;
            let cp = self.concept_dir.join(format!("{name}.safetensors"));
            let cn = self.concept_dir.join(format!("{name}-neg.safetensors"));
            let concept_lora = lora_paths(&self.concept_dir, name);
            if lora_files.is_some() {
                self.write_adapters(&concept_lora)?;
            } else {
                // A concept retrained without adapters must not keep trained
                // ones (imported adapters, with no run recorded, stay).
                for p in [&concept_lora.0, &concept_lora.1] {
                    let trained = crate::sd::lora_file::read_metadata(p)
                        .is_ok_and(|m| m.contains_key("dreamartist_run"));
                    if trained {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            save_embedding(&cp, &pos_out, &pos_meta)?;
            if self.is_ti {
                let _ = std::fs::remove_file(&cn);
                (cp, None)
            } else {
                save_embedding(&cn, &neg_out, &neg_meta)?;
                (cp, Some(cn))
            }
        };
        Ok(TrainOutcome {
            run_id: self.run.id().to_string(),
            run_dir: self.run.path().to_path_buf(),
            positive,
            negative,
            steps: self.st.step,
            loss: self.last_loss,
            interrupted,
        })
    }
}

/// Micro-batch samples per step; beyond this the activations alone exhaust
/// any machine this runs on.
pub const MAX_BATCH: usize = 64;
/// Micro-batches accumulated per step.
pub const MAX_GRAD_ACCUM: usize = 1024;
/// Vectors of one word: a word must fit in one 75-token chunk.
pub const MAX_VECTORS: usize = 75;
/// LoRA rank of DreamArtist++'s adapters (kohya's largest common ranks are 128–256).
pub const MAX_LORA_RANK: usize = 1024;

/// Refuses sizes and counts that would run away or abort on allocation,
/// before anything is loaded; each message names the limit.
fn check_limits(
    sd: &StableDiffusion,
    concept: &Concept,
    cfg: &TrainConfig,
) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Config(m));
    if cfg.steps == 0 {
        return bad("steps 0: a run needs at least 1 step".into());
    }
    if cfg.batch_size == 0 || cfg.batch_size > MAX_BATCH {
        return bad(format!(
            "batch_size {} must be between 1 and {MAX_BATCH}",
            cfg.batch_size
        ));
    }
    if cfg.grad_accum == 0 || cfg.grad_accum > MAX_GRAD_ACCUM {
        return bad(format!(
            "grad_accum {} must be between 1 and {MAX_GRAD_ACCUM}",
            cfg.grad_accum
        ));
    }
    for (which, n) in [
        ("pos_vectors", concept.pos_vectors),
        ("neg_vectors", concept.neg_vectors),
    ] {
        if n == 0 || n > MAX_VECTORS {
            return bad(format!(
                "{which} {n} must be between 1 and {MAX_VECTORS} (a word must fit in one 75-token chunk)"
            ));
        }
    }
    if crate::sd::SamplerKind::parse(&cfg.sample_sampler).is_none() {
        return bad(format!(
            "unknown sample_sampler `{}` (known: {})",
            cfg.sample_sampler,
            crate::sd::SamplerKind::known_names()
        ));
    }
    for (which, d) in [
        ("ema_decay", cfg.ema_decay),
        ("ema_decay_neg", cfg.ema_decay_neg),
    ] {
        if let Some(d) = d {
            if !(0.0..1.0).contains(&d) {
                return bad(format!("{which} {d} must be in [0, 1)"));
            }
        }
    }
    if let Some(size) = cfg.size {
        let max = crate::generate::pipeline::max_side(sd);
        let (w, h) = size.dims();
        for v in [w, h] {
            if v == 0 || v % 8 != 0 || v % sd.vae.downscale() != 0 || v > max {
                return bad(format!(
                    "size {size}: each side must be a multiple of 8 up to {max} (four times the model's native {})",
                    sd.native_size()
                ));
            }
        }
    }
    Ok(())
}

/// The starting vectors of a new run, their optimisers and EMA, and the
/// run's generator after the initial draws.
fn initial_state(
    sd: &StableDiffusion,
    concept: &Concept,
    cfg: &TrainConfig,
    init_mode: InitMode,
    adam: AdamWConfig,
    adapters: Option<&Targets>,
) -> Result<State, TrainError> {
    let mut rng = Rng::seed(cfg.seed);
    let (pos0, neg0) = initial_vectors(
        sd,
        (&concept.init_text, concept.neg_init_text.as_deref()),
        init_mode,
        cfg.init_noise,
        (concept.pos_vectors, concept.neg_vectors),
        &mut rng,
    )?;
    let pos = Var::from_tensor(&pos0)?;
    let neg = Var::from_tensor(&neg0)?;
    let ema = cfg.ema_decay.is_some() || cfg.ema_decay_neg.is_some();
    // Drawn after the vectors: the order of draws is part of resume.
    let adapters = match adapters {
        Some(targets) => Some(AdapterTraining::init(
            sd,
            targets,
            cfg.lora_rank,
            cfg.lora_alpha,
            adam,
            ema,
            &mut rng,
        )?),
        None => None,
    };
    Ok(State {
        adapters,
        opt_pos: AdamW::new(&pos, adam)?,
        opt_neg: AdamW::new(&neg, adam)?,
        ema: (cfg.ema_decay.is_some() || cfg.ema_decay_neg.is_some())
            .then(|| (pos0.clone(), neg0.clone())),
        pos,
        neg,
        rng,
        step: 0,
    })
}

/// Renders the preview prompt with the live vectors (its own seed: the
/// training RNG is untouched, so previews never change the run).
fn render_preview(
    sd: &StableDiffusion,
    cfg: &TrainConfig,
    concept: &Concept,
    st: &State,
    run: &RunDir,
    model_hash: &str,
) -> Result<(PathBuf, String), TrainError> {
    let step = st.step;
    use crate::generate::output::{save_sample, Destination};
    use crate::generate::{generate, GenerateRequest, StepControl, WordBank};
    let mut bank = WordBank::new();
    bank.insert(
        &concept.positive_word(),
        // Detached: a preview must not build a gradient graph (slow, and memory).
        st.pos.as_tensor().detach(),
        "live vectors",
    );
    let plain_ti = cfg.method().ok() == Some(Method::TextualInversion)
        || CfgSpec::is_plain_ti(&cfg.train_cfg.parse().map_err(TrainError::Config)?);
    if !plain_ti {
        bank.insert(
            &concept.negative_word(),
            st.neg.as_tensor().detach(),
            "live vectors",
        );
    }
    // DreamArtist++: the live adapters, applied as `generate` applies them.
    if let Some(a) = &st.adapters {
        use crate::generate::adapters::{AdapterSource, WordAdapters};
        let source = |b: Branch| Some(AdapterSource::Network(Arc::new(a.snapshot(b))));
        bank.insert_adapters(
            &concept.positive_word(),
            WordAdapters {
                positive: source(Branch::Positive),
                negative: if plain_ti {
                    None
                } else {
                    source(Branch::Negative)
                },
            },
        );
    }
    let prompt = cfg
        .sample_prompt
        .replace("[name]", &concept.positive_word());
    let sampler = crate::sd::SamplerKind::parse(&cfg.sample_sampler).ok_or_else(|| {
        TrainError::Config(format!(
            "unknown sample_sampler `{}` (known: {})",
            cfg.sample_sampler,
            crate::sd::SamplerKind::known_names()
        ))
    })?;
    let explicit_negative = !cfg.sample_negative.trim().is_empty();
    let req = GenerateRequest {
        prompt: prompt.clone(),
        negative: cfg
            .sample_negative
            .replace("[name]", &concept.negative_word()),
        auto_negative: !explicit_negative,
        sampler,
        seed: cfg.sample_seed as i64,
        steps: cfg.sample_steps.max(1),
        cfg: cfg.sample_cfg,
        width: cfg.size.map_or(0, |s| s.dims().0),
        height: cfg.size.map_or(0, |s| s.dims().1),
        ..Default::default()
    };
    let images =
        generate(sd, &bank, &req, |_| StepControl::Continue).map_err(|e| TrainError::Preview {
            step,
            message: e.to_string(),
        })?;
    let dir = run.samples_dir();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = run.sample_path(step);
    if let Some(g) = images.first() {
        save_sample(
            sd,
            model_hash,
            &req,
            g,
            Destination::File(&path),
            &[("step", &step.to_string())],
        )
        .map_err(|e| TrainError::Preview {
            step,
            message: format!("{e:#}"),
        })?;
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

fn save_checkpoint(path: &Path, st: &State) -> Result<PathBuf, TrainError> {
    let path = path.to_path_buf();
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
    let (adapter_tensors, adapter_meta) = match &st.adapters {
        Some(a) => a.checkpoint_entries(),
        None => (Vec::new(), Vec::new()),
    };
    tensors.extend(adapter_tensors.iter().map(|(n, t)| (n.as_str(), t)));
    let rng = st
        .rng
        .state()
        .iter()
        .map(|w| format!("{w:016x}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut meta = HashMap::from([
        ("format".to_string(), "dreamartist-checkpoint-1".to_string()),
        ("step".to_string(), st.step.to_string()),
        ("adam_step_pos".to_string(), st.opt_pos.step.to_string()),
        ("adam_step_neg".to_string(), st.opt_neg.step.to_string()),
        ("rng".to_string(), rng),
    ]);
    meta.extend(adapter_meta);
    save_safetensors_atomic(&path, &tensors, Some(meta)).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: format!("{e:#}"),
    })?;
    Ok(path)
}

fn load_checkpoint(
    path: &Path,
    adam: AdamWConfig,
    sd: &StableDiffusion,
    adapters: Option<&Targets>,
    cfg: &TrainConfig,
) -> Result<State, TrainError> {
    let device = &sd.device;
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
    let adapters = match adapters {
        Some(targets) => Some(
            AdapterTraining::from_checkpoint(
                sd,
                targets,
                &tensors,
                &meta,
                adam,
                cfg.ema_decay.is_some() || cfg.ema_decay_neg.is_some(),
                device,
            )
            .map_err(bad)?,
        ),
        None => None,
    };
    Ok(State {
        adapters,
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
