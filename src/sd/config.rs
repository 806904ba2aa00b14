//! The configs of a diffusers-format model folder, read as the reference
//! libraries read them (missing keys take the library defaults). Nothing about a
//! model's size is hard-coded anywhere else: every module is built from these.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::LoadError;

/// Reads and parses a JSON config, naming the file on any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LoadError::BadConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A value that diffusers accepts either once for all blocks or once per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// Expands to one value per block, checking the list length.
    pub fn expand(&self, blocks: usize, key: &str, path: &Path) -> Result<Vec<T>, LoadError> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Many(vs) if vs.len() == blocks => Ok(vs.clone()),
            PerBlock::Many(vs) => Err(LoadError::BadConfig {
                path: path.to_path_buf(),
                message: format!(
                    "`{key}` has {} entries but the model has {blocks} blocks",
                    vs.len()
                ),
            }),
        }
    }
}

/// `text_encoder/config.json` (transformers `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub vocab_size: usize,
    /// Width of `text_projection` (`CLIPTextModelWithProjection`, SDXL's second
    /// encoder); plain `CLIPTextModel` configs carry it too, unused.
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn default_max_positions() -> usize {
    77
}
fn default_ln_eps() -> f64 {
    1e-5
}
fn default_hidden_act() -> String {
    "quick_gelu".into()
}

/// `unet/config.json` (diffusers `UNet2DConditionModel`).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "two_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "eight_per_block")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_ln_eps")]
    pub norm_eps: f64,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub only_cross_attention: PerBlockBool,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// SDXL's `text_time` embedding: width of each sinusoidal time-id feature.
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: pooled text width + 6 × `addition_time_embed_dim`.
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "default_time_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_time_embedding")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

/// `only_cross_attention` may be a bool or a per-block list of bools.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlockBool {
    One(bool),
    Many(Vec<bool>),
}

impl Default for PerBlockBool {
    fn default() -> Self {
        PerBlockBool::One(false)
    }
}

impl PerBlockBool {
    pub fn any(&self) -> bool {
        match self {
            PerBlockBool::One(b) => *b,
            PerBlockBool::Many(v) => v.iter().any(|b| *b),
        }
    }
}

fn four() -> usize {
    4
}
fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_groups() -> usize {
    32
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn two_per_block() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn eight_per_block() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn default_time_shift() -> String {
    "default".into()
}
fn default_time_embedding() -> String {
    "positional".into()
}

/// `vae/config.json` (diffusers `AutoencoderKL`).
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default)]
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub up_block_types: Vec<String>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

fn default_scaling() -> f64 {
    0.18215
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Prediction {
    #[serde(rename = "epsilon")]
    Epsilon,
    #[serde(rename = "v_prediction")]
    V,
}

impl Prediction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "epsilon" | "eps" => Some(Prediction::Epsilon),
            "v_prediction" | "v" => Some(Prediction::V),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::V => "v_prediction",
        }
    }
}

/// `scheduler/scheduler_config.json`: the training noise schedule. The sampler
/// *kind* is chosen at generation time; only the schedule comes from here.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub set_alpha_to_one: bool,
    /// DDIM's x0 clipping. Absent means off: SD latents are not bounded to
    /// [-1, 1], and the reference sampler for these models runs without it.
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default = "one_f")]
    pub clip_sample_range: f64,
}

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}

impl SchedulerConfig {
    pub fn prediction(&self, path: &Path) -> Result<Prediction, LoadError> {
        Prediction::parse(&self.prediction_type).ok_or_else(|| LoadError::UnsupportedLayout {
            path: path.to_path_buf(),
            message: format!(
                "prediction_type `{}` (supported: epsilon, v_prediction)",
                self.prediction_type
            ),
        })
    }
}
