//! The evaluation protocol of the toy-world benchmark: N samples per prompt
//! (sampling seeds 0..N, the same initial noise for every method), DDIM, cfg 5;
//! the plain prompt and four background prompts; fidelity, controllability and
//! diversity from the detector.
//!
//! The N samples of one prompt are denoised as one batch (the noise of sample
//! `k` is what `generate` draws for seed `k`, so a sample can be re-rendered
//! alone with `dreamartist generate --seed k`).

use crate::generate::adapters::AdapterRows;
use crate::sd::lora;
use candle_core::{DType, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::detect::{detect, Detection};
use super::world::{Colour, Position, Shape, Size};
use super::ToyError;
use crate::generate::conditioning::pad_pair;
use crate::generate::{denoise_with, Extras, GuidedContext, StepControl, WordBank};
use crate::rng::Rng;
use crate::sd::{MicroConditioning, Sampler, SamplerKind, StableDiffusion};

/// A held-out concept and what its reference shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConceptSpec {
    pub name: &'static str,
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub pos: Position,
    pub bg: Colour,
}

impl ConceptSpec {
    /// The concept described in words (the "text prompt" oracle): `"a big purple cross"`.
    pub fn words(&self) -> String {
        format!("a {} {} {}", self.size, self.colour, self.shape)
    }

    /// The full description of the reference, background included.
    pub fn full_caption(&self) -> String {
        format!(
            "a photo of {} {}, {} background",
            self.words(),
            self.pos.phrase(),
            self.bg
        )
    }

    pub fn by_name(name: &str) -> Option<ConceptSpec> {
        CONCEPTS.iter().find(|c| c.name == name).copied()
    }
}

/// The benchmark's two held-out concepts (both big, centred).
pub const CONCEPTS: [ConceptSpec; 2] = [
    ConceptSpec {
        name: "purple_cross",
        shape: Shape::Cross,
        colour: Colour::Purple,
        size: Size::Big,
        pos: Position::Center,
        bg: Colour::Yellow,
    },
    ConceptSpec {
        name: "orange_triangle",
        shape: Shape::Triangle,
        colour: Colour::Orange,
        size: Size::Big,
        pos: Position::Center,
        bg: Colour::Purple,
    },
];

/// The plain prompt; `{}` is the subject.
pub const PLAIN_PROMPT: &str = "a photo of {}";

/// The controllability prompts and the background each asks for.
pub const BACKGROUND_PROMPTS: [(&str, Colour); 4] = [
    ("a photo of {} on a green background", Colour::Green),
    ("{}, white background", Colour::White),
    ("a photo of {}, blue background", Colour::Blue),
    ("{} on a black background", Colour::Black),
];

/// The same four backgrounds, each asked for inside the phrase the words are
/// trained in ("a photo of {}"): the protocol's prompts mix that phrase with
/// bare ones, and a learned word follows the request much better inside it.
pub const PHOTO_BACKGROUND_PROMPTS: [(&str, Colour); 4] = [
    ("a photo of {}, green background", Colour::Green),
    ("a photo of {}, white background", Colour::White),
    ("a photo of {}, blue background", Colour::Blue),
    ("a photo of {}, black background", Colour::Black),
];

/// How the background prompts are worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phrasing {
    /// The reference protocol's four prompts ([`BACKGROUND_PROMPTS`]).
    #[default]
    Protocol,
    /// All four inside "a photo of" ([`PHOTO_BACKGROUND_PROMPTS`]).
    Photo,
}

impl Phrasing {
    pub fn background_prompts(self) -> &'static [(&'static str, Colour); 4] {
        match self {
            Phrasing::Protocol => &BACKGROUND_PROMPTS,
            Phrasing::Photo => &PHOTO_BACKGROUND_PROMPTS,
        }
    }
}

/// How the samples of one prompt are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSettings {
    /// Samples per prompt (seeds `first_seed..first_seed + samples`).
    pub samples: usize,
    pub first_seed: u64,
    /// DDIM steps.
    pub steps: usize,
    pub cfg: f64,
    /// DreamArtist++ adapter strengths (as `generate`'s `lora_pos` / `lora_neg`).
    pub lora_pos: f64,
    pub lora_neg: f64,
}

impl Default for SampleSettings {
    /// The reference protocol: 16 samples, DDIM 30 steps, cfg 5.
    fn default() -> Self {
        Self {
            samples: 16,
            first_seed: 0,
            steps: 30,
            cfg: 5.0,
            lora_pos: crate::generate::pipeline::DEFAULT_LORA_POS,
            lora_neg: crate::generate::pipeline::DEFAULT_LORA_NEG,
        }
    }
}

/// What is evaluated: the words it brings, how the subject is written into the
/// prompts, and the negative prompt used for every prompt.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub bank: &'a WordBank,
    /// Replaces `{}` in the prompts: `"<p>"`, or `"a big purple cross"`.
    pub word: String,
    /// A different plain prompt (the text oracle describes the background too).
    pub plain: Option<String>,
    pub negative: String,
    pub phrasing: Phrasing,
}

impl Subject<'_> {
    fn fill(&self, template: &str) -> String {
        template.replace("{}", &self.word)
    }

    /// The five prompts in protocol order: plain, then the background prompts.
    pub fn prompts(&self) -> Vec<(String, Option<Colour>)> {
        let plain = self
            .plain
            .clone()
            .unwrap_or_else(|| self.fill(PLAIN_PROMPT));
        std::iter::once((plain, None))
            .chain(
                self.phrasing
                    .background_prompts()
                    .iter()
                    .map(|(t, c)| (self.fill(t), Some(*c))),
            )
            .collect()
    }
}

/// Decodes scaled latents `[B, C, h, w]` to 8-bit images.
pub fn decode_images(sd: &StableDiffusion, latents: &Tensor) -> Result<Vec<RgbImage>, ToyError> {
    let img = sd
        .vae
        .decode(&sd.vae.unscale_latents(latents)?.to_dtype(sd.dtype)?)?;
    let img = ((img.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let img = (img * 255.0)?
        .round()?
        .permute((0, 2, 3, 1))?
        .contiguous()?;
    let (b, h, w, _) = img.dims4()?;
    let data = img.flatten_all()?.to_vec1::<f32>()?;
    let per = h * w * 3;
    (0..b)
        .map(|k| {
            let bytes: Vec<u8> = data[k * per..(k + 1) * per]
                .iter()
                .map(|v| *v as u8)
                .collect();
            RgbImage::from_raw(w as u32, h as u32, bytes)
                .ok_or_else(|| ToyError::Invalid("decoded image has the wrong size".into()))
        })
        .collect()
}

/// Samples one prompt `settings.samples` times in a single batched DDIM run.
pub fn sample_batch(
    sd: &StableDiffusion,
    bank: &WordBank,
    prompt: &str,
    negative: &str,
    settings: &SampleSettings,
) -> Result<Vec<RgbImage>, ToyError> {
    let n = settings.samples;
    if n == 0 || settings.steps == 0 {
        return Err(ToyError::Invalid(
            "samples and steps must be at least 1".into(),
        ));
    }
    // DreamArtist++ words bring their adapters, split as `generate` splits them.
    let adapters = bank.adapters_for(sd, prompt)?;
    let (pos, neg) = (settings.lora_pos, settings.lora_neg);
    let (cond, uncond) = adapters.encode_pair(sd, bank, (prompt, negative), (pos, neg))?;
    let _unet = lora::enter(adapters.scope(pos, neg, AdapterRows::CfgHalves));
    let (cond, uncond) = pad_pair(sd, cond, uncond)?;
    let down = sd.vae.downscale();
    let size = sd.native_size();
    let side = size / down;
    let micro = MicroConditioning::for_size(size, size);
    let cond = sd.conditioning(&cond, &micro)?.repeat(n)?;
    let uncond = sd.conditioning(&uncond, &micro)?.repeat(n)?;
    let ctx = GuidedContext {
        cond: &cond,
        uncond: &uncond,
        cfg: settings.cfg,
    };
    let lc = sd.vae.config.latent_channels;
    let noise: Vec<Tensor> = (0..n as u64)
        .map(|k| Rng::seed(settings.first_seed + k).randn((1, lc, side, side), &sd.device))
        .collect::<candle_core::Result<_>>()?;
    let mut sampler = Sampler::new(&sd.schedule, SamplerKind::Ddim, settings.steps)?;
    let latents = (Tensor::cat(&noise, 0)? * sampler.init_noise_sigma())?;
    let out = denoise_with(
        &sd.unet,
        &mut sampler,
        latents,
        0,
        &ctx,
        &Extras::default(),
        |_, _| StepControl::Continue,
    )?
    .ok_or_else(|| ToyError::Invalid("sampling was cancelled".into()))?;
    decode_images(sd, &out)
}

/// The detector's verdicts on the samples of one prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptScore {
    pub prompt: String,
    /// The background the prompt asks for (none for the plain prompt).
    pub requested_bg: Option<String>,
    /// Fractions of samples: the reference's shape, colour, both.
    pub shape: f64,
    pub colour: f64,
    pub shape_colour: f64,
    /// The reference's background.
    pub ref_bg: f64,
    /// The requested background; and requested background + shape + colour.
    pub bg_follows: f64,
    pub control: f64,
}

fn frac(dets: &[Detection], f: impl Fn(&Detection) -> bool) -> f64 {
    if dets.is_empty() {
        return 0.0;
    }
    dets.iter().filter(|d| f(d)).count() as f64 / dets.len() as f64
}

/// Scores the detections of one prompt's samples against a concept.
pub fn score_prompt(
    spec: &ConceptSpec,
    prompt: &str,
    requested: Option<Colour>,
    dets: &[Detection],
) -> PromptScore {
    let hit = |d: &Detection| d.shape == Some(spec.shape) && d.colour == Some(spec.colour);
    let follows = |d: &Detection| requested.is_some_and(|c| d.background == c);
    PromptScore {
        prompt: prompt.to_string(),
        requested_bg: requested.map(|c| c.to_string()),
        shape: frac(dets, |d| d.shape == Some(spec.shape)),
        colour: frac(dets, |d| d.colour == Some(spec.colour)),
        shape_colour: frac(dets, hit),
        ref_bg: frac(dets, |d| d.background == spec.bg),
        bg_follows: frac(dets, follows),
        control: frac(dets, |d| hit(d) && follows(d)),
    }
}

/// Mean pairwise L2 distance between images (pixels in [0, 1], flattened).
pub fn diversity(images: &[RgbImage]) -> f64 {
    let vecs: Vec<Vec<f64>> = images
        .iter()
        .map(|i| i.as_raw().iter().map(|v| *v as f64 / 255.0).collect())
        .collect();
    let (mut sum, mut n) = (0.0, 0usize);
    for a in 0..vecs.len() {
        for b in a + 1..vecs.len() {
            let d2: f64 = vecs[a]
                .iter()
                .zip(&vecs[b])
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            sum += d2.sqrt();
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The benchmark's figures for one subject (one method, one training seed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Scores {
    /// Plain prompt: shape and colour both the reference's.
    pub fidelity: f64,
    pub shape: f64,
    pub colour: f64,
    /// Plain prompt: the reference's background.
    pub copies_bg: f64,
    /// Background prompts: requested background + shape + colour (mean of 4).
    pub control: f64,
    /// Background prompts: requested background (mean of 4).
    pub bg_follows: f64,
    /// Plain prompt: mean pairwise L2 between samples.
    pub diversity: f64,
    /// `control` per background prompt, in protocol order.
    pub control_per_prompt: Vec<f64>,
}

impl Scores {
    /// The mean of several runs' scores (e.g. over training seeds).
    pub fn mean(all: &[Scores]) -> Scores {
        let n = all.len().max(1) as f64;
        let avg = |f: &dyn Fn(&Scores) -> f64| all.iter().map(f).sum::<f64>() / n;
        let k = all.first().map_or(0, |s| s.control_per_prompt.len());
        Scores {
            fidelity: avg(&|s| s.fidelity),
            shape: avg(&|s| s.shape),
            colour: avg(&|s| s.colour),
            copies_bg: avg(&|s| s.copies_bg),
            control: avg(&|s| s.control),
            bg_follows: avg(&|s| s.bg_follows),
            diversity: avg(&|s| s.diversity),
            control_per_prompt: (0..k)
                .map(|i| avg(&|s| s.control_per_prompt.get(i).copied().unwrap_or(0.0)))
                .collect(),
        }
    }
}

/// Everything one evaluation produced: the figures, each prompt's detail and
/// the samples (one row per prompt, for grids).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub scores: Scores,
    pub prompts: Vec<PromptScore>,
    pub rows: Vec<Vec<RgbImage>>,
}

/// Runs the protocol for one subject.
pub fn evaluate(
    sd: &StableDiffusion,
    spec: &ConceptSpec,
    subject: &Subject<'_>,
    settings: &SampleSettings,
) -> Result<Evaluation, ToyError> {
    let mut prompts = Vec::new();
    let mut rows = Vec::new();
    for (prompt, requested) in subject.prompts() {
        let images = sample_batch(sd, subject.bank, &prompt, &subject.negative, settings)?;
        let dets: Vec<Detection> = images.iter().map(detect).collect();
        prompts.push(score_prompt(spec, &prompt, requested, &dets));
        rows.push(images);
    }
    let plain = &prompts[0];
    let bgs = &prompts[1..];
    let mean = |f: &dyn Fn(&PromptScore) -> f64| bgs.iter().map(f).sum::<f64>() / bgs.len() as f64;
    let scores = Scores {
        fidelity: plain.shape_colour,
        shape: plain.shape,
        colour: plain.colour,
        copies_bg: plain.ref_bg,
        control: mean(&|p| p.control),
        bg_follows: mean(&|p| p.bg_follows),
        diversity: diversity(&rows[0]),
        control_per_prompt: bgs.iter().map(|p| p.control).collect(),
    };
    Ok(Evaluation {
        scores,
        prompts,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toyworld::world::{render, Attrs, Jitter};

    fn det(shape: Shape, colour: Colour, bg: Colour) -> Detection {
        Detection {
            background: bg,
            colour: Some(colour),
            shape: Some(shape),
            size: Some(Size::Big),
            shape_iou: 1.0,
            object_pixels: 100,
        }
    }

    #[test]
    fn prompt_scores_count_the_right_things() {
        let spec = CONCEPTS[0];
        let dets = [
            det(Shape::Cross, Colour::Purple, Colour::Green),
            det(Shape::Cross, Colour::Purple, Colour::Yellow),
            det(Shape::Circle, Colour::Purple, Colour::Green),
            det(Shape::Cross, Colour::Red, Colour::Green),
        ];
        let s = score_prompt(&spec, "p", Some(Colour::Green), &dets);
        assert_eq!(s.shape, 0.75);
        assert_eq!(s.colour, 0.75);
        assert_eq!(s.shape_colour, 0.5);
        assert_eq!(s.ref_bg, 0.25);
        assert_eq!(s.bg_follows, 0.75);
        assert_eq!(s.control, 0.25);
        let plain = score_prompt(&spec, "p", None, &dets);
        assert_eq!((plain.bg_follows, plain.control), (0.0, 0.0));
    }

    #[test]
    fn diversity_is_zero_for_copies_and_grows_with_change() {
        let a = Attrs {
            shape: Shape::Cross,
            colour: Colour::Purple,
            size: Size::Big,
            pos: Position::Center,
            bg: Colour::Yellow,
        };
        let img = render(&a, Jitter::default());
        assert_eq!(diversity(&[img.clone(), img.clone()]), 0.0);
        let other = render(
            &Attrs {
                bg: Colour::Green,
                ..a
            },
            Jitter::default(),
        );
        let d = diversity(&[img.clone(), other]);
        assert!(d > 10.0, "{d}");
    }

    #[test]
    fn prompts_follow_the_protocol() {
        let bank = WordBank::new();
        let s = Subject {
            bank: &bank,
            word: "<p>".into(),
            plain: None,
            negative: String::new(),
            phrasing: Phrasing::Protocol,
        };
        let p = s.prompts();
        assert_eq!(p.len(), 5);
        assert_eq!(p[0], ("a photo of <p>".to_string(), None));
        assert_eq!(
            p[1],
            (
                "a photo of <p> on a green background".to_string(),
                Some(Colour::Green)
            )
        );
        assert_eq!(p[4].0, "<p> on a black background");
        assert_eq!(
            CONCEPTS[0].full_caption(),
            "a photo of a big purple cross in the center, yellow background"
        );
        let photo = Subject {
            phrasing: Phrasing::Photo,
            ..s
        }
        .prompts();
        assert_eq!(photo[0].0, "a photo of <p>");
        let asked: Vec<_> = photo[1..].iter().map(|(_, c)| *c).collect();
        let protocol: Vec<_> = p[1..].iter().map(|(_, c)| *c).collect();
        assert_eq!(asked, protocol, "the same backgrounds, in the same order");
        assert_eq!(photo[4].0, "a photo of <p>, black background");
    }

    #[test]
    fn means_average_every_field() {
        let a = Scores {
            fidelity: 1.0,
            control_per_prompt: vec![1.0, 0.0],
            ..Default::default()
        };
        let b = Scores {
            fidelity: 0.5,
            control_per_prompt: vec![0.0, 0.0],
            ..Default::default()
        };
        let m = Scores::mean(&[a, b]);
        assert_eq!(m.fidelity, 0.75);
        assert_eq!(m.control_per_prompt, vec![0.5, 0.0]);
    }
}
