//! The loaded pipeline — [`StableDiffusion`] and how it is loaded
//! ([`LoadOptions`]) — apart from the loaders themselves (`model` for folders
//! and `hf:` specs, `single_file` for checkpoints), which both build it.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::config::{read_json, ClipTextConfig, Prediction, UNetConfig};
use super::error::LoadError;
use super::family::Family;
use super::scheduler::NoiseSchedule;
use super::text::{TextEncoding, TextStack, Tokens};
use super::tokenizer::PseudoWord;
use super::unet::{AddedCond, Conditioning, MicroConditioning, UNet};
use super::vae::Vae;

/// How to load: run dtype and device.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
}

impl LoadOptions {
    /// Refuses combinations the backend cannot run, before any weight is read.
    pub fn check(&self, model: &Path) -> Result<(), LoadError> {
        if self.dtype == DType::BF16 && self.device.is_cpu() {
            return Err(LoadError::UnsupportedLayout {
                path: model.to_path_buf(),
                message: "bf16 runs only on CUDA (candle's CPU backend has no bf16 matmul); \
                          use --dtype f16 or f32 on the CPU"
                    .into(),
            });
        }
        Ok(())
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// Every piece of a Stable Diffusion pipeline that this tool runs.
pub struct StableDiffusion {
    pub root: PathBuf,
    pub name: String,
    pub family: Family,
    /// Tokenizers and text encoders (two on SDXL).
    pub text: TextStack,
    pub unet: UNet,
    pub vae: Vae,
    pub schedule: NoiseSchedule,
    pub dtype: DType,
    pub device: Device,
}

impl StableDiffusion {
    /// Every linear layer of the UNet and the text encoders: where LoRA
    /// adapters can attach ([`super::lora`]).
    pub fn linear_sites(&self) -> Vec<super::lora::LinearSite> {
        let mut sites = self.unet.linear_sites().to_vec();
        for tower in self.text.towers() {
            sites.extend_from_slice(tower.encoder.linear_sites());
        }
        sites
    }

    pub fn prediction(&self) -> Prediction {
        self.schedule.prediction
    }

    /// The image size the model was trained at: the UNet's `sample_size` ×
    /// the VAE factor (1024 on SDXL, 512 on SD 1.5), else the VAE's
    /// `sample_size`, else 512.
    pub fn native_size(&self) -> usize {
        match self.unet.config.sample_size {
            Some(s) if s > 0 => s * self.vae.downscale(),
            _ => self.vae.config.sample_size.unwrap_or(512),
        }
    }

    /// A short hash of the base model: A1111's legacy 8-hex "model hash" (SHA-256
    /// of 64 KiB at offset 1 MiB) of the checkpoint file, or of the UNet weights
    /// of a diffusers folder.
    pub fn model_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::io::{Read, Seek, SeekFrom};
        let candidates = if self.root.is_file() {
            vec![self.root.clone()]
        } else {
            [
                "diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model.fp16.safetensors",
            ]
            .iter()
            .map(|n| self.root.join("unet").join(n))
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

    /// A pseudo-word vector's width (SDXL: CLIP-L's and OpenCLIP-G's side by side).
    pub fn word_width(&self) -> usize {
        self.text.width()
    }

    /// Each text encoder's width, in order.
    pub fn text_widths(&self) -> Vec<usize> {
        self.text.widths()
    }

    /// A prompt's full sequences, one per text encoder.
    pub fn tokenize(&self, prompt: &str, words: &[PseudoWord]) -> Tokens {
        self.text.tokenize(prompt, words)
    }

    /// The UNet's added conditioning for a batch of encoded prompts (SDXL),
    /// `None` for UNets without it.
    pub fn added_cond(
        &self,
        enc: &TextEncoding,
        micro: &MicroConditioning,
    ) -> candle_core::Result<Option<AddedCond>> {
        if !self.unet.takes_added_cond() {
            return Ok(None);
        }
        let Some(pooled) = &enc.pooled else {
            candle_core::bail!(
                "this SDXL UNet needs a pooled text embedding; the text encoders gave none"
            );
        };
        let b = pooled.dim(0)?;
        Ok(Some(AddedCond {
            text_embeds: pooled.clone(),
            time_ids: micro.time_ids(b, &self.device)?,
        }))
    }

    /// The UNet's conditioning for encoded prompts at a size (`micro` matters
    /// only to SDXL).
    pub fn conditioning(
        &self,
        enc: &TextEncoding,
        micro: &MicroConditioning,
    ) -> candle_core::Result<Conditioning> {
        Ok(Conditioning {
            context: enc.hidden.clone(),
            added: self.added_cond(enc, micro)?,
        })
    }

    /// Checks the text side against the UNet's cross-attention and pooled
    /// widths, so a mismatched folder fails at load, naming the config.
    /// Every id a tokenizer can produce must have a row in its encoder's
    /// token embedding (a larger `vocab.json` would fail mid-prompt); `files`
    /// names each tower's vocabulary for the message.
    pub(crate) fn check_vocabularies(&self, files: &[PathBuf]) -> Result<(), LoadError> {
        for (i, tower) in self.text.towers().iter().enumerate() {
            let ids = tower.tokenizer.id_limit();
            let rows = tower.encoder.config.vocab_size;
            if ids > rows {
                return Err(LoadError::BadTokenizer {
                    path: files.get(i).cloned().unwrap_or_default(),
                    message: format!(
                        "the vocabulary has {ids} tokens but the text encoder embeds only {rows} \
                         (vocab_size); the tokenizer belongs to another model"
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn check_text_fits_unet(&self, unet_config: &Path) -> Result<(), LoadError> {
        let bad = |message: String| LoadError::BadConfig {
            path: unet_config.to_path_buf(),
            message,
        };
        let ctx = self.unet.context_width();
        let width = self.text.width();
        if ctx != Some(width) {
            if let Some(ctx) = ctx {
                return Err(bad(format!(
                    "cross_attention_dim {ctx} does not match the text encoders' output width {width} ({:?})",
                    self.text.widths()
                )));
            }
        }
        match (self.unet.pooled_width(), self.text.pooled_width()) {
            (Some(u), Some(t)) if u != t => Err(bad(format!(
                "the added embedding expects a {u}-wide pooled text embedding; text_encoder_2 projects to {t}"
            ))),
            (Some(_), None) => Err(bad(
                "the UNet takes pooled text + time ids (SDXL) but the model has no second text encoder with a projection".into(),
            )),
            (None, Some(_)) => Err(bad(
                "the model has two text encoders (SDXL) but the UNet has no `text_time` added embedding".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Tells SD 1.x, 2.x and SDXL apart in a diffusers folder: SDXL has
/// `text_encoder_2/` and a `text_time` UNet; SD 2.x's CLIP is OpenCLIP (gelu).
pub fn folder_family(root: &Path) -> Result<Family, LoadError> {
    let unet_cfg_path = root.join("unet").join("config.json");
    let unet: UNetConfig = read_json(&unet_cfg_path)?;
    let xl_unet = unet.addition_embed_type.as_deref() == Some("text_time");
    let te2 = root.join("text_encoder_2");
    let te1 = root.join("text_encoder");
    if xl_unet {
        if !te2.join("config.json").is_file() {
            return Err(LoadError::MissingFile {
                path: te2.join("config.json"),
                what:
                    "text_encoder_2/ (SDXL's OpenCLIP-G encoder: config.json + model.safetensors); \
                       the UNet has a text_time added embedding, so this is an SDXL model"
                        .into(),
            });
        }
        if !te1.join("config.json").is_file() {
            return Err(LoadError::UnsupportedLayout {
                path: te1,
                message: "an SDXL model without text_encoder/ (the SDXL refiner?); only base SDXL \
                          models with both text encoders are supported"
                    .into(),
            });
        }
        return Ok(Family::Sdxl);
    }
    let cfg_path = te1.join("config.json");
    let cfg: ClipTextConfig = read_json(&cfg_path)?;
    Ok(if cfg.hidden_act == "gelu" {
        Family::Sd2
    } else {
        Family::Sd1
    })
}

/// Blocks report config problems against a placeholder name; give them the real path.
pub(crate) fn with_config_path(e: LoadError, cfg_path: &Path) -> LoadError {
    match e {
        LoadError::BadConfig { path, message } if path.is_relative() && !path.exists() => {
            LoadError::BadConfig {
                path: cfg_path.to_path_buf(),
                message,
            }
        }
        LoadError::UnsupportedLayout { path, message } if path.is_relative() && !path.exists() => {
            LoadError::UnsupportedLayout {
                path: cfg_path.to_path_buf(),
                message,
            }
        }
        other => other,
    }
}
