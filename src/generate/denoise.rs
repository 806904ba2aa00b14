//! Classifier-free-guided denoising with any [`Sampler`].

use candle_core::{Result, Tensor};

use crate::sd::unet::UNet;
use crate::sd::Sampler;

/// The conditioning of one denoising run: `out = uncond + cfg · (cond − uncond)`,
/// with the negative prompt's encoding as `uncond`.
pub struct GuidedContext<'a> {
    pub cond: &'a Tensor,
    pub uncond: &'a Tensor,
    pub cfg: f64,
}

/// What the progress callback asks the loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Cancel,
}

/// Denoises `latents` from step `start` to the end. The callback sees
/// `(step_done, total_steps)` after every step; returning `Cancel` stops early
/// and returns `Ok(None)`.
pub fn denoise(
    unet: &UNet,
    sampler: &mut Sampler,
    latents: Tensor,
    start: usize,
    ctx: &GuidedContext<'_>,
    mut progress: impl FnMut(usize, usize) -> StepControl,
) -> Result<Option<Tensor>> {
    let ts: Vec<f64> = sampler.timesteps().to_vec();
    let total = ts.len();
    let b = latents.dim(0)?;
    let context = Tensor::cat(&[ctx.uncond, ctx.cond], 0)?;
    let mut x = latents;
    for (i, &t) in ts.iter().enumerate().skip(start) {
        let x_in = sampler.scale_model_input(&x, i)?;
        let batch = Tensor::cat(&[&x_in, &x_in], 0)?.to_dtype(unet.dtype())?;
        let out = unet.forward(&batch, &[t], &context)?.to_dtype(x.dtype())?;
        let uncond = out.narrow(0, 0, b)?;
        let cond = out.narrow(0, b, b)?;
        let guided = (&uncond + ((cond - &uncond)? * ctx.cfg)?)?;
        x = sampler.step(&guided, i, &x)?;
        if progress(i + 1, total) == StepControl::Cancel {
            return Ok(None);
        }
    }
    Ok(Some(x))
}
