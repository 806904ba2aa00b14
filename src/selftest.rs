//! `selftest`: runs every case of a golden fixture folder (see the fixtures'
//! README for the schema) against this build and reports per-case errors.
//!
//! `max_rel` is the largest absolute difference divided by the largest
//! magnitude in the expected tensor: a scale-aware measure that does not blow up
//! on entries that happen to be near zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use crate::generate::{
    decode_latents, generate_given, GenerateRequest, GivenTensors, StepControl, WordBank,
};
use crate::sd::single_file::SingleFileSpec;
use crate::sd::{
    AddedCond, Family, LoadOptions, MicroConditioning, Piece, PseudoWord, Sampler, SamplerKind,
    StableDiffusion,
};
use crate::train::{
    clip_grad_norm_blocks, cpt_loss, AdamW, AdamWConfig, CfgSpec, ConceptPrompts, CptBatch,
};

/// Every case kind of the fixture schema, in the order they are reported.
pub const ALL_KINDS: [&str; 10] = [
    "tokenize",
    "text_encode",
    "unet",
    "vae_encode",
    "vae_decode",
    "timesteps",
    "txt2img",
    "img2img",
    "cpt_loss",
    "train_steps",
];

/// Kinds this build can check (all of them).
pub const SUPPORTED_KINDS: [&str; 10] = ALL_KINDS;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass {
        max_abs: f64,
        max_rel: f64,
    },
    Fail {
        max_abs: f64,
        max_rel: f64,
        detail: String,
    },
    Skip,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub kind: String,
    pub outcome: Outcome,
}

impl CaseResult {
    /// The line `selftest` prints for this case.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Pass { max_abs, max_rel } => {
                format!(
                    "PASS {} max_abs={max_abs:.3e} max_rel={max_rel:.3e}",
                    self.name
                )
            }
            Outcome::Fail {
                max_abs,
                max_rel,
                detail,
            } => {
                let mut s = format!(
                    "FAIL {} max_abs={max_abs:.3e} max_rel={max_rel:.3e}",
                    self.name
                );
                if !detail.is_empty() {
                    s.push_str(&format!(" ({detail})"));
                }
                s
            }
            Outcome::Skip => format!("SKIP {} ({})", self.name, self.kind),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SelftestOptions {
    /// Only run these kinds (all supported kinds when `None`).
    pub kinds: Option<Vec<String>>,
    pub device: Device,
    pub dtype: DType,
    /// Run the cases on this single-file checkpoint (original LDM layout)
    /// instead of the fixture's `model/` folder, whose configs it then uses.
    pub model: Option<PathBuf>,
}

impl Default for SelftestOptions {
    fn default() -> Self {
        Self {
            kinds: None,
            device: Device::Cpu,
            dtype: DType::F32,
            model: None,
        }
    }
}

/// Totals over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn of(results: &[CaseResult]) -> Self {
        let mut s = Summary::default();
        for r in results {
            match r.outcome {
                Outcome::Pass { .. } => s.passed += 1,
                Outcome::Fail { .. } => s.failed += 1,
                Outcome::Skip => s.skipped += 1,
            }
        }
        s
    }
}

struct Fixture {
    cases: Vec<toml::Table>,
    goldens: HashMap<String, Tensor>,
    model_dir: PathBuf,
    /// `architecture = "sdxl"` in `cases.toml` (absent for SD 1.x/2.x fixtures).
    architecture: Option<String>,
}

fn load_fixture(dir: &Path) -> Result<Fixture> {
    let cases_path = dir.join("cases.toml");
    let text = std::fs::read_to_string(&cases_path).with_context(|| {
        format!(
            "{}: cannot read the fixture's case list",
            cases_path.display()
        )
    })?;
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("{}: invalid TOML", cases_path.display()))?;
    let model = doc.get("model").and_then(|v| v.as_str()).unwrap_or("model");
    let tensors = doc
        .get("tensors")
        .and_then(|v| v.as_str())
        .unwrap_or("goldens.safetensors");
    let cases = doc
        .get("case")
        .and_then(|v| v.as_array())
        .ok_or_else(|| anyhow!("{}: no [[case]] entries", cases_path.display()))?
        .iter()
        .map(|c| {
            c.as_table()
                .cloned()
                .ok_or_else(|| anyhow!("{}: a [[case]] is not a table", cases_path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let golden_path = dir.join(tensors);
    let goldens = candle_core::safetensors::load(&golden_path, &Device::Cpu)
        .with_context(|| format!("{}: cannot read the golden tensors", golden_path.display()))?;
    Ok(Fixture {
        cases,
        goldens,
        model_dir: dir.join(model),
        architecture: doc
            .get("architecture")
            .and_then(|v| v.as_str())
            .map(String::from),
    })
}

/// Runs a fixture folder; `report` sees each result as soon as it is known.
pub fn run_fixture(
    dir: &Path,
    opts: &SelftestOptions,
    mut report: impl FnMut(&CaseResult),
) -> Result<Vec<CaseResult>> {
    let fx = load_fixture(dir)?;
    if let Some(kinds) = &opts.kinds {
        for k in kinds {
            if !ALL_KINDS.contains(&k.as_str()) {
                bail!("unknown case kind `{k}` (known: {})", ALL_KINDS.join(", "));
            }
        }
    }
    let wanted = |kind: &str| match &opts.kinds {
        Some(ks) => ks.iter().any(|k| k == kind),
        None => true,
    };
    let needs_model = fx.cases.iter().any(|c| {
        let kind = c.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        wanted(kind) && SUPPORTED_KINDS.contains(&kind)
    });
    let load_opts = LoadOptions {
        dtype: opts.dtype,
        device: opts.device.clone(),
    };
    let sd = if needs_model {
        Some(match &opts.model {
            Some(file) => StableDiffusion::load_single_file(
                &SingleFileSpec {
                    path: file.clone(),
                    config: Some(fx.model_dir.clone()),
                    prediction: None,
                },
                &load_opts,
            )?,
            None => StableDiffusion::load_folder(&fx.model_dir, &load_opts)?,
        })
    } else {
        None
    };
    if let (Some(sd), Some(arch)) = (&sd, &fx.architecture) {
        let expected = match arch.as_str() {
            "sdxl" => Some(Family::Sdxl),
            "sd1" => Some(Family::Sd1),
            "sd2" => Some(Family::Sd2),
            _ => None,
        };
        if expected.is_some_and(|f| f != sd.family) {
            bail!(
                "{}: the cases are for `{arch}` but the model loaded as {}",
                dir.join("cases.toml").display(),
                sd.family.describe()
            );
        }
    }
    let mut results = Vec::new();
    for case in &fx.cases {
        let name = case
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("<unnamed>")
            .to_string();
        let kind = case
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if !wanted(&kind) {
            continue;
        }
        let outcome = match (&sd, SUPPORTED_KINDS.contains(&kind.as_str())) {
            (Some(sd), true) => {
                let runner = CaseRunner {
                    sd,
                    tol: Tolerances::for_dtype(opts.dtype),
                    case,
                    name: &name,
                    goldens: &fx.goldens,
                    device: &opts.device,
                };
                match runner.run(&kind) {
                    Ok(o) => o,
                    Err(e) => Outcome::Fail {
                        max_abs: f64::NAN,
                        max_rel: f64::NAN,
                        detail: format!("error: {e:#}"),
                    },
                }
            }
            _ => Outcome::Skip,
        };
        let r = CaseResult {
            name,
            kind,
            outcome,
        };
        report(&r);
        results.push(r);
    }
    Ok(results)
}

/// Compares two tensors; passes when `max_rel <= tol`.
pub fn compare(actual: &Tensor, expected: &Tensor, tol: f64) -> Result<Outcome> {
    if actual.dims() != expected.dims() {
        return Ok(Outcome::Fail {
            max_abs: f64::NAN,
            max_rel: f64::NAN,
            detail: format!("shape {:?}, expected {:?}", actual.dims(), expected.dims()),
        });
    }
    let a = actual
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let e = expected
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut max_abs = 0f64;
    let mut scale = 0f64;
    for (x, y) in a.iter().zip(&e) {
        let d = (x - y).abs();
        max_abs = if d.is_nan() { f64::NAN } else { max_abs.max(d) };
        scale = scale.max(y.abs());
    }
    let max_rel = max_abs / scale.max(1e-12);
    Ok(if max_rel <= tol {
        Outcome::Pass { max_abs, max_rel }
    } else {
        Outcome::Fail {
            max_abs,
            max_rel,
            detail: format!("tolerance {tol:.0e}"),
        }
    })
}

/// Largest relative error accepted for single passes and for loops/gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub pass: f64,
    pub looped: f64,
    /// What several AdamW steps moved, against what the reference moved: Adam
    /// divides by the gradient's own magnitude, so half-precision noise in
    /// near-zero gradients moves some entries by a full step. Below 1 still
    /// fails an update that does not happen (error = the whole movement).
    pub train: f64,
}

impl Tolerances {
    /// The fixture README's tolerances in f32 (single passes 1e-4, loops and
    /// gradients 1e-3). Half precision keeps ~3 (f16) or ~2 (bf16) significant
    /// digits per op, and errors grow along a network and a sampling loop, so
    /// its bounds are looser: they still catch a wrong layer, which is off by
    /// tens of percent.
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            DType::F16 => Self {
                pass: 1e-2,
                looped: 5e-2,
                train: 0.75,
            },
            DType::BF16 => Self {
                pass: 5e-2,
                looped: 1.5e-1,
                train: 0.9,
            },
            _ => Self {
                pass: 1e-4,
                looped: 1e-3,
                train: 1e-3,
            },
        }
    }
}

struct CaseRunner<'a> {
    sd: &'a StableDiffusion,
    tol: Tolerances,
    case: &'a toml::Table,
    name: &'a str,
    goldens: &'a HashMap<String, Tensor>,
    device: &'a Device,
}

impl CaseRunner<'_> {
    fn golden(&self, field: &str) -> Result<Tensor> {
        let key = format!("{}/{}", self.name, field);
        self.goldens
            .get(&key)
            .cloned()
            .ok_or_else(|| anyhow!("golden tensor `{key}` is missing"))
    }

    /// A training input in f32 on the run device: vectors, latents, noise
    /// and losses stay f32 whatever the model's compute dtype (as in `train`).
    fn master(&self, field: &str) -> Result<Tensor> {
        Ok(self
            .golden(field)?
            .to_device(self.device)?
            .to_dtype(DType::F32)?)
    }

    fn optional_golden(&self, field: &str) -> Option<Tensor> {
        self.goldens
            .get(&format!("{}/{}", self.name, field))
            .cloned()
    }

    fn optional_master(&self, field: &str) -> Result<Option<Tensor>> {
        let key = format!("{}/{}", self.name, field);
        if self.goldens.contains_key(&key) {
            Ok(Some(self.master(field)?))
        } else {
            Ok(None)
        }
    }

    /// A golden input, on the run device in the run dtype.
    fn input(&self, field: &str) -> Result<Tensor> {
        Ok(self
            .golden(field)?
            .to_device(self.device)?
            .to_dtype(self.sd.dtype)?)
    }

    fn str_field(&self, key: &str) -> Result<String> {
        self.case
            .get(key)
            .and_then(|v| v.as_str())
            .map(String::from)
            .ok_or_else(|| anyhow!("case field `{key}` is missing"))
    }

    fn num_field(&self, key: &str) -> Result<f64> {
        match self.case.get(key) {
            Some(toml::Value::Float(f)) => Ok(*f),
            Some(toml::Value::Integer(i)) => Ok(*i as f64),
            Some(toml::Value::String(s)) => s
                .parse()
                .map_err(|_| anyhow!("case field `{key}` is not a number: {s}")),
            _ => Err(anyhow!("case field `{key}` is missing")),
        }
    }

    fn words(&self) -> Result<Vec<PseudoWord>> {
        let Some(list) = self.case.get("words").and_then(|v| v.as_array()) else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(|w| {
                let name = w
                    .get("name")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| anyhow!("a word has no name"))?;
                let vectors = w
                    .get("vectors")
                    .and_then(|v| v.as_integer())
                    .ok_or_else(|| anyhow!("word {name} has no vector count"))?;
                Ok(PseudoWord {
                    name: name.to_string(),
                    vectors: vectors as usize,
                })
            })
            .collect()
    }

    fn vectors(&self, words: &[PseudoWord]) -> Result<Option<Tensor>> {
        if words.is_empty() {
            Ok(None)
        } else {
            Ok(Some(self.word_matrix("vectors")?))
        }
    }

    /// The golden name of text encoder `i`'s part of a field: `field`, then
    /// `field_2` (the SDXL schema's second encoder).
    fn tower_field(field: &str, i: usize) -> String {
        if i == 0 {
            field.to_string()
        } else {
            format!("{field}_{}", i + 1)
        }
    }

    /// A pseudo-word matrix (f32, run device): one golden matrix per text
    /// encoder, side by side as the model takes them.
    fn word_matrix(&self, field: &str) -> Result<Tensor> {
        let n = self.sd.text.towers().len();
        let parts = (0..n)
            .map(|i| self.master(&Self::tower_field(field, i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::sd::text::concat_towers(parts)?)
    }

    /// Compares each text encoder's columns of `actual` with its golden.
    fn compare_blocks(&self, actual: &Tensor, field: &str, tol: f64) -> Result<Outcome> {
        let blocks = self.sd.text.split_columns(actual)?;
        let mut out: Option<Outcome> = None;
        for (i, b) in blocks.iter().enumerate() {
            let o = compare(b, &self.golden(&Self::tower_field(field, i))?, tol)?;
            out = Some(match out {
                None => o,
                Some(prev) => worst(prev, o),
            });
        }
        out.ok_or_else(|| anyhow!("the model has no text encoder"))
    }

    /// The size a sampling or training case renders at (SDXL time ids).
    fn micro(&self) -> Result<MicroConditioning> {
        let native = self.sd.native_size();
        let h = self
            .num_field("height")
            .map(|v| v as usize)
            .unwrap_or(native);
        let w = self
            .num_field("width")
            .map(|v| v as usize)
            .unwrap_or(native);
        Ok(MicroConditioning::for_size(h, w))
    }

    fn run(&self, kind: &str) -> Result<Outcome> {
        match kind {
            "tokenize" => {
                let words = self.words()?;
                let tokens = self.sd.tokenize(&self.str_field("prompt")?, &words);
                let mut mismatches = 0;
                let mut detail = String::new();
                for (i, seq) in tokens.0.iter().enumerate() {
                    let ids: Vec<i64> = seq.iter().map(Piece::as_i64).collect();
                    let field = Self::tower_field("ids", i);
                    let expected = self.golden(&field)?.to_vec1::<i64>()?;
                    let m = ids.iter().zip(&expected).filter(|(a, b)| a != b).count()
                        + ids.len().abs_diff(expected.len());
                    if m > 0 {
                        detail.push_str(&format!("{field} {ids:?}, expected {expected:?}; "));
                    }
                    mismatches += m;
                }
                Ok(if mismatches == 0 {
                    Outcome::Pass {
                        max_abs: 0.0,
                        max_rel: 0.0,
                    }
                } else {
                    Outcome::Fail {
                        max_abs: mismatches as f64,
                        max_rel: 1.0,
                        detail: detail.trim_end_matches("; ").to_string(),
                    }
                })
            }
            "text_encode" => {
                let words = self.words()?;
                let vectors = self.vectors(&words)?;
                let tokens = self.sd.tokenize(&self.str_field("prompt")?, &words);
                let enc = self.sd.text.encode(&[tokens], vectors.as_ref())?;
                let hidden = compare(
                    &enc.hidden.squeeze(0)?,
                    &self.golden("hidden")?,
                    self.tol.pass,
                )?;
                match (self.optional_golden("pooled"), &enc.pooled) {
                    (None, _) => Ok(hidden),
                    (Some(expected), Some(pooled)) => Ok(worst(
                        hidden,
                        compare(&pooled.squeeze(0)?, &expected, self.tol.pass)?,
                    )),
                    (Some(_), None) => {
                        bail!("the case expects a pooled output; the model gives none")
                    }
                }
            }
            "unet" => {
                let ts: Vec<f64> = self
                    .golden("timesteps")?
                    .to_vec1::<i64>()?
                    .into_iter()
                    .map(|t| t as f64)
                    .collect();
                let added = match self.optional_golden("pooled") {
                    Some(_) => Some(AddedCond {
                        text_embeds: self.input("pooled")?,
                        time_ids: self.master("time_ids")?,
                    }),
                    None => None,
                };
                let out = self.sd.unet.forward(
                    &self.input("latents")?,
                    &ts,
                    &self.input("context")?,
                    added.as_ref(),
                )?;
                compare(&out, &self.golden("out")?, self.tol.pass)
            }
            "vae_encode" => {
                let dist = self.sd.vae.encode(&self.input("image")?)?;
                let m = compare(&dist.mean, &self.golden("mean")?, self.tol.pass)?;
                let s = compare(&dist.std, &self.golden("std")?, self.tol.pass)?;
                Ok(worst(m, s))
            }
            "vae_decode" => {
                let img = self.sd.vae.decode(&self.input("latents")?)?;
                compare(&img, &self.golden("image")?, self.tol.pass)
            }
            "timesteps" => {
                let kind = self.sampler_kind()?;
                let steps = self.num_field("steps")? as usize;
                let s = Sampler::new(&self.sd.schedule, kind, steps)?;
                let ts = Tensor::new(s.timesteps(), &Device::Cpu)?;
                compare(&ts, &self.golden("timesteps")?, 1e-9)
            }
            "txt2img" | "img2img" => self.sample(kind),
            "cpt_loss" => self.cpt_loss(),
            "train_steps" => self.train_steps(),
            other => bail!("kind `{other}` is not supported"),
        }
    }

    /// The concept of a training case: prompts over the stacked `[pos; neg]`
    /// matrix and the two starting matrices as variables.
    fn concept(&self) -> Result<(ConceptPrompts, Var, Var)> {
        let words = self.words()?;
        if words.len() != 2 {
            bail!("training cases need exactly two words (positive, negative)");
        }
        let prediction = self.str_field("prediction")?;
        if prediction != self.sd.prediction().as_str() {
            bail!(
                "case expects {prediction} but the model's scheduler says {}",
                self.sd.prediction().as_str()
            );
        }
        let prompts = ConceptPrompts {
            positive: self.sd.tokenize(&self.str_field("pos_prompt")?, &words),
            negative: self.sd.tokenize(&self.str_field("neg_prompt")?, &words),
        };
        let pos = Var::from_tensor(&self.word_matrix("pos_vectors")?)?;
        let neg = Var::from_tensor(&self.word_matrix("neg_vectors")?)?;
        Ok((prompts, pos, neg))
    }

    fn cfg_spec(&self) -> Result<CfgSpec> {
        let raw = match self.case.get("cfg") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => bail!("case field `cfg` is missing"),
        };
        raw.parse::<CfgSpec>().map_err(|e| anyhow!(e))
    }

    fn timesteps_of(t: &Tensor) -> Result<Vec<usize>> {
        Ok(t.flatten_all()?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|t| t.max(0) as usize)
            .collect())
    }

    fn cpt_loss(&self) -> Result<Outcome> {
        let (prompts, pos, neg) = self.concept()?;
        let z0 = self.master("z0")?;
        let noise = self.master("noise")?;
        let image = self.optional_master("image")?;
        let mask = self.optional_master("mask")?;
        let ts = Self::timesteps_of(&self.golden("timesteps")?)?;
        let batch = CptBatch {
            z0: &z0,
            noise: &noise,
            timesteps: &ts,
            image: image.as_ref(),
            mask: mask.as_ref(),
            recompute: false,
            min_snr_gamma: None,
        };
        let rec_weight = self.num_field("rec_weight").unwrap_or(0.0);
        let loss = cpt_loss(
            self.sd,
            std::slice::from_ref(&prompts),
            pos.as_tensor(),
            neg.as_tensor(),
            &self.cfg_spec()?,
            rec_weight,
            &batch,
        )?;
        let grads = loss.total.backward()?;
        let grad_of = |v: &Var| -> Result<Tensor> {
            Ok(match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.zeros_like()?,
            })
        };
        let l = compare(
            &loss.total.reshape(1)?,
            &self.golden("loss")?,
            self.tol.pass,
        )?;
        let gp = self.compare_blocks(&grad_of(&pos)?, "grad_pos", self.tol.looped)?;
        let gn = self.compare_blocks(&grad_of(&neg)?, "grad_neg", self.tol.looped)?;
        Ok(worst(worst(l, gp), gn))
    }

    fn train_steps(&self) -> Result<Outcome> {
        let (prompts, pos, neg) = self.concept()?;
        let steps = self.num_field("steps")? as usize;
        let lr = self.num_field("lr")?;
        let neg_lr = lr * self.num_field("neg_lr_weight")?;
        let clip = self.num_field("clip_grad_norm")?;
        let betas = self
            .case
            .get("betas")
            .and_then(|v| v.as_array())
            .ok_or_else(|| anyhow!("case field `betas` is missing"))?;
        let beta = |i: usize| -> Result<f64> {
            betas
                .get(i)
                .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
                .ok_or_else(|| anyhow!("`betas` needs two numbers"))
        };
        let config = AdamWConfig {
            beta1: beta(0)?,
            beta2: beta(1)?,
            eps: self.num_field("eps")?,
            weight_decay: self.num_field("weight_decay")?,
        };
        let mut opt_pos = AdamW::new(&pos, config)?;
        let mut opt_neg = AdamW::new(&neg, config)?;
        let (pos_start, neg_start) = (pos.as_tensor().copy()?, neg.as_tensor().copy()?);
        let cfg = self.cfg_spec()?;
        let z0 = self.master("z0")?;
        let noise_all = self.master("noise")?;
        let ts_all = self.golden("timesteps")?;
        let mut losses = Vec::with_capacity(steps);
        for k in 0..steps {
            let noise = noise_all.get(k)?;
            let ts = Self::timesteps_of(&ts_all.get(k)?)?;
            let batch = CptBatch {
                z0: &z0,
                noise: &noise,
                timesteps: &ts,
                image: None,
                mask: None,
                recompute: false,
                min_snr_gamma: None,
            };
            let loss = cpt_loss(
                self.sd,
                std::slice::from_ref(&prompts),
                pos.as_tensor(),
                neg.as_tensor(),
                &cfg,
                0.0,
                &batch,
            )?;
            losses.push(loss.total.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            let grads = loss.total.backward()?;
            for (var, opt, lr) in [(&pos, &mut opt_pos, lr), (&neg, &mut opt_neg, neg_lr)] {
                let g = match grads.get(var.as_tensor()) {
                    Some(g) => g.clone(),
                    None => var.zeros_like()?,
                };
                let (g, _) = clip_grad_norm_blocks(&g, &self.sd.text_widths(), clip)?;
                opt.update(var, &g, lr)?;
            }
        }
        let l = compare(
            &Tensor::new(losses, &Device::Cpu)?,
            &self.golden("losses")?,
            self.tol.looped,
        )?;
        // The steps move the vectors by a few percent of their size: compare
        // what moved (after − before) with what the reference moved, so an
        // update that does not happen (or goes the wrong way) cannot pass.
        let moved = |var: &Var, start: &Tensor, field: &str| -> Result<Outcome> {
            let ours = (var.as_tensor() - start)?;
            let mut out: Option<Outcome> = None;
            for (i, (block, start_block)) in self
                .sd
                .text
                .split_columns(&ours)?
                .into_iter()
                .zip(self.sd.text.split_columns(start)?)
                .enumerate()
            {
                let want = (self.master(&Self::tower_field(field, i))? - &start_block)?;
                let o = compare(&block, &want, self.tol.train)?;
                out = Some(match out {
                    None => o,
                    Some(prev) => worst(prev, o),
                });
            }
            out.ok_or_else(|| anyhow!("the model has no text encoder"))
        };
        let p = moved(&pos, &pos_start, "pos_after")?;
        let n = moved(&neg, &neg_start, "neg_after")?;
        Ok(worst(worst(l, p), n))
    }

    fn sampler_kind(&self) -> Result<SamplerKind> {
        let s = self.str_field("scheduler")?;
        SamplerKind::parse(&s).ok_or_else(|| anyhow!("unknown scheduler `{s}`"))
    }

    /// A sampling case through the real generation pipeline
    /// ([`generate_given`]): the golden's noise and init latents stand in for
    /// the seeded generator and the VAE-encoded init image; everything else
    /// (word bank, prompt preparation, step skipping, guidance, latent dtypes,
    /// decoding) is what `generate` runs for users.
    fn sample(&self, kind: &str) -> Result<Outcome> {
        let words = self.words()?;
        let mut bank = WordBank::new();
        if let Some(matrix) = self.vectors(&words)? {
            let mut row = 0;
            for w in &words {
                bank.insert(&w.name, matrix.narrow(0, row, w.vectors)?, "golden");
                row += w.vectors;
            }
        }
        let micro = self.micro()?;
        let img2img = kind == "img2img";
        let req = GenerateRequest {
            prompt: self.str_field("prompt")?,
            negative: self.str_field("negative_prompt").unwrap_or_default(),
            seed: 0,
            count: 1,
            steps: self.num_field("steps")? as usize,
            cfg: self.num_field("cfg")?,
            sampler: self.sampler_kind()?,
            width: micro.target.1,
            height: micro.target.0,
            init_image: None,
            strength: if img2img {
                self.num_field("strength")?
            } else {
                1.0
            },
            mask: None,
            // The goldens' negative prompts name their negative words.
            auto_negative: false,
            ..Default::default()
        };
        let given = GivenTensors {
            noise: Some(self.master("noise")?),
            init_latents: if img2img {
                Some(self.master("init_latents")?)
            } else {
                None
            },
        };
        let mut made = None;
        generate_given(
            self.sd,
            &bank,
            &req,
            &given,
            |_| StepControl::Continue,
            |g| {
                made = Some(g);
                Ok(())
            },
        )?;
        let made = made.ok_or_else(|| anyhow!("the pipeline returned no image"))?;
        let lat = compare(&made.latents, &self.golden("latents")?, self.tol.looped)?;
        if img2img {
            return Ok(lat);
        }
        let image = decode_latents(self.sd, &made.latents)?;
        let img = compare(&image, &self.golden("image")?, self.tol.looped)?;
        Ok(worst(lat, img))
    }
}

/// The worse of two outcomes (a failure, else the larger error).
fn worst(a: Outcome, b: Outcome) -> Outcome {
    match (&a, &b) {
        (Outcome::Fail { .. }, _) => a,
        (_, Outcome::Fail { .. }) => b,
        (
            Outcome::Pass {
                max_abs: a1,
                max_rel: r1,
            },
            Outcome::Pass {
                max_abs: a2,
                max_rel: r2,
            },
        ) => Outcome::Pass {
            max_abs: a1.max(*a2),
            max_rel: r1.max(*r2),
        },
        _ => a,
    }
}
