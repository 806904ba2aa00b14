//! Stable Diffusion 1.5's and SDXL's real sizes with random weights, for
//! benchmarks: the compute of a step does not depend on the weights' values.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::clip::ClipTextEncoder;
use super::config::{ClipTextConfig, SchedulerConfig, UNetConfig, VaeConfig};
use super::error::LoadError;
use super::scheduler::NoiseSchedule;
use super::single_file::{shipped_tokenizer, shipped_tokenizer_with_pad, Family};
use super::stable_diffusion::{LoadOptions, StableDiffusion};
use super::text::TextStack;
use super::unet::UNet;
use super::vae::Vae;
use super::weights::{RandomInit, Weights};

const SD15_TEXT: &str = r#"{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
 "num_hidden_layers": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "vocab_size": 49408}"#;

const SD15_UNET: &str = r#"{"in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
 "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32,
 "sample_size": 64}"#;

const SD15_VAE: &str = r#"{"in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512],
 "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
 "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
 "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215, "sample_size": 512}"#;

const SD15_SCHEDULER: &str = r#"{"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
 "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1, "clip_sample": false}"#;

// SDXL base 1.0's configs (stabilityai/stable-diffusion-xl-base-1.0).
const SDXL_TEXT: &str = r#"{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
 "num_hidden_layers": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "vocab_size": 49408}"#;

const SDXL_TEXT_2: &str = r#"{"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
 "num_hidden_layers": 32, "max_position_embeddings": 77, "hidden_act": "gelu", "vocab_size": 49408,
 "projection_dim": 1280}"#;

const SDXL_UNET: &str = r#"{"in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280],
 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
 "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
 "layers_per_block": 2, "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048,
 "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": true, "norm_num_groups": 32,
 "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
 "projection_class_embeddings_input_dim": 2816, "sample_size": 128}"#;

const SDXL_VAE: &str = r#"{"in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512],
 "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
 "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
 "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.13025, "sample_size": 1024}"#;

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, LoadError> {
    serde_json::from_str(text).map_err(|e| LoadError::BadConfig {
        path: PathBuf::from(format!("<built-in {what} config>")),
        message: e.to_string(),
    })
}

impl StableDiffusion {
    /// SD 1.5 sizes (CLIP ViT-L/14 text encoder, the 860M UNet, the 84M VAE) with random weights.
    pub fn random_sd15(opts: &LoadOptions) -> Result<Self, LoadError> {
        opts.check(Path::new("<sd15-random>"))?;
        let source = Arc::new(RandomInit::new("<random SD1.5 weights>"));
        let w = |component: &str| Weights::new(source.clone(), component, opts.dtype, &opts.device);
        let text_cfg: ClipTextConfig = parse(SD15_TEXT, "SD1.5 text encoder")?;
        let unet_cfg: UNetConfig = parse(SD15_UNET, "SD1.5 UNet")?;
        let vae_cfg: VaeConfig = parse(SD15_VAE, "SD1.5 VAE")?;
        let sched_cfg: SchedulerConfig = parse(SD15_SCHEDULER, "SD1.5 scheduler")?;
        let label = PathBuf::from("<sd15-random>");
        Ok(Self {
            root: label.clone(),
            name: "sd15-random".into(),
            family: Family::Sd1,
            text: TextStack::single(
                shipped_tokenizer(Family::Sd1)?,
                ClipTextEncoder::load(&w("text encoder"), &text_cfg, false)?,
            ),
            unet: UNet::load(&w("UNet"), &unet_cfg, &label)?,
            vae: Vae::load(&w("VAE"), &vae_cfg, &label)?,
            schedule: NoiseSchedule::from_config(&sched_cfg, &label)?,
            dtype: opts.dtype,
            device: opts.device.clone(),
        })
    }

    /// SDXL base sizes (CLIP-L + OpenCLIP-G text encoders, the 2.6B UNet, the
    /// SDXL VAE) with random weights. In f32 the weights alone are ~14 GB;
    /// f16 halves that (CPU f16 runs, slowly; bf16 needs CUDA).
    pub fn random_sdxl(opts: &LoadOptions) -> Result<Self, LoadError> {
        opts.check(Path::new("<sdxl-random>"))?;
        let source = Arc::new(RandomInit::new("<random SDXL weights>"));
        let w = |component: &str| Weights::new(source.clone(), component, opts.dtype, &opts.device);
        let text_cfg: ClipTextConfig = parse(SDXL_TEXT, "SDXL text encoder")?;
        let text_cfg_2: ClipTextConfig = parse(SDXL_TEXT_2, "SDXL text encoder 2")?;
        let unet_cfg: UNetConfig = parse(SDXL_UNET, "SDXL UNet")?;
        let vae_cfg: VaeConfig = parse(SDXL_VAE, "SDXL VAE")?;
        let sched_cfg: SchedulerConfig = parse(SD15_SCHEDULER, "SDXL scheduler")?;
        let label = PathBuf::from("<sdxl-random>");
        let sd = Self {
            root: label.clone(),
            name: "sdxl-random".into(),
            family: Family::Sdxl,
            text: TextStack::sdxl(
                shipped_tokenizer(Family::Sdxl)?,
                ClipTextEncoder::load(&w("text encoder"), &text_cfg, false)?,
                shipped_tokenizer_with_pad("!")?,
                ClipTextEncoder::load(&w("text encoder 2"), &text_cfg_2, true)?,
            ),
            unet: UNet::load(&w("UNet"), &unet_cfg, &label)?,
            vae: Vae::load(&w("VAE"), &vae_cfg, &label)?,
            schedule: NoiseSchedule::from_config(&sched_cfg, &label)?,
            dtype: opts.dtype,
            device: opts.device.clone(),
        };
        sd.check_text_fits_unet(&label)?;
        Ok(sd)
    }
}
