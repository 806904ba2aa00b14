//! Image generation: prompts with pseudo-words and A1111 emphasis, the guided
//! denoising loop, txt2img / img2img / inpainting, PNG output with metadata.
//! Progress is reported through callbacks, never printed.

pub mod adapters;
pub mod bank;
pub mod conditioning;
pub mod denoise;
pub mod output;
pub mod pipeline;
pub mod png;
pub mod prompt;
pub mod promptfile;

pub use bank::{load_pair, word_bank};
pub use conditioning::{PromptError, WordBank};
pub use denoise::{denoise, denoise_with, Extras, GuidedContext, LatentBlend, StepControl};
pub use pipeline::{
    decode_latents, generate, generate_each, generate_given, GenerateError, GenerateRequest,
    Generated, GivenTensors, Progress,
};
