//! The CLIP model that scores samples: a Hugging Face CLIP folder (or
//! `hf:org/name` from the offline cache) run with candle-transformers' towers.
//!
//! Embeddings are what `CLIPModel.get_text_features` / `get_image_features`
//! return: text = the final hidden state at the first EOS token (HF takes the
//! argmax of the ids, which is the same position since EOS has the largest id),
//! through `text_projection`; image = the post-layer-normed class token through
//! `visual_projection`. They are *not* normalised; [`super::metrics`] does that.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_transformers::models::clip::text_model::ClipTextTransformer;
use candle_transformers::models::clip::vision_model::ClipVisionTransformer;

use super::clip_config::{read_config, ClipConfigs};
use super::error::ClipError;
use super::preprocess::Preprocessor;
use crate::sd::ClipTokenizer;

/// The CLIP used when `--clip` is not given: the text encoder family of SD 1.x.
pub const DEFAULT_CLIP: &str = "hf:openai/clip-vit-large-patch14";

/// Images per forward pass of the vision tower (bounds memory on CLIP-L).
const IMAGE_BATCH: usize = 16;
const TEXT_BATCH: usize = 32;

/// Resolves a `--clip` spec to a local folder: a path, or `hf:org/name[@rev]`
/// looked up in the given Hugging Face cache (no network).
pub fn resolve_clip(spec: &str, cache: &hf_hub::Cache) -> Result<PathBuf, ClipError> {
    match crate::sd::model::parse_hf(spec) {
        Some((repo, revision)) => {
            crate::sd::model::find_in_hf_cache(cache, &repo, revision.as_deref(), "config.json")
                .ok_or_else(|| ClipError::NotInHfCache {
                    spec: spec.to_string(),
                    download: match &revision {
                        Some(rev) => format!("{repo} --revision {rev}"),
                        None => repo.clone(),
                    },
                    cache: cache.path().clone(),
                })
        }
        None => {
            let dir = PathBuf::from(spec);
            if !dir.is_dir() {
                return Err(ClipError::MissingFile {
                    path: dir,
                    what: "to be a folder".into(),
                });
            }
            Ok(dir)
        }
    }
}

/// A loaded CLIP model with its tokenizer and image preprocessing.
pub struct ClipModel {
    /// The folder it was loaded from.
    pub root: PathBuf,
    /// The spec as the user wrote it (for reports).
    pub spec: String,
    pub preprocessor: Preprocessor,
    pub tokenizer: ClipTokenizer,
    pub configs: ClipConfigs,
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: candle_nn::Linear,
    visual_projection: candle_nn::Linear,
    device: Device,
}

fn require(path: PathBuf, what: &str) -> Result<PathBuf, ClipError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(ClipError::MissingFile {
            path,
            what: what.into(),
        })
    }
}

impl ClipModel {
    /// Loads `--clip SPEC` (a folder or `hf:org/name`, from [`crate::sd::model::hf_cache`]).
    pub fn load(spec: &str, device: &Device) -> Result<Self, ClipError> {
        let dir = resolve_clip(spec, &crate::sd::model::hf_cache())?;
        let mut m = Self::load_folder(&dir, device)?;
        m.spec = spec.to_string();
        Ok(m)
    }

    /// Loads a Hugging Face CLIP folder. Weights are computed in f32.
    pub fn load_folder(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        let configs = read_config(&dir.join("config.json"))?;
        let preprocessor = Preprocessor::from_file(&dir.join("preprocessor_config.json"))?;
        if let Some((h, w)) = preprocessor.crop {
            let s = configs.vision.image_size;
            if (h, w) != (s, s) {
                return Err(ClipError::BadFile {
                    path: dir.join("preprocessor_config.json"),
                    what: "preprocessor config".into(),
                    message: format!(
                        "`crop_size` is {h}×{w} but the vision model (config.json) takes {s}×{s}"
                    ),
                });
            }
        }
        require(
            dir.join("vocab.json"),
            "vocab.json (the CLIP BPE vocabulary)",
        )?;
        require(dir.join("merges.txt"), "merges.txt (the CLIP BPE merges)")?;
        let mut tokenizer = ClipTokenizer::from_dir(dir).map_err(|e| ClipError::BadFile {
            path: dir.join("vocab.json"),
            what: "tokenizer".into(),
            message: e.to_string(),
        })?;
        tokenizer.max_len = tokenizer.max_len.min(configs.text.max_position_embeddings);
        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            let hint = if dir.join("pytorch_model.bin").is_file() {
                " (only pytorch_model.bin is here: convert it to safetensors)"
            } else {
                ""
            };
            return Err(ClipError::MissingFile {
                path: weights_path,
                what: format!("model.safetensors (the CLIP weights){hint}"),
            });
        }
        let bad_weights = |e: candle_core::Error| ClipError::BadFile {
            path: weights_path.clone(),
            what: "CLIP weights".into(),
            message: e.to_string(),
        };
        // SAFETY: the file is mapped read-only; like every safetensors loader we
        // assume it is not modified while the model is alive.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&weights_path),
                DType::F32,
                device,
            )
        }
        .map_err(bad_weights)?;
        let text =
            ClipTextTransformer::new(vb.pp("text_model"), &configs.text).map_err(bad_weights)?;
        let vision = ClipVisionTransformer::new(vb.pp("vision_model"), &configs.vision)
            .map_err(bad_weights)?;
        // Without the tensor candle would invent a random class embedding.
        if !vb.contains_tensor("vision_model.embeddings.class_embedding") {
            return Err(ClipError::BadFile {
                path: weights_path,
                what: "CLIP weights".into(),
                message: "missing tensor `vision_model.embeddings.class_embedding`".into(),
            });
        }
        let text_projection = candle_nn::linear_no_bias(
            configs.text.embed_dim,
            configs.projection_dim,
            vb.pp("text_projection"),
        )
        .map_err(bad_weights)?;
        let visual_projection = candle_nn::linear_no_bias(
            configs.vision.embed_dim,
            configs.projection_dim,
            vb.pp("visual_projection"),
        )
        .map_err(bad_weights)?;
        Ok(Self {
            root: dir.to_path_buf(),
            spec: dir.display().to_string(),
            preprocessor,
            tokenizer,
            configs,
            text,
            vision,
            text_projection,
            visual_projection,
            device: device.clone(),
        })
    }

    /// The 77 token ids of a text: BOS, tokens (truncated), EOS, padding.
    pub fn text_ids(&self, text: &str) -> Vec<u32> {
        let ids = self.tokenizer.encode_text(text);
        let body = self.tokenizer.max_len.saturating_sub(2);
        let mut out = Vec::with_capacity(self.tokenizer.max_len);
        out.push(self.tokenizer.bos);
        out.extend(ids.into_iter().take(body));
        out.push(self.tokenizer.eos);
        while out.len() < self.tokenizer.max_len {
            out.push(self.tokenizer.pad);
        }
        out
    }

    /// Projected text features `[n, projection_dim]` (not normalised).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor, ClipError> {
        let mut parts = Vec::new();
        for chunk in texts.chunks(TEXT_BATCH) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|t| self.text_ids(t)).collect();
            let len = self.tokenizer.max_len;
            let flat: Vec<u32> = ids.iter().flatten().copied().collect();
            let input = Tensor::from_vec(flat, (chunk.len(), len), &self.device)?;
            let hidden = self.text.forward_with_mask(&input, usize::MAX)?;
            let mut pooled = Vec::with_capacity(chunk.len());
            for (b, row) in ids.iter().enumerate() {
                let eos = row
                    .iter()
                    .position(|id| *id == self.tokenizer.eos)
                    .unwrap_or(len - 1);
                pooled.push(hidden.i((b, eos))?.unsqueeze(0)?);
            }
            parts.push(Tensor::cat(&pooled, 0)?.apply(&self.text_projection)?);
        }
        self.stack(parts)
    }

    /// Projected image features `[n, projection_dim]` of preprocessed
    /// `pixel_values` `[n, 3, H, W]` (not normalised).
    pub fn embed_pixels(&self, pixel_values: &Tensor) -> Result<Tensor, ClipError> {
        let pixels = pixel_values.to_device(&self.device)?.to_dtype(DType::F32)?;
        Ok(self
            .vision
            .forward(&pixels)?
            .apply(&self.visual_projection)?)
    }

    /// Projected image features of RGB images, preprocessed as the model's
    /// `CLIPImageProcessor` would.
    pub fn embed_images(&self, images: &[&image::RgbImage]) -> Result<Tensor, ClipError> {
        let mut parts = Vec::new();
        for chunk in images.chunks(IMAGE_BATCH) {
            let pixels = self.preprocessor.batch(chunk, &self.device)?;
            parts.push(self.embed_pixels(&pixels)?);
        }
        self.stack(parts)
    }

    /// Opens an image file (any format the `image` crate reads) as RGB.
    pub fn open_image(path: &Path) -> Result<image::RgbImage, ClipError> {
        let img = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| ClipError::Image {
                path: path.to_path_buf(),
                message: format!("cannot open: {e}"),
            })?
            .decode()
            .map_err(|e| ClipError::Image {
                path: path.to_path_buf(),
                message: format!("not a readable image ({e})"),
            })?;
        if img.width() == 0 || img.height() == 0 {
            return Err(ClipError::Image {
                path: path.to_path_buf(),
                message: "empty image".into(),
            });
        }
        Ok(img.to_rgb8())
    }

    fn stack(&self, parts: Vec<Tensor>) -> Result<Tensor, ClipError> {
        if parts.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.configs.projection_dim),
                DType::F32,
                &self.device,
            )?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}
