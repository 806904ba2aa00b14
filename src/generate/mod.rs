//! Image generation: the guided denoising loop shared by txt2img and img2img.
//! Progress is reported through a callback, never printed.

pub mod denoise;

pub use denoise::{denoise, GuidedContext, StepControl};
