//! Classifier-free-guided denoising with any [`Sampler`], with the two ways of
//! inpainting: latent blending (ordinary 4-channel UNets) and extra input
//! channels (9-channel inpainting UNets).

use candle_core::{Result, Tensor};

use crate::sd::unet::UNet;
use crate::sd::{Conditioning, Sampler};

/// The conditioning of one denoising run: `out = uncond + cfg · (cond − uncond)`,
/// with the negative prompt's encoding as `uncond`.
pub struct GuidedContext<'a> {
    pub cond: &'a Conditioning,
    pub uncond: &'a Conditioning,
    pub cfg: f64,
}

/// What the progress callback asks the loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Cancel,
}

/// Inpainting by blending: after every step the region outside the mask is
/// replaced by the original latents noised to the level of the next step.
pub struct LatentBlend<'a> {
    pub original: &'a Tensor,
    pub noise: &'a Tensor,
    /// `[B, 1, h, w]`: 1 where the image is repainted, 0 where it is kept.
    pub mask: &'a Tensor,
}

/// Optional extras of a denoising run.
#[derive(Default)]
pub struct Extras<'a> {
    pub blend: Option<LatentBlend<'a>>,
    /// Extra UNet input channels (mask + masked-image latents for 9-channel
    /// inpainting models), concatenated after the scaled latents.
    pub concat: Option<&'a Tensor>,
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
    progress: impl FnMut(usize, usize) -> StepControl,
) -> Result<Option<Tensor>> {
    denoise_with(
        unet,
        sampler,
        latents,
        start,
        ctx,
        &Extras::default(),
        progress,
    )
}

/// [`denoise`] with inpainting extras.
pub fn denoise_with(
    unet: &UNet,
    sampler: &mut Sampler,
    latents: Tensor,
    start: usize,
    ctx: &GuidedContext<'_>,
    extras: &Extras<'_>,
    mut progress: impl FnMut(usize, usize) -> StepControl,
) -> Result<Option<Tensor>> {
    let ts: Vec<f64> = sampler.timesteps().to_vec();
    let total = ts.len();
    let b = latents.dim(0)?;
    let context = Conditioning::cat(&[ctx.uncond, ctx.cond])?;
    let mut x = latents;
    for (i, &t) in ts.iter().enumerate().skip(start) {
        let mut x_in = sampler.scale_model_input(&x, i)?;
        if let Some(extra) = extras.concat {
            x_in = Tensor::cat(&[&x_in, &extra.to_dtype(x_in.dtype())?], 1)?;
        }
        let batch = Tensor::cat(&[&x_in, &x_in], 0)?.to_dtype(unet.dtype())?;
        let out = unet
            .forward_cond(&batch, &[t], &context)?
            .to_dtype(x.dtype())?;
        let uncond = out.narrow(0, 0, b)?;
        let cond = out.narrow(0, b, b)?;
        let guided = (&uncond + ((cond - &uncond)? * ctx.cfg)?)?;
        x = sampler.step(&guided, i, &x)?;
        if let Some(blend) = &extras.blend {
            let known = if i + 1 < total {
                sampler.add_noise(blend.original, blend.noise, i + 1)?
            } else {
                blend.original.clone()
            };
            let keep = (1.0 - blend.mask)?;
            x = (x.broadcast_mul(blend.mask)? + known.broadcast_mul(&keep)?)?;
        }
        if progress(i + 1, total) == StepControl::Cancel {
            return Ok(None);
        }
    }
    Ok(Some(x))
}
