//! The DreamArtist loss: one UNet call on `[z_t, z_t]` with contexts
//! `[C_neg, C_pos]`, guided output `o = o_neg + g(t)·(o_pos − o_neg)`, masked
//! MSE to the target, optional L1 reconstruction through the VAE decoder.
//! `g = 1` is plain Textual Inversion: the negative branch is then skipped
//! (its gradient is exactly zero anyway).

use crate::sd::config::Prediction;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Result, Tensor};

use crate::sd::{Conditioning, MicroConditioning, StableDiffusion, Tokens};

/// How `g(t)` varies with the timestep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfgCurve {
    /// `rho = r`
    Linear,
    /// `rho = cos((r − 1)·π/2)`
    Cos,
    /// `rho = 1 − cos(r·π/2)`
    Cos2,
}

/// The training guidance scale: a constant, or `"lo-hi:ln|cos|cos2"` over
/// `r = t / (T−1)` (a plain `"lo-hi"` is `ln`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CfgSpec {
    Constant(f64),
    Dynamic { lo: f64, hi: f64, curve: CfgCurve },
}

impl CfgSpec {
    /// `g(t)` for a training timestep out of `num_train` (1000 for SD).
    pub fn at(&self, t: usize, num_train: usize) -> f64 {
        match *self {
            CfgSpec::Constant(g) => g,
            CfgSpec::Dynamic { lo, hi, curve } => {
                let r = t as f64 / (num_train.max(2) - 1) as f64;
                let rho = match curve {
                    CfgCurve::Linear => r,
                    CfgCurve::Cos => ((r - 1.0) * std::f64::consts::FRAC_PI_2).cos(),
                    CfgCurve::Cos2 => 1.0 - (r * std::f64::consts::FRAC_PI_2).cos(),
                };
                lo + (hi - lo) * rho
            }
        }
    }

    /// True when every timestep gets `g = 1` (Textual Inversion).
    pub fn is_plain_ti(&self) -> bool {
        matches!(*self, CfgSpec::Constant(g) if g == 1.0)
    }
}

impl FromStr for CfgSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!("invalid train cfg `{s}`: use a number (e.g. 5) or `lo-hi[:ln|cos|cos2]` (e.g. `1.5-3.0:cos`; plain `lo-hi` is linear)")
        };
        if let Ok(g) = s.parse::<f64>() {
            if !g.is_finite() {
                return Err(bad());
            }
            return Ok(CfgSpec::Constant(g));
        }
        // A plain `lo-hi` is linear, as the DreamArtist extension documents it.
        let (range, kind) = s.split_once(':').unwrap_or((s, "ln"));
        let (lo, hi) = range.split_once('-').ok_or_else(bad)?;
        let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
        let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
        let curve = match kind.trim() {
            "ln" | "linear" => CfgCurve::Linear,
            "cos" => CfgCurve::Cos,
            "cos2" => CfgCurve::Cos2,
            _ => return Err(bad()),
        };
        if !lo.is_finite() || !hi.is_finite() {
            return Err(bad());
        }
        Ok(CfgSpec::Dynamic { lo, hi, curve })
    }
}

impl fmt::Display for CfgSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CfgSpec::Constant(g) => write!(f, "{g}"),
            CfgSpec::Dynamic { lo, hi, curve } => {
                let k = match curve {
                    CfgCurve::Linear => "ln",
                    CfgCurve::Cos => "cos",
                    CfgCurve::Cos2 => "cos2",
                };
                write!(f, "{lo}-{hi}:{k}")
            }
        }
    }
}

/// The tokenized prompts of one concept (one sequence per text encoder):
/// `Slot(k)` indexes the stacked `[pos; neg]` vector matrix.
#[derive(Debug, Clone)]
pub struct ConceptPrompts {
    pub positive: Tokens,
    pub negative: Tokens,
}

/// One micro-batch: scaled latents, noise and timesteps per sample, and
/// (for the reconstruction loss and masks) the images and weight maps.
pub struct CptBatch<'a> {
    pub z0: &'a Tensor,
    pub noise: &'a Tensor,
    pub timesteps: &'a [usize],
    /// Images in [-1, 1], `[B, 3, H, W]` (needed when `rec_weight > 0`).
    pub image: Option<&'a Tensor>,
    /// Weight map `[B, 1, h, w]` at latent size.
    pub mask: Option<&'a Tensor>,
    /// Run the UNet with activation recompute ([`crate::sd::unet::UNet::forward_with`]).
    pub recompute: bool,
    /// MinSNR-γ loss weighting ([`min_snr_weights`]); `None`: every timestep weighs 1.
    pub min_snr_gamma: Option<f64>,
}

/// MinSNR-γ weights per sample (Hang et al. 2023, "Efficient Diffusion
/// Training via Min-SNR Weighting Strategy", as diffusers' and kohya's
/// scripts apply it): with `SNR = ᾱ_t / (1 − ᾱ_t)`, `min(SNR, γ) / SNR` for
/// ε-prediction and `min(SNR, γ) / (SNR + 1)` for v-prediction. Low-noise
/// timesteps, whose easy targets otherwise dominate the loss, weigh less.
pub fn min_snr_weights(
    schedule: &crate::sd::NoiseSchedule,
    timesteps: &[usize],
    gamma: f64,
    prediction: Prediction,
) -> Vec<f64> {
    timesteps
        .iter()
        .map(|&t| {
            let ab = schedule.alphas_cumprod[t.min(schedule.num_train_timesteps() - 1)] as f64;
            let snr = ab / (1.0 - ab).max(1e-12);
            match prediction {
                Prediction::Epsilon => snr.min(gamma) / snr,
                Prediction::V => snr.min(gamma) / (snr + 1.0),
            }
        })
        .collect()
}

/// The loss and its terms (scalars).
pub struct CptLoss {
    pub total: Tensor,
    pub mse: Tensor,
    pub rec: Option<Tensor>,
}

/// Computes the DreamArtist loss for one batch. `pos` and `neg` are the two
/// vector matrices (usually `Var`s); prompts reference them stacked `[pos; neg]`.
/// `prompts` holds one pair shared by the batch or one pair per sample.
pub fn cpt_loss(
    sd: &StableDiffusion,
    prompts: &[ConceptPrompts],
    pos: &Tensor,
    neg: &Tensor,
    cfg: &CfgSpec,
    rec_weight: f64,
    batch: &CptBatch<'_>,
) -> Result<CptLoss> {
    let b = batch.z0.dim(0)?;
    if batch.timesteps.len() != b || batch.noise.dims() != batch.z0.dims() {
        candle_core::bail!(
            "batch of {b} latents with {} timesteps and noise {:?}",
            batch.timesteps.len(),
            batch.noise.dims()
        );
    }
    let dtype = sd.dtype;
    let vectors = Tensor::cat(&[pos, neg], 0)?;
    let schedule = &sd.schedule;
    let z_t = schedule.add_noise(batch.z0, batch.noise, batch.timesteps)?;
    let ts: Vec<f64> = batch.timesteps.iter().map(|t| *t as f64).collect();
    let n_train = schedule.num_train_timesteps();
    // SDXL's size conditioning: the training resolution, uncropped.
    let (_, _, lh, lw) = batch.z0.dims4()?;
    let down = sd.vae.downscale();
    let micro = MicroConditioning::for_size(lh * down, lw * down);

    // One template line (the common case) gives every sample the same pair:
    // run the text encoder once, not once per sample.
    let shared;
    let prompts = match prompts.split_first() {
        Some((first, rest))
            if !rest.is_empty()
                && rest
                    .iter()
                    .all(|c| c.positive == first.positive && c.negative == first.negative) =>
        {
            shared = [first.clone()];
            &shared[..]
        }
        _ => prompts,
    };
    let p = prompts.len();
    if p != 1 && p != b {
        candle_core::bail!("{p} prompt pairs for a batch of {b}");
    }
    // Encodings of shared prompts are computed once and repeated over the batch.
    let per_sample = |c: Conditioning| -> Result<Conditioning> {
        if p == 1 {
            c.repeat(b)
        } else {
            Ok(c)
        }
    };
    let guided = if cfg.is_plain_ti() {
        let pos_seqs: Vec<Tokens> = prompts.iter().map(|c| c.positive.clone()).collect();
        let enc = sd.text.encode(&pos_seqs, Some(&vectors))?;
        let cond = per_sample(sd.conditioning(&enc, &micro)?)?;
        sd.unet
            .forward_cond_with(&z_t.to_dtype(dtype)?, &ts, &cond, batch.recompute)?
            .to_dtype(DType::F32)?
    } else {
        let seqs: Vec<Tokens> = prompts
            .iter()
            .map(|c| c.negative.clone())
            .chain(prompts.iter().map(|c| c.positive.clone()))
            .collect();
        let enc = sd.text.encode(&seqs, Some(&vectors))?;
        let both = sd.conditioning(&enc, &micro)?;
        let c_neg = per_sample(both.narrow(0, p)?)?;
        let c_pos = per_sample(both.narrow(p, p)?)?;
        let cond = Conditioning::cat(&[&c_neg, &c_pos])?;
        let z_in = Tensor::cat(&[&z_t, &z_t], 0)?.to_dtype(dtype)?;
        let ts2: Vec<f64> = ts.iter().chain(ts.iter()).copied().collect();
        let out = sd
            .unet
            .forward_cond_with(&z_in, &ts2, &cond, batch.recompute)?
            .to_dtype(DType::F32)?;
        let o_neg = out.narrow(0, 0, b)?;
        let o_pos = out.narrow(0, b, b)?;
        let g: Vec<f32> = batch
            .timesteps
            .iter()
            .map(|t| cfg.at(*t, n_train) as f32)
            .collect();
        let g = Tensor::from_vec(g, (b, 1, 1, 1), z_t.device())?;
        (&o_neg + (o_pos - &o_neg)?.broadcast_mul(&g)?)?
    };

    let target = schedule.target(batch.z0, batch.noise, batch.timesteps)?;
    let sq = (&guided - &target)?.sqr()?;
    let sq = match batch.mask {
        Some(m) => sq.broadcast_mul(m)?,
        None => sq,
    };
    // Every sample has as many elements, so weighting each sample's squares
    // weighs its mean.
    let sq = match batch.min_snr_gamma {
        Some(gamma) => {
            let w: Vec<f32> = min_snr_weights(schedule, batch.timesteps, gamma, sd.prediction())
                .into_iter()
                .map(|w| w as f32)
                .collect();
            sq.broadcast_mul(&Tensor::from_vec(w, (b, 1, 1, 1), sq.device())?)?
        }
        None => sq,
    };
    let mse = sq.mean_all()?;
    let mut total = mse.clone();
    let mut rec = None;
    if rec_weight > 0.0 {
        let image = batch.image.ok_or_else(|| {
            candle_core::Error::Msg("reconstruction loss needs the images".into())
        })?;
        let x0 = schedule.predict_x0(&z_t, &guided, batch.timesteps)?;
        let decoded = sd
            .vae
            .decode(&sd.vae.unscale_latents(&x0)?.to_dtype(dtype)?)?
            .to_dtype(DType::F32)?;
        let l1 = (image - decoded)?.abs()?.mean_all()?;
        total = (total + (&l1 * rec_weight)?)?;
        rec = Some(l1);
    }
    Ok(CptLoss { total, mse, rec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_spec_parses_and_evaluates() {
        assert_eq!("5".parse::<CfgSpec>().unwrap(), CfgSpec::Constant(5.0));
        let d: CfgSpec = "1.5-3.0:cos".parse().unwrap();
        assert!((d.at(999, 1000) - 3.0).abs() < 1e-12);
        assert!((d.at(0, 1000) - 1.5).abs() < 1e-12);
        let l: CfgSpec = "1-3:ln".parse().unwrap();
        assert!((l.at(999, 1000) - 3.0).abs() < 1e-12);
        assert!((l.at(0, 1000) - 1.0).abs() < 1e-12);
        let c2: CfgSpec = "2-4:cos2".parse().unwrap();
        assert!((c2.at(999, 1000) - 4.0).abs() < 1e-9);
        assert_eq!(d.to_string().parse::<CfgSpec>().unwrap(), d);
        assert_eq!(
            "1.5-3.0".parse::<CfgSpec>().unwrap(),
            "1.5-3.0:ln".parse::<CfgSpec>().unwrap()
        );
        for bad in ["", "abc", "1-", "1-2:sin", "x-2:ln", "nan"] {
            assert!(bad.parse::<CfgSpec>().is_err(), "{bad} parsed");
        }
        assert!(CfgSpec::Constant(1.0).is_plain_ti());
        assert!(!CfgSpec::Constant(3.0).is_plain_ti());
    }
}
