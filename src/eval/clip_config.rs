//! Hugging Face `config.json` of a `CLIPModel` → candle-transformers' CLIP
//! configs. candle's configs have no serde support and name things differently
//! (`embed_dim` for `hidden_size`), and the projection width that matters is the
//! top-level `projection_dim`: `text_config.projection_dim` is an unused
//! default (512) in HF configs, so the mapping is written out here.

use std::path::Path;

use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use serde::Deserialize;

use super::error::ClipError;

fn d_projection() -> usize {
    512
}
fn d_eps() -> f64 {
    1e-5
}
fn d_act() -> String {
    "quick_gelu".into()
}

#[derive(Debug, Deserialize)]
struct RawText {
    #[serde(default = "d_text_vocab")]
    vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    hidden_size: usize,
    #[serde(default = "d_text_inter")]
    intermediate_size: usize,
    #[serde(default = "d_text_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_text_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_text_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
}
fn d_text_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_inter() -> usize {
    2048
}
fn d_text_layers() -> usize {
    12
}
fn d_text_heads() -> usize {
    8
}
fn d_text_pos() -> usize {
    77
}

#[derive(Debug, Deserialize)]
struct RawVision {
    #[serde(default = "d_vis_hidden")]
    hidden_size: usize,
    #[serde(default = "d_vis_inter")]
    intermediate_size: usize,
    #[serde(default = "d_vis_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_vis_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_vis_channels")]
    num_channels: usize,
    #[serde(default = "d_vis_image")]
    image_size: usize,
    #[serde(default = "d_vis_patch")]
    patch_size: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
}
fn d_vis_hidden() -> usize {
    768
}
fn d_vis_inter() -> usize {
    3072
}
fn d_vis_layers() -> usize {
    12
}
fn d_vis_heads() -> usize {
    12
}
fn d_vis_channels() -> usize {
    3
}
fn d_vis_image() -> usize {
    224
}
fn d_vis_patch() -> usize {
    32
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default = "d_projection")]
    projection_dim: usize,
    text_config: Option<RawText>,
    vision_config: Option<RawVision>,
}

/// Both towers' configs and the shared embedding width.
#[derive(Debug, Clone)]
pub struct ClipConfigs {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    /// Width of the joint embedding space (`projection_dim`).
    pub projection_dim: usize,
}

fn activation(name: &str, tower: &str, path: &Path) -> Result<Activation, ClipError> {
    match name {
        "quick_gelu" => Ok(Activation::QuickGelu),
        other => Err(ClipError::Unsupported {
            path: path.to_path_buf(),
            message: format!(
                "{tower} `hidden_act` is `{other}`; only `quick_gelu` (OpenAI CLIP) is supported"
            ),
        }),
    }
}

fn check_eps(eps: f64, tower: &str, path: &Path) -> Result<(), ClipError> {
    // candle's CLIP layer norms are built with 1e-5.
    if (eps - 1e-5).abs() > 1e-12 {
        return Err(ClipError::Unsupported {
            path: path.to_path_buf(),
            message: format!("{tower} `layer_norm_eps` is {eps}; only 1e-5 is supported"),
        });
    }
    Ok(())
}

/// Reads and maps `config.json`.
pub fn read_config(path: &Path) -> Result<ClipConfigs, ClipError> {
    if !path.is_file() {
        return Err(ClipError::MissingFile {
            path: path.to_path_buf(),
            what: "config.json (a CLIPModel config with text_config and vision_config)".into(),
        });
    }
    let bad = |message: String| ClipError::BadFile {
        path: path.to_path_buf(),
        what: "CLIP config".into(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let raw: RawConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(mt) = &raw.model_type {
        if mt != "clip" {
            return Err(ClipError::Unsupported {
                path: path.to_path_buf(),
                message: format!(
                    "`model_type` is `{mt}`; expected `clip` (a CLIPModel with both towers)"
                ),
            });
        }
    }
    let t = raw.text_config.ok_or_else(|| {
        bad("no `text_config`: this is not a full CLIPModel (text + vision)".into())
    })?;
    let v = raw.vision_config.ok_or_else(|| {
        bad("no `vision_config`: this is not a full CLIPModel (text + vision)".into())
    })?;
    for (name, n) in [
        ("text_config.hidden_size", t.hidden_size),
        ("text_config.num_attention_heads", t.num_attention_heads),
        ("vision_config.hidden_size", v.hidden_size),
        ("vision_config.num_attention_heads", v.num_attention_heads),
        ("vision_config.patch_size", v.patch_size),
        ("projection_dim", raw.projection_dim),
    ] {
        if n == 0 {
            return Err(bad(format!("`{name}` must be positive")));
        }
    }
    if t.hidden_size % t.num_attention_heads != 0 || v.hidden_size % v.num_attention_heads != 0 {
        return Err(bad(
            "`hidden_size` must be a multiple of `num_attention_heads`".into(),
        ));
    }
    if v.image_size % v.patch_size != 0 {
        return Err(bad(format!(
            "vision `image_size` {} is not a multiple of `patch_size` {}",
            v.image_size, v.patch_size
        )));
    }
    check_eps(t.layer_norm_eps, "text", path)?;
    check_eps(v.layer_norm_eps, "vision", path)?;
    Ok(ClipConfigs {
        text: ClipTextConfig {
            vocab_size: t.vocab_size,
            embed_dim: t.hidden_size,
            activation: activation(&t.hidden_act, "text", path)?,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: raw.projection_dim,
        },
        vision: ClipVisionConfig {
            embed_dim: v.hidden_size,
            activation: activation(&v.hidden_act, "vision", path)?,
            intermediate_size: v.intermediate_size,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            projection_dim: raw.projection_dim,
            num_channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
        },
        projection_dim: raw.projection_dim,
    })
}
