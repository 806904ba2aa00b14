//! Our own differentiable Stable Diffusion stack on candle (SD 1.x, 2.x and
//! SDXL): tokenizers, CLIP text encoders (embeddings in), UNet, VAE, noise
//! schedule and samplers, and the loaders for diffusers folders and original
//! single-file checkpoints. Nothing here prints or touches the terminal.

pub mod blocks;
pub mod bmm;
pub(crate) mod checkpoint;
pub mod clip;
pub mod config;
pub mod device;
pub mod error;
pub mod family;
pub mod frozen;
pub mod fused;
pub mod lora;
pub mod lora_file;
pub mod model;
pub mod nn;
pub mod random;
pub mod scheduler;
pub mod single_file;
pub mod sliced;
pub mod stable_diffusion;
#[cfg(test)]
mod testutil;
pub mod text;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use clip::HiddenLayer;
pub use error::{LoadError, SdError, SdResult};
pub use family::Family;
pub use model::ModelSpec;
pub use scheduler::{NoiseSchedule, Sampler, SamplerKind};
pub use stable_diffusion::{LoadOptions, StableDiffusion};
pub use text::{TextEncoding, TextStack, Tokens};
pub use tokenizer::{ClipTokenizer, Piece, PseudoWord};
pub use unet::{AddedCond, Conditioning, MicroConditioning};
