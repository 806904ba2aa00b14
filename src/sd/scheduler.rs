//! The diffusion noise schedule (training side) and the samplers (generation
//! side): DDIM (eta 0), Euler, DPM-Solver++ 2M and its Karras-sigma variant.
//!
//! The schedule comes from `scheduler/scheduler_config.json`; each sampler uses
//! its own default timestep spacing, as A1111's k-diffusion samplers and
//! diffusers' defaults do (DDIM "leading", the others "linspace"). Arithmetic
//! mirrors diffusers (f32 schedule tables, f64 interpolation) so the reference
//! trajectories are reproduced to float precision.

use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::config::{Prediction, SchedulerConfig};
use super::error::LoadError;

/// Training-time quantities of the forward diffusion process.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    /// `alphas_cumprod[t]` for t in 0..num_train_timesteps (f32, as the reference).
    pub alphas_cumprod: Vec<f32>,
    pub prediction: Prediction,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| start + step * i as f64).collect()
}

impl NoiseSchedule {
    pub fn from_config(cfg: &SchedulerConfig, path: &Path) -> std::result::Result<Self, LoadError> {
        let n = cfg.num_train_timesteps;
        if n < 2 {
            return Err(LoadError::BadConfig {
                path: path.to_path_buf(),
                message: format!("num_train_timesteps must be at least 2, got {n}"),
            });
        }
        let betas: Vec<f32> = if let Some(tb) = &cfg.trained_betas {
            tb.iter().map(|b| *b as f32).collect()
        } else {
            match cfg.beta_schedule.as_str() {
                "linear" => linspace(cfg.beta_start, cfg.beta_end, n)
                    .into_iter()
                    .map(|b| b as f32)
                    .collect(),
                "scaled_linear" => linspace(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| {
                        let b = b as f32;
                        b * b
                    })
                    .collect(),
                "squaredcos_cap_v2" => {
                    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
                    (0..n)
                        .map(|i| {
                            let t1 = i as f64 / n as f64;
                            let t2 = (i + 1) as f64 / n as f64;
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                        })
                        .collect()
                }
                other => {
                    return Err(LoadError::UnsupportedLayout {
                        path: path.to_path_buf(),
                        message: format!(
                            "beta_schedule `{other}` (supported: linear, scaled_linear, squaredcos_cap_v2)"
                        ),
                    })
                }
            }
        };
        if betas.len() != n {
            return Err(LoadError::BadConfig {
                path: path.to_path_buf(),
                message: format!("trained_betas has {} entries, expected {n}", betas.len()),
            });
        }
        let mut acc = 1f32;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(Self {
            alphas_cumprod,
            prediction: cfg.prediction(path)?,
            steps_offset: cfg.steps_offset,
            set_alpha_to_one: cfg.set_alpha_to_one,
            clip_sample: cfg.clip_sample,
            clip_sample_range: cfg.clip_sample_range,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    fn coefs(&self, timesteps: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let n = self.num_train_timesteps();
        let mut a = Vec::with_capacity(timesteps.len());
        let mut s = Vec::with_capacity(timesteps.len());
        for &t in timesteps {
            if t >= n {
                candle_core::bail!("timestep {t} is outside the schedule (0..{n})");
            }
            let ab = self.alphas_cumprod[t];
            a.push(ab.sqrt());
            s.push((1.0 - ab).sqrt());
        }
        let b = timesteps.len();
        Ok((
            Tensor::from_vec(a, (b, 1, 1, 1), device)?,
            Tensor::from_vec(s, (b, 1, 1, 1), device)?,
        ))
    }

    /// `z_t = sqrt(ab_t) z0 + sqrt(1-ab_t) noise`, one timestep per sample.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let (a, s) = self.coefs(timesteps, x0.device())?;
        let dt = x0.dtype();
        x0.broadcast_mul(&a.to_dtype(dt)?)? + noise.broadcast_mul(&s.to_dtype(dt)?)?
    }

    /// What the UNet is trained to predict: the noise, or `v = sqrt(ab) ε − sqrt(1−ab) z0`.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        match self.prediction {
            Prediction::Epsilon => Ok(noise.clone()),
            Prediction::V => {
                let (a, s) = self.coefs(timesteps, x0.device())?;
                let dt = x0.dtype();
                noise.broadcast_mul(&a.to_dtype(dt)?)? - x0.broadcast_mul(&s.to_dtype(dt)?)?
            }
        }
    }

    /// The clean-latent estimate from a model output at `z_t`.
    pub fn predict_x0(
        &self,
        z_t: &Tensor,
        model_out: &Tensor,
        timesteps: &[usize],
    ) -> Result<Tensor> {
        let (a, s) = self.coefs(timesteps, z_t.device())?;
        let dt = z_t.dtype();
        let (a, s) = (a.to_dtype(dt)?, s.to_dtype(dt)?);
        match self.prediction {
            Prediction::Epsilon => (z_t - model_out.broadcast_mul(&s)?)?.broadcast_div(&a),
            Prediction::V => z_t.broadcast_mul(&a)? - model_out.broadcast_mul(&s)?,
        }
    }

    /// `sqrt((1-ab)/ab)` for every training timestep (f32, as diffusers).
    fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// The samplers users pick by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Ddim,
    Euler,
    #[serde(rename = "dpmpp_2m")]
    DpmPp2m,
    #[serde(rename = "dpmpp_2m_karras")]
    DpmPp2mKarras,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 4] = [
        SamplerKind::Ddim,
        SamplerKind::Euler,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mKarras,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        let norm = s.trim().to_ascii_lowercase().replace(['-', ' ', '+'], "_");
        match norm.as_str() {
            "ddim" => Some(Self::Ddim),
            "euler" => Some(Self::Euler),
            "dpmpp_2m" | "dpm__2m" | "dpmpp2m" | "dpm_solver__2m" => Some(Self::DpmPp2m),
            "dpmpp_2m_karras" | "dpm__2m_karras" | "dpmpp2m_karras" => Some(Self::DpmPp2mKarras),
            _ => None,
        }
    }

    /// The accepted names, for error messages: `ddim, euler, …`.
    pub fn known_names() -> String {
        Self::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::DpmPp2m => "dpmpp_2m",
            Self::DpmPp2mKarras => "dpmpp_2m_karras",
        }
    }

    /// The name A1111 writes in PNG `parameters` ("Sampler: ...").
    pub fn a1111_name(&self) -> &'static str {
        match self {
            Self::Ddim => "DDIM",
            Self::Euler => "Euler",
            Self::DpmPp2m => "DPM++ 2M",
            Self::DpmPp2mKarras => "DPM++ 2M Karras",
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured sampling run: timesteps, sigmas and multistep state.
#[derive(Debug, Clone)]
pub struct Sampler {
    kind: SamplerKind,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    /// Euler / DPM: sigma per step plus the final one (0).
    sigmas: Vec<f64>,
    ddim_step_ratio: usize,
    prev_x0: Option<Tensor>,
    lower_order_nums: usize,
}

/// `t` for a sigma by log-linear interpolation in the schedule (diffusers' `_sigma_to_t`).
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let mut low = 0usize;
    for (i, ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls >= 0.0 {
            low = i;
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let (l, h) = (log_sigmas[low], log_sigmas[high]);
    let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

fn interp(x: f64, ys: &[f32]) -> f64 {
    let n = ys.len();
    if x <= 0.0 {
        return ys[0] as f64;
    }
    if x >= (n - 1) as f64 {
        return ys[n - 1] as f64;
    }
    let i = x.floor() as usize;
    let f = x - i as f64;
    ys[i] as f64 + (ys[i + 1] as f64 - ys[i] as f64) * f
}

/// Rounds to f32 precision (diffusers stores its sigma tables as f32).
fn f32r(x: f64) -> f64 {
    x as f32 as f64
}

impl Sampler {
    pub fn new(schedule: &NoiseSchedule, kind: SamplerKind, steps: usize) -> Result<Self> {
        let n = schedule.num_train_timesteps();
        if steps == 0 || steps > n {
            candle_core::bail!("steps must be between 1 and {n}, got {steps}");
        }
        let sig = schedule.sigmas();
        let (timesteps, sigmas, ratio) = match kind {
            SamplerKind::Ddim => {
                let ratio = n / steps;
                let ts = (0..steps)
                    .rev()
                    .map(|i| (i * ratio + schedule.steps_offset).min(n - 1) as f64)
                    .collect();
                (ts, Vec::new(), ratio)
            }
            SamplerKind::Euler => {
                let ts: Vec<f64> = linspace(0.0, (n - 1) as f64, steps)
                    .into_iter()
                    .rev()
                    .map(|t| t as f32 as f64)
                    .collect();
                let mut s: Vec<f64> = ts.iter().map(|t| f32r(interp(*t, &sig))).collect();
                s.push(0.0);
                (ts, s, 0)
            }
            SamplerKind::DpmPp2m => {
                let ts: Vec<f64> = linspace(0.0, n as f64 - 1.0, steps + 1)
                    .into_iter()
                    .map(|t| t.round_ties_even())
                    .rev()
                    .take(steps)
                    .collect();
                let mut s: Vec<f64> = ts.iter().map(|t| f32r(interp(*t, &sig))).collect();
                s.push(0.0);
                (ts, s, 0)
            }
            SamplerKind::DpmPp2mKarras => {
                let log_sigmas: Vec<f64> = sig.iter().map(|s| (*s as f64).ln()).collect();
                let sigma_min = sig[0] as f64;
                let sigma_max = sig[n - 1] as f64;
                let rho = 7.0;
                let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
                let ks: Vec<f64> = linspace(0.0, 1.0, steps)
                    .into_iter()
                    .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
                    .collect();
                let ts = ks
                    .iter()
                    .map(|s| sigma_to_t(*s, &log_sigmas).round_ties_even())
                    .collect();
                let mut s: Vec<f64> = ks.into_iter().map(f32r).collect();
                s.push(0.0);
                (ts, s, 0)
            }
        };
        Ok(Self {
            kind,
            schedule: schedule.clone(),
            timesteps,
            sigmas,
            ddim_step_ratio: ratio,
            prev_x0: None,
            lower_order_nums: 0,
        })
    }

    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    /// The model timesteps, one per step, in sampling order.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Scale of the starting noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            SamplerKind::Euler => self.sigmas.iter().cloned().fold(0.0, f64::max),
            _ => 1.0,
        }
    }

    /// The input the UNet sees at step `i`.
    pub fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        match self.kind {
            SamplerKind::Euler => {
                let s = self.sigmas[i];
                x / f32r((s * s + 1.0).sqrt())
            }
            _ => Ok(x.clone()),
        }
    }

    /// Noises clean latents to the level of step `i` (img2img start).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        match self.kind {
            SamplerKind::Ddim => {
                let t = self.timesteps[i] as usize;
                self.schedule.add_noise(x0, noise, &vec![t; x0.dim(0)?])
            }
            SamplerKind::Euler => x0 + (noise * self.sigmas[i])?,
            SamplerKind::DpmPp2m | SamplerKind::DpmPp2mKarras => {
                let (a, s) = alpha_sigma(self.sigmas[i]);
                (x0 * a)? + (noise * s)?
            }
        }
    }

    /// Forgets multistep history (for reuse from the first step).
    pub fn reset(&mut self) {
        self.prev_x0 = None;
        self.lower_order_nums = 0;
    }

    /// One denoising step from `x` at step `i` given the (guided) model output.
    pub fn step(&mut self, model_out: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        match self.kind {
            SamplerKind::Ddim => self.ddim_step(model_out, i, x),
            SamplerKind::Euler => self.euler_step(model_out, i, x),
            SamplerKind::DpmPp2m | SamplerKind::DpmPp2mKarras => self.dpm_step(model_out, i, x),
        }
    }

    fn ddim_step(&self, out: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let ac = &self.schedule.alphas_cumprod;
        let t = self.timesteps[i] as usize;
        let prev = t as i64 - self.ddim_step_ratio as i64;
        let a_t = ac[t] as f64;
        let a_prev = if prev >= 0 {
            ac[prev as usize] as f64
        } else if self.schedule.set_alpha_to_one {
            1.0
        } else {
            ac[0] as f64
        };
        let b_t = 1.0 - a_t;
        let (mut x0, eps) = match self.schedule.prediction {
            Prediction::Epsilon => (((x - (out * b_t.sqrt())?)? / a_t.sqrt())?, out.clone()),
            Prediction::V => (
                ((x * a_t.sqrt())? - (out * b_t.sqrt())?)?,
                ((out * a_t.sqrt())? + (x * b_t.sqrt())?)?,
            ),
        };
        if self.schedule.clip_sample {
            let r = self.schedule.clip_sample_range as f32;
            x0 = x0.clamp(-r, r)?;
        }
        (x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?
    }

    fn euler_step(&self, out: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        let x0 = match self.schedule.prediction {
            Prediction::Epsilon => (x - (out * sigma)?)?,
            Prediction::V => {
                let c = sigma * sigma + 1.0;
                ((out * (-sigma / c.sqrt()))? + (x / c)?)?
            }
        };
        let d = ((x - x0)? / sigma)?;
        let dt = self.sigmas[i + 1] - sigma;
        x + (d * dt)?
    }

    fn dpm_step(&mut self, out: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let x0 = match self.schedule.prediction {
            Prediction::Epsilon => ((x - (out * sigma_s0)?)? / alpha_s0)?,
            Prediction::V => ((x * alpha_s0)? - (out * sigma_s0)?)?,
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let lambda = |a: f64, s: f64| a.ln() - s.ln();
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let last = i + 1 == self.timesteps.len();
        let first_order = self.lower_order_nums < 1 || last || i == 0 || self.prev_x0.is_none();
        let ratio = if sigma_s0 == 0.0 {
            0.0
        } else {
            sigma_t / sigma_s0
        };
        let phi = alpha_t * ((-h).exp() - 1.0);
        let next = if first_order {
            ((x * ratio)? - (&x0 * phi)?)?
        } else {
            let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
            let lambda_s1 = lambda(alpha_s1, sigma_s1);
            let h0 = lambda_s0 - lambda_s1;
            let r0 = h0 / h;
            let prev = self
                .prev_x0
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("DPM++ history missing".into()))?;
            let d1 = ((&x0 - prev)? * (1.0 / r0))?;
            (((x * ratio)? - (&x0 * phi)?)? - (d1 * (0.5 * phi))?)?
        };
        self.prev_x0 = Some(x0);
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        Ok(next)
    }
}

/// VP coefficients for a VE sigma: `alpha = 1/sqrt(1+σ²)`, `sigma_vp = σ·alpha`.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let a = 1.0 / (sigma * sigma + 1.0).sqrt();
    (a, sigma * a)
}
