//! One-shot learning at the toy-world reference's setting, through the real
//! trainer: 400 steps × batch 4, AdamW lr 5e-3 (wd 0.01), grad-norm clip 1 per
//! matrix, 3 positive / 6 negative vectors initialised to the mean embedding of
//! the twelve colour and shape words plus small noise (the same init for both
//! methods at a seed), prompts `"a photo of <p>"` / `"a photo of <n>"`, a fresh
//! VAE posterior sample per step. Textual Inversion is train cfg 1 (no
//! negative word); DreamArtist is train cfg 3.

use crate::generate::adapters::{AdapterSource, WordAdapters};
use std::time::Instant;

use candle_core::Tensor;

use crate::concept::{load_embedding, Concept};
use crate::generate::WordBank;
use crate::rng::Rng;
use crate::sd::StableDiffusion;
use crate::train::init::{initial_vectors, InitMode};
use crate::train::{train, TrainConfig, TrainControl, TrainError, TrainRequest};
use crate::workspace::Workspace;

use super::protocol::{Phrasing, Subject};

/// The twelve colour and shape words whose mean embedding starts every vector.
pub const INIT_TEXT: &str =
    "red green blue yellow purple orange white black circle square triangle cross";

/// Std of the init noise around the mean embedding ("small noise"; the toy
/// model's token embeddings have a per-dimension std of about 0.1–0.2).
pub const INIT_NOISE: f64 = 0.01;

/// The written forms the benchmark uses for the two words.
pub const POS_WORD: &str = "<p>";
pub const NEG_WORD: &str = "<n>";

/// The two one-shot methods under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Textual Inversion: train cfg 1, empty negative prompt at sampling.
    TextualInversion,
    /// DreamArtist: train cfg 3, `"a photo of <n>"` as the negative prompt.
    DreamArtist,
}

impl Method {
    pub fn short(self) -> &'static str {
        match self {
            Method::TextualInversion => "ti",
            Method::DreamArtist => "da",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::TextualInversion => "Textual Inversion",
            Method::DreamArtist => "DreamArtist (pos + neg)",
        }
    }
}

/// The reference's training setting for `method` at training seed `seed`.
pub fn reference_config(method: Method, seed: u64) -> TrainConfig {
    TrainConfig {
        steps: 400,
        batch_size: 4,
        grad_accum: 1,
        lr: "0.005".into(),
        lr_schedule: "constant".into(),
        warmup_steps: 0,
        neg_lr_weight: 1.0,
        weight_decay: 0.01,
        betas: [0.9, 0.999],
        eps: 1e-8,
        clip_grad_norm: 1.0,
        train_cfg: match method {
            Method::TextualInversion => "1".into(),
            Method::DreamArtist => "3".into(),
        },
        rec_weight: 0.0,
        template: "a photo of [name]".into(),
        filewords_positive_only: false,
        flip: false,
        size: None,
        ema_decay: None,
        ema_replace_every: 0,
        checkpoint_every: 0,
        sample_every: 0,
        seed,
        init_mode: InitMode::Mean.to_string(),
        init_noise: INIT_NOISE,
        vae_sample: true,
        ..TrainConfig::default()
    }
}

/// A concept named `name` with the benchmark's vectors and init, trained with `config`.
pub fn concept(name: &str, reference: &str, config: TrainConfig) -> Concept {
    Concept {
        name: name.to_string(),
        references: vec![reference.to_string()],
        preset: "toy".into(),
        pos_vectors: 3,
        neg_vectors: 6,
        init_text: INIT_TEXT.into(),
        neg_init_text: None,
        class: None,
        train: config,
    }
}

/// A finished one-shot run.
#[derive(Debug, Clone)]
pub struct Trained {
    pub pos: Tensor,
    /// `None` for Textual Inversion.
    pub neg: Option<Tensor>,
    /// Training time; `None` when the words came from an earlier run.
    pub seconds: Option<f64>,
    pub loss: Option<f64>,
    /// DreamArtist++: the run's adapters (kohya files beside the words).
    pub adapters: Option<WordAdapters>,
}

/// The DreamArtist++ adapter files in `dir` for `name`, if the run wrote any.
fn adapters_in(dir: &std::path::Path, name: &str) -> Option<WordAdapters> {
    let (pos, neg) = crate::concept::lora_paths(dir, name);
    let source = |p: std::path::PathBuf| p.is_file().then_some(AdapterSource::File(p));
    let a = WordAdapters {
        positive: source(pos),
        negative: source(neg),
    };
    (a.positive.is_some() || a.negative.is_some()).then_some(a)
}

/// Trains `concept` in `ws` (a new run in its runs folder) and loads the pair.
pub fn train_concept(
    sd: &StableDiffusion,
    ws: &Workspace,
    concept: &Concept,
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let req = TrainRequest {
        concept: concept.clone(),
        config: concept.train.clone(),
        resume: None,
    };
    let outcome = train(sd, ws, &req, |_| TrainControl::Continue)?;
    let seconds = started.elapsed().as_secs_f64();
    let (pos, _) = load_embedding(&outcome.positive)?;
    let neg = match &outcome.negative {
        Some(p) => Some(load_embedding(p)?.0),
        None => None,
    };
    Ok(Trained {
        pos,
        neg,
        seconds: Some(seconds),
        loss: outcome.loss,
        adapters: adapters_in(&outcome.run_dir, &concept.name),
    })
}

/// The words of an earlier finished run of exactly this concept (same
/// `concept.toml`, pair files present), else a new run. Lets a long
/// evaluation be restarted, and a sweep reuse the comparison's runs.
pub fn train_or_load(
    sd: &StableDiffusion,
    ws: &Workspace,
    concept: &Concept,
) -> Result<Trained, TrainError> {
    let dir = ws.concept_dir(&concept.name);
    let pos_file = dir.join(format!("{}.safetensors", concept.name));
    let neg_file = dir.join(format!("{}-neg.safetensors", concept.name));
    let is_ti = concept
        .train
        .train_cfg
        .parse::<crate::train::CfgSpec>()
        .map_err(TrainError::Config)?
        .is_plain_ti();
    let same = Concept::load(ws, &concept.name).is_ok_and(|c| c == *concept);
    if same && pos_file.is_file() && (is_ti || neg_file.is_file()) {
        let (pos, meta) = load_embedding(&pos_file)?;
        if meta.step == concept.train.steps {
            let neg = if is_ti {
                None
            } else {
                Some(load_embedding(&neg_file)?.0)
            };
            return Ok(Trained {
                pos,
                neg,
                seconds: None,
                loss: None,
                adapters: adapters_in(&dir, &concept.name),
            });
        }
    }
    concept
        .save(ws)
        .map_err(|e| TrainError::Other(anyhow::Error::new(e)))?;
    train_concept(sd, ws, concept)
}

/// The vectors a run of `config` starts from (the "untrained init" floor).
pub fn untrained_vectors(
    sd: &StableDiffusion,
    concept: &Concept,
) -> Result<(Tensor, Tensor), TrainError> {
    let cfg = &concept.train;
    let mode: InitMode = cfg.init_mode.parse().map_err(TrainError::Config)?;
    let mut rng = Rng::seed(cfg.seed);
    initial_vectors(
        sd,
        (&concept.init_text, concept.neg_init_text.as_deref()),
        mode,
        cfg.init_noise,
        (concept.pos_vectors, concept.neg_vectors),
        &mut rng,
    )
}

/// A word bank with `<p>` (and `<n>` when given).
pub fn bank(pos: &Tensor, neg: Option<&Tensor>) -> WordBank {
    let mut b = WordBank::new();
    b.insert(POS_WORD, pos.clone(), "toyworld positive");
    if let Some(n) = neg {
        b.insert(NEG_WORD, n.clone(), "toyworld negative");
    }
    b
}

/// [`bank`] for a trained run: its words, and its adapters on `<p>` (a
/// DreamArtist++ run's adapters act whether or not `<n>` is used).
pub fn trained_bank(t: &Trained, with_negative: bool) -> WordBank {
    let mut b = bank(&t.pos, if with_negative { t.neg.as_ref() } else { None });
    if let Some(a) = &t.adapters {
        b.insert_adapters(POS_WORD, a.clone());
    }
    b
}

/// How a method is sampled: `<p>` in the prompt; DreamArtist puts
/// `"a photo of <n>"` (its training negative prompt) in the negative prompt.
pub fn subject(bank: &WordBank, with_negative: bool) -> Subject<'_> {
    Subject {
        bank,
        word: POS_WORD.into(),
        plain: None,
        negative: if with_negative {
            format!("a photo of {NEG_WORD}")
        } else {
            String::new()
        },
        phrasing: Phrasing::Protocol,
    }
}
