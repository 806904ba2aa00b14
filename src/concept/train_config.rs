//! Training options, stored resolved in `concept.toml` (`[train]`) and in each
//! run folder's `config.toml`.

use serde::{Deserialize, Serialize};

/// A training resolution: one side (square) or `[width, height]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TrainSize {
    Square(usize),
    WidthHeight([usize; 2]),
}

impl TrainSize {
    /// `(width, height)`.
    pub fn dims(&self) -> (usize, usize) {
        match *self {
            TrainSize::Square(s) => (s, s),
            TrainSize::WidthHeight([w, h]) => (w, h),
        }
    }
}

impl std::fmt::Display for TrainSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (w, h) = self.dims();
        if w == h {
            write!(f, "{w}")
        } else {
            write!(f, "{w}×{h}")
        }
    }
}

/// Every knob of a DreamArtist run. Defaults follow the method's authors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Total optimiser steps of the run.
    pub steps: u64,
    /// Samples (timesteps) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches averaged per optimiser step.
    pub grad_accum: usize,
    /// Learning rate: a number, or A1111's `"0.005:100, 1e-3:1000, 1e-5"`.
    pub lr: String,
    /// `constant` (or the A1111 steps in `lr`), or `cosine` (warm-up then cosine decay).
    pub lr_schedule: String,
    pub warmup_steps: u64,
    /// The negative matrix learns at `lr × neg_lr_weight`.
    pub neg_lr_weight: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Gradient-norm clip per matrix (0 = off).
    pub clip_grad_norm: f64,
    /// Train guidance: a number or `"lo-hi[:ln|cos|cos2]"` (plain `lo-hi` is
    /// linear); `"1"` = Textual Inversion.
    pub train_cfg: String,
    /// Weight of the L1 reconstruction loss through the VAE decoder (0 = off).
    pub rec_weight: f64,
    /// Prompt template: `subject`, `style`, `subject_filewords`, `style_filewords`, `none`,
    /// or one custom line containing `[name]` (e.g. `"a photo of [name]"`).
    pub template: String,
    /// Keep `[filewords]` out of the negative prompt.
    pub filewords_positive_only: bool,
    /// Random horizontal flips of the references.
    pub flip: bool,
    /// Training resolution: `512` (square) or `[width, height]` (multiples of
    /// 8; the references are centre-cropped to that aspect); default: the
    /// model's native size, square.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<TrainSize>,
    /// EMA decay of the positive matrix, and of the negative one unless
    /// `ema_decay_neg` is given (off when both are absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// EMA decay of the negative matrix (the DreamArtist extension's separate one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_decay_neg: Option<f64>,
    /// Copy the EMA into the live vectors every N steps (0 = never).
    pub ema_replace_every: u64,
    /// The same for the negative matrix (default: `ema_replace_every`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_replace_every_neg: Option<u64>,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Render a preview sample every N steps (0 = never).
    pub sample_every: u64,
    /// The preview prompt; `[name]` becomes the positive word.
    pub sample_prompt: String,
    /// The preview's negative prompt; `[name]` becomes the negative word
    /// (`"a photo of [name]"` is the DreamArtist extension's preview). Empty:
    /// the negative word alone, added as `generate` adds it.
    pub sample_negative: String,
    /// The preview's sampler (ddim, euler, dpmpp_2m, dpmpp_2m_karras).
    pub sample_sampler: String,
    pub sample_steps: usize,
    pub sample_cfg: f64,
    pub sample_seed: u64,
    pub seed: u64,
    /// How the vectors start: `tokens` (the init text's embeddings over the
    /// slots) or `mean` (every slot = their mean + `N(0, init_noise²)`).
    pub init_mode: String,
    /// Standard deviation of the noise added in `init_mode = "mean"`.
    pub init_noise: f64,
    /// Encode a fresh VAE posterior sample of the reference every step instead
    /// of the posterior mean (what the toy-world reference and diffusers'
    /// textual-inversion script do); off keeps the posterior mean (the
    /// DreamArtist extension encodes one posterior sample, drawn once).
    pub vae_sample: bool,
    /// Activation recompute (gradient checkpointing): the UNet keeps no
    /// activations for backward and runs each ResNet + transformer pair
    /// again when its gradient is needed. Much less memory for one more UNet
    /// forward per step; the same vectors up to the last bits.
    pub recompute: bool,
    /// `dreamartist` (the pair of words), `dreamartist++` (the pair plus a
    /// positive and a negative LoRA adapter, trained together: HCP-Diffusion's
    /// DreamArtist++) or `ti` (Textual Inversion: one word, train cfg 1).
    pub method: String,
    /// DreamArtist++: rank of both adapters.
    pub lora_rank: usize,
    /// DreamArtist++: the adapters' alpha (their output is scaled by alpha / rank).
    pub lora_alpha: f64,
    /// DreamArtist++: the layers that get adapters, a comma list of `attn`
    /// (the UNet's attention projections), `ff` (its feed-forward) and `te`
    /// (the text encoders' attention and MLP).
    pub lora_targets: String,
    /// DreamArtist++: the adapters' learning rate (the forms of `lr`); the
    /// negative adapter learns at `lora_lr × neg_lr_weight`.
    pub lora_lr: String,
    /// MinSNR-γ loss weighting (e.g. 5; off when absent), any method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_snr_gamma: Option<f64>,
}

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    DreamArtist,
    DreamArtistPlusPlus,
    TextualInversion,
}

impl Method {
    pub const NAMES: [&'static str; 3] = ["dreamartist", "dreamartist++", "ti"];

    pub fn name(self) -> &'static str {
        match self {
            Method::DreamArtist => "dreamartist",
            Method::DreamArtistPlusPlus => "dreamartist++",
            Method::TextualInversion => "ti",
        }
    }

    /// The name tables and the workbench show.
    pub fn label(self) -> &'static str {
        match self {
            Method::DreamArtist => "DreamArtist",
            Method::DreamArtistPlusPlus => "DreamArtist++",
            Method::TextualInversion => "Textual Inversion",
        }
    }

    pub fn has_adapters(self) -> bool {
        self == Method::DreamArtistPlusPlus
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dreamartist" | "da" => Ok(Method::DreamArtist),
            "dreamartist++" | "da++" | "dreamartistplusplus" => Ok(Method::DreamArtistPlusPlus),
            "ti" | "textual_inversion" | "textual-inversion" => Ok(Method::TextualInversion),
            other => Err(format!(
                "unknown method `{other}` (known: {})",
                Method::NAMES.join(", ")
            )),
        }
    }
}

impl TrainConfig {
    /// The run's method (`method`, checked).
    pub fn method(&self) -> Result<Method, String> {
        self.method.parse()
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch_size: 1,
            grad_accum: 1,
            lr: "0.005".into(),
            lr_schedule: "constant".into(),
            warmup_steps: 0,
            neg_lr_weight: 1.0,
            // torch.optim.AdamW's default, which the DreamArtist extension keeps.
            weight_decay: 0.01,
            betas: [0.9, 0.999],
            eps: 1e-8,
            clip_grad_norm: 1.0,
            train_cfg: "5".into(),
            rec_weight: 0.0,
            template: "subject".into(),
            filewords_positive_only: false,
            flip: false,
            size: None,
            ema_decay: None,
            ema_decay_neg: None,
            ema_replace_every: 0,
            ema_replace_every_neg: None,
            checkpoint_every: 500,
            sample_every: 0,
            sample_prompt: "a photo of [name]".into(),
            sample_negative: String::new(),
            sample_sampler: "dpmpp_2m_karras".into(),
            sample_steps: 20,
            sample_cfg: 5.0,
            sample_seed: 1,
            seed: 0,
            init_mode: "tokens".into(),
            init_noise: 0.01,
            vae_sample: false,
            recompute: false,
            method: "dreamartist".into(),
            lora_rank: 4,
            lora_alpha: 4.0,
            lora_targets: "attn,ff".into(),
            lora_lr: "1e-4".into(),
            min_snr_gamma: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concept::Preset;

    /// The DreamArtist extension builds `torch.optim.AdamW` without
    /// `weight_decay`, i.e. torch's 0.01; every preset keeps it.
    #[test]
    fn defaults_follow_the_extension() {
        assert_eq!(TrainConfig::default().weight_decay, 0.01);
        for name in Preset::NAMES {
            let p = Preset::parse(name).unwrap();
            assert_eq!(p.train_config().weight_decay, 0.01, "{name}");
        }
        assert_eq!(Preset::Toy.train_config().train_cfg, "2");
        let pp = Preset::parse("toy++").unwrap().train_config();
        assert_eq!(pp.method().unwrap(), Method::DreamArtistPlusPlus);
        assert_eq!(
            (pp.train_cfg.as_str(), pp.lora_rank, pp.lora_lr.as_str()),
            ("3", 4, "1e-3")
        );
        assert_eq!(pp.steps, 400);
    }

    #[test]
    fn sizes_are_a_side_or_width_and_height() {
        #[derive(Deserialize)]
        struct S {
            size: TrainSize,
        }
        let sq: S = toml::from_str("size = 512").unwrap();
        assert_eq!(sq.size.dims(), (512, 512));
        let wh: S = toml::from_str("size = [64, 48]").unwrap();
        assert_eq!(wh.size.dims(), (64, 48));
        assert_eq!(wh.size.to_string(), "64×48");
    }
}
