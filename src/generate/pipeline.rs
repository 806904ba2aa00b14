//! txt2img, img2img and inpainting with pseudo-words.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use image::imageops::FilterType;
use image::GenericImageView;
use serde::{Deserialize, Serialize};

use super::adapters::AdapterRows;
use super::conditioning::{all_finite, auto_negative, pad_pair, PromptError, WordBank};
use super::denoise::{denoise_with, Extras, GuidedContext, LatentBlend, StepControl};
use crate::rng::{random_seed, Rng};
use crate::sd::lora;
use crate::sd::{MicroConditioning, Sampler, SamplerKind, StableDiffusion};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing a finished image failed (disk full, permissions).
    #[error("{0:#}")]
    Output(anyhow::Error),
}

/// Everything one generation needs; the fields of a prompt file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative: String,
    /// `-1` picks a random seed.
    pub seed: i64,
    pub count: usize,
    pub steps: usize,
    pub cfg: f64,
    pub sampler: SamplerKind,
    /// 0 means the model's native size.
    pub width: usize,
    pub height: usize,
    pub init_image: Option<PathBuf>,
    pub strength: f64,
    pub mask: Option<PathBuf>,
    /// Add each `<name>`'s `<name-neg>` to the negative prompt (DreamArtist).
    pub auto_negative: bool,
    /// DreamArtist++: strength of a concept's positive adapter on the
    /// conditional half (and its text encoder part on the prompt).
    #[serde(default = "default_lora_pos")]
    pub lora_pos: f64,
    /// DreamArtist++: strength of its negative adapter on the unconditional
    /// half (and on the negative prompt).
    #[serde(default = "default_lora_neg")]
    pub lora_neg: f64,
}

/// HCP-Diffusion's DreamArtist++ inference merges the positive branch at 0.8.
pub const DEFAULT_LORA_POS: f64 = 0.8;
/// ... and the negative branch at 0.65.
pub const DEFAULT_LORA_NEG: f64 = 0.65;

fn default_lora_pos() -> f64 {
    DEFAULT_LORA_POS
}

fn default_lora_neg() -> f64 {
    DEFAULT_LORA_NEG
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative: String::new(),
            seed: -1,
            count: 1,
            steps: 20,
            cfg: 7.0,
            sampler: SamplerKind::DpmPp2mKarras,
            width: 0,
            height: 0,
            init_image: None,
            strength: 0.75,
            mask: None,
            auto_negative: true,
            lora_pos: DEFAULT_LORA_POS,
            lora_neg: DEFAULT_LORA_NEG,
        }
    }
}

/// Images one request may ask for: each is written as it finishes, but a
/// request is still one job that blocks the engine until it ends.
pub const MAX_COUNT: usize = 1000;
/// Sampling steps (the training schedule has 1000 timesteps).
pub const MAX_STEPS: usize = 1000;
/// The largest adapter strength (A1111 and ComfyUI allow a few times 1).
pub const MAX_LORA_STRENGTH: f64 = 10.0;
/// The largest side of any image, whatever the model (memory grows with its
/// square; the model-dependent bound is [`max_side`]).
pub const MAX_SIDE: usize = 8192;

/// The largest side this model renders: four times its native size (2048 on
/// SD 1.5, 4096 on SDXL), never more than [`MAX_SIDE`].
pub fn max_side(sd: &StableDiffusion) -> usize {
    (4 * sd.native_size()).clamp(64, MAX_SIDE)
}

impl GenerateRequest {
    /// The limits that do not depend on the model, each refusal naming the
    /// field and its bounds; prompt files, flags and the engine all call it
    /// before anything is allocated. `width`/`height` 0 mean the native size.
    pub fn check(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(format!(
                "count {} must be between 1 and {MAX_COUNT}",
                self.count
            ));
        }
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(format!(
                "steps {} must be between 1 and {MAX_STEPS}",
                self.steps
            ));
        }
        if !self.cfg.is_finite() || self.cfg.abs() > 100.0 {
            return Err(format!(
                "cfg {} must be a number between -100 and 100",
                self.cfg
            ));
        }
        if !(0.0..=1.0).contains(&self.strength) {
            return Err(format!(
                "strength {} must be between 0 and 1",
                self.strength
            ));
        }
        for (name, v) in [("lora_pos", self.lora_pos), ("lora_neg", self.lora_neg)] {
            if !v.is_finite() || v.abs() > MAX_LORA_STRENGTH {
                return Err(format!(
                    "{name} {v} must be a number between -{MAX_LORA_STRENGTH} and {MAX_LORA_STRENGTH}"
                ));
            }
        }
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v != 0 && (v % 8 != 0 || v > MAX_SIDE) {
                return Err(format!(
                    "{name} {v} must be a multiple of 8 up to {MAX_SIDE} (e.g. {})",
                    ((v / 8).clamp(1, MAX_SIDE / 8)) * 8
                ));
            }
        }
        Ok(())
    }
}

/// One generated image and how it was made.
#[derive(Debug, Clone)]
pub struct Generated {
    pub image: image::RgbImage,
    pub seed: u64,
    /// The negative prompt actually used (with automatic negative words).
    pub negative: String,
    pub width: usize,
    pub height: usize,
    /// The final (scaled) latents.
    pub latents: Tensor,
}

/// Progress of a generation: image `index` of `count`, step `step` of `steps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub index: usize,
    pub count: usize,
    pub step: usize,
    pub steps: usize,
}

fn load_rgb(path: &PathBuf, w: usize, h: usize) -> Result<image::RgbImage, GenerateError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| GenerateError::Image {
            path: path.clone(),
            message: format!("cannot open: {e}"),
        })?
        .decode()
        .map_err(|e| GenerateError::Image {
            path: path.clone(),
            message: format!("not a readable image ({e})"),
        })?;
    let (iw, ih) = img.dimensions();
    if iw == 0 || ih == 0 {
        return Err(GenerateError::Image {
            path: path.clone(),
            message: "empty image".into(),
        });
    }
    Ok(img
        .resize_exact(w as u32, h as u32, FilterType::Lanczos3)
        .to_rgb8())
}

fn rgb_to_tensor(img: &image::RgbImage, sd: &StableDiffusion) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img
        .as_raw()
        .iter()
        .map(|v| *v as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), &sd.device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()
}

/// Decodes scaled latents to `[1, 3, H, W]` f32 pixels in `[0, 1]` (what the
/// reference pipelines return before quantizing).
pub fn decode_latents(sd: &StableDiffusion, latents: &Tensor) -> candle_core::Result<Tensor> {
    let img = sd
        .vae
        .decode(&sd.vae.unscale_latents(latents)?.to_dtype(sd.dtype)?)?;
    ((img.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)
}

/// Decodes scaled latents to an 8-bit RGB image.
pub fn latents_to_image(
    sd: &StableDiffusion,
    latents: &Tensor,
) -> candle_core::Result<image::RgbImage> {
    let img = (decode_latents(sd, latents)? * 255.0)?
        .round()?
        .squeeze(0)?
        .permute((1, 2, 0))?
        .contiguous()?;
    let (h, w, _) = img.dims3()?;
    let data: Vec<u8> = img
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| v as u8)
        .collect();
    image::RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| candle_core::Error::Msg("decoded image has the wrong size".into()))
}

/// Runs a generation request; `progress` may cancel between steps (then the
/// images finished so far are returned).
pub fn generate(
    sd: &StableDiffusion,
    bank: &WordBank,
    req: &GenerateRequest,
    progress: impl FnMut(Progress) -> StepControl,
) -> Result<Vec<Generated>, GenerateError> {
    let mut out = Vec::new();
    generate_each(sd, bank, req, progress, |g| {
        out.push(g);
        Ok(())
    })?;
    Ok(out)
}

/// [`generate`] handing each image to `on_image` as soon as it is decoded, so
/// a large `count` is written out as it goes instead of held until the end;
/// an error from `on_image` stops the request.
pub fn generate_each(
    sd: &StableDiffusion,
    bank: &WordBank,
    req: &GenerateRequest,
    progress: impl FnMut(Progress) -> StepControl,
    on_image: impl FnMut(Generated) -> Result<(), GenerateError>,
) -> Result<(), GenerateError> {
    generate_given(sd, bank, req, &GivenTensors::default(), progress, on_image)
}

/// Tensors given in place of what a request derives itself: the starting
/// noise (else the seeded generator's) and the scaled init latents (else the
/// VAE's encoding of `init_image`). The reference goldens are made from given
/// tensors; with this they check the very pipeline users run (strength, step
/// skipping, guidance, latent dtypes, decoding) instead of a re-implementation.
#[derive(Debug, Clone, Default)]
pub struct GivenTensors {
    /// `[1, C, H/8, W/8]`, used for every image of the request.
    pub noise: Option<Tensor>,
    /// Scaled latents of the init image, `[1, C, H/8, W/8]`: img2img without
    /// an image file (a 9-channel model still needs the pixels).
    pub init_latents: Option<Tensor>,
}

/// [`generate_each`] with [`GivenTensors`].
pub fn generate_given(
    sd: &StableDiffusion,
    bank: &WordBank,
    req: &GenerateRequest,
    given: &GivenTensors,
    mut progress: impl FnMut(Progress) -> StepControl,
    mut on_image: impl FnMut(Generated) -> Result<(), GenerateError>,
) -> Result<(), GenerateError> {
    req.check().map_err(GenerateError::Invalid)?;
    let down = sd.vae.downscale();
    let native = sd.native_size();
    let width = if req.width == 0 { native } else { req.width };
    let height = if req.height == 0 { native } else { req.height };
    let max = max_side(sd);
    for (name, v) in [("width", width), ("height", height)] {
        if v % 8 != 0 || v % down != 0 || v == 0 {
            return Err(GenerateError::Invalid(format!(
                "{name} {v} is not a multiple of 8; use e.g. {}",
                ((v / 8).max(1)) * 8
            )));
        }
        if v > max {
            return Err(GenerateError::Invalid(format!(
                "{name} {v} is more than this model renders ({max}: four times its native {native})"
            )));
        }
    }
    if req.steps > sd.schedule.num_train_timesteps() {
        return Err(GenerateError::Invalid(format!(
            "steps must be between 1 and {}",
            sd.schedule.num_train_timesteps()
        )));
    }
    if req.mask.is_some() && req.init_image.is_none() && given.init_latents.is_none() {
        return Err(GenerateError::Invalid(
            "a mask needs an init_image to inpaint".into(),
        ));
    }
    bank.check_width(&sd.text_widths())?;

    let negative = if req.auto_negative {
        auto_negative(&req.prompt, &req.negative, bank)
    } else {
        req.negative.clone()
    };
    // DreamArtist++ concepts in the prompt bring their adapters: the
    // positive ones for the prompt and the conditional half, the negative
    // ones for the negative prompt and the unconditional half.
    let adapters = bank.adapters_for(sd, &req.prompt)?;
    let strengths = (req.lora_pos, req.lora_neg);
    let (cond, uncond) = adapters.encode_pair(sd, bank, (&req.prompt, &negative), strengths)?;
    let _unet_scope =
        lora::enter(adapters.scope(req.lora_pos, req.lora_neg, AdapterRows::CfgHalves));
    for (enc, text) in [(&cond, &req.prompt), (&uncond, &negative)] {
        if !all_finite(&enc.hidden)? {
            return Err(PromptError::EncoderNonFinite {
                prompt: text.clone(),
            }
            .into());
        }
    }
    let (cond, uncond) = pad_pair(sd, cond, uncond)?;
    let micro = MicroConditioning::for_size(height, width);
    let cond = sd.conditioning(&cond, &micro)?;
    let uncond = sd.conditioning(&uncond, &micro)?;
    let ctx = GuidedContext {
        cond: &cond,
        uncond: &uncond,
        cfg: req.cfg,
    };
    let (lh, lw) = (height / down, width / down);
    let lc = sd.vae.config.latent_channels;
    let unet_in = sd.unet.in_channels();
    let nine_channel = unet_in == 2 * lc + 1;
    if unet_in != lc && !nine_channel {
        return Err(GenerateError::Invalid(format!(
            "the UNet takes {unet_in} input channels; expected {lc} (or {} for inpainting models)",
            2 * lc + 1
        )));
    }

    let latent_shape = [1, lc, lh, lw];
    let given_latents = |t: &Tensor, what: &str| -> Result<Tensor, GenerateError> {
        if t.dims() != latent_shape {
            return Err(GenerateError::Invalid(format!(
                "given {what} have shape {:?}; a {width}×{height} image needs {latent_shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(&sd.device)?)
    };
    // Init image (pixels when read from a file, and latents) and mask,
    // shared by all images of the request.
    let init: Option<(Option<Tensor>, Tensor)> = match (&given.init_latents, &req.init_image) {
        (Some(lat), _) => Some((None, given_latents(lat, "init latents")?)),
        (None, Some(p)) => {
            let rgb = load_rgb(p, width, height)?;
            let t = rgb_to_tensor(&rgb, sd)?;
            let lat = sd
                .vae
                .scale_latents(&sd.vae.encode(&t.to_dtype(sd.dtype)?)?.mean)?
                .to_dtype(DType::F32)?;
            Some((Some(t), lat))
        }
        (None, None) => None,
    };
    let mask = match &req.mask {
        Some(p) => {
            let m = image::ImageReader::open(p)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| GenerateError::Image {
                    path: p.clone(),
                    message: format!("cannot open: {e}"),
                })?
                .decode()
                .map_err(|e| GenerateError::Image {
                    path: p.clone(),
                    message: format!("not a readable mask ({e})"),
                })?;
            // Both are stretched to the render size: a mask of another shape
            // would repaint somewhere else than drawn.
            if let Some(init) = &req.init_image {
                if let Ok((iw, ih)) = image::image_dimensions(init) {
                    let (mw, mh) = m.dimensions();
                    let (a, b) = (mw as u64 * ih as u64, iw as u64 * mh as u64);
                    if a.abs_diff(b) * 100 > a.max(b) {
                        return Err(GenerateError::Image {
                            path: p.clone(),
                            message: format!(
                                "the mask is {mw}×{mh} but the init image {} is {iw}×{ih}; \
                                 save the mask at the image's size (or at least its shape)",
                                init.display()
                            ),
                        });
                    }
                }
            }
            let to_tensor =
                |w: usize, h: usize, filter: FilterType| -> candle_core::Result<Tensor> {
                    let g = m.resize_exact(w as u32, h as u32, filter).to_luma8();
                    let data: Vec<f32> = g
                        .as_raw()
                        .iter()
                        .map(|v| if *v >= 128 { 1.0 } else { 0.0 })
                        .collect();
                    Tensor::from_vec(data, (1, 1, h, w), &sd.device)
                };
            Some((
                to_tensor(width, height, FilterType::Nearest)?,
                to_tensor(lw, lh, FilterType::Nearest)?,
            ))
        }
        None => None,
    };
    if nine_channel && mask.is_none() {
        return Err(GenerateError::Invalid(
            "this is an inpainting model (9 input channels): give an init_image and a mask".into(),
        ));
    }
    // 9-channel models see the mask and the masked image's latents.
    let concat = match (nine_channel, &init, &mask) {
        (true, Some((None, _)), Some(_)) => {
            return Err(GenerateError::Invalid(
                "an inpainting model (9 input channels) needs the init image itself, not only its latents"
                    .into(),
            ))
        }
        (true, Some((Some(img), _)), Some((pix_mask, lat_mask))) => {
            let keep = (1.0 - pix_mask)?;
            let masked = img.broadcast_mul(&keep)?;
            let masked_lat = sd
                .vae
                .scale_latents(&sd.vae.encode(&masked.to_dtype(sd.dtype)?)?.mean)?
                .to_dtype(DType::F32)?;
            Some(Tensor::cat(&[lat_mask, &masked_lat], 1)?)
        }
        _ => None,
    };

    let base_seed = if req.seed < 0 {
        random_seed()
    } else {
        req.seed as u64
    };
    for index in 0..req.count {
        let seed = base_seed.wrapping_add(index as u64);
        let mut rng = Rng::seed(seed);
        let noise = match &given.noise {
            Some(n) => given_latents(n, "noise")?,
            None => rng.randn((1, lc, lh, lw), &sd.device)?,
        };
        let mut sampler = Sampler::new(&sd.schedule, req.sampler, req.steps)?;
        let (latents, start) = match &init {
            Some((_, init_lat)) if !(nine_channel && req.strength >= 1.0) => {
                let strength = req.strength.clamp(0.0, 1.0);
                let run = ((req.steps as f64 * strength) as usize).min(req.steps);
                if run == 0 {
                    return Err(GenerateError::Invalid(format!(
                        "strength {strength} with {} steps runs no step; raise strength or steps",
                        req.steps
                    )));
                }
                let start = req.steps - run;
                (sampler.add_noise(init_lat, &noise, start)?, start)
            }
            _ => ((&noise * sampler.init_noise_sigma())?, 0),
        };
        let blend = match (&init, &mask, nine_channel) {
            (Some((_, init_lat)), Some((_, lat_mask)), false) => Some(LatentBlend {
                original: init_lat,
                noise: &noise,
                mask: lat_mask,
            }),
            _ => None,
        };
        let extras = Extras {
            blend,
            concat: concat.as_ref(),
        };
        let count = req.count;
        let steps = req.steps;
        let result = denoise_with(
            &sd.unet,
            &mut sampler,
            latents,
            start,
            &ctx,
            &extras,
            |step, _| {
                progress(Progress {
                    index,
                    count,
                    step,
                    steps,
                })
            },
        )?;
        let Some(latents) = result else {
            break;
        };
        let check = latents
            .sum_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        if !check.is_finite() {
            return Err(GenerateError::Invalid(format!(
                "seed {seed}: sampling produced NaN/Inf although the prompt's encoding is finite: \
                 the UNet's weights may be broken, in f16 it may overflow (try dtype f32), or the cfg {} \
                 is too large",
                req.cfg
            )));
        }
        on_image(Generated {
            image: latents_to_image(sd, &latents)?,
            seed,
            negative: negative.clone(),
            width,
            height,
            latents,
        })?;
    }
    Ok(())
}

/// A1111's `parameters` text for an image: the prompt, `Negative prompt:`,
/// then one line of `Key: value` fields, each value quoted as A1111's
/// `quote()` does (JSON string when it holds `,`, `:` or a newline), so its
/// `parse_generation_parameters` and the tools that copy it read every field back.
pub fn a1111_parameters(
    req: &GenerateRequest,
    g: &Generated,
    model_name: &str,
    model_hash: &str,
    words: &[String],
) -> String {
    let mut s = String::new();
    s.push_str(&req.prompt);
    s.push('\n');
    if !g.negative.is_empty() {
        s.push_str(&format!("Negative prompt: {}\n", g.negative));
    }
    let mut fields = vec![
        ("Steps", req.steps.to_string()),
        ("Sampler", req.sampler.a1111_name().to_string()),
        ("CFG scale", req.cfg.to_string()),
        ("Seed", g.seed.to_string()),
        ("Size", format!("{}x{}", g.width, g.height)),
    ];
    if !model_hash.is_empty() {
        fields.push(("Model hash", model_hash.to_string()));
    }
    fields.push(("Model", model_name.to_string()));
    if req.init_image.is_some() {
        fields.push(("Denoising strength", req.strength.to_string()));
    }
    if !words.is_empty() {
        fields.push(("Pseudo-words", words.join(", ")));
    }
    fields.push((
        "Version",
        format!("dreamartist {}", env!("CARGO_PKG_VERSION")),
    ));
    let line: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{k}: {}", a1111_quote(&v)))
        .collect();
    s.push_str(&line.join(", "));
    s
}

/// A1111's `quote()`: a value with `,`, `:` or a newline becomes a JSON string.
fn a1111_quote(v: &str) -> String {
    if v.contains([',', ':', '\n']) {
        serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""))
    } else {
        v.to_string()
    }
}
