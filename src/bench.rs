//! `bench`: the DreamArtist training step and the sampling loop, timed the way
//! the PyTorch + diffusers peer (`shared/bench/peer_bench.py`) times them, with
//! the same JSON keys, so the two can be compared side by side.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

use crate::generate::{denoise, GuidedContext, StepControl};
use crate::rng::Rng;
use crate::sd::MicroConditioning;
use crate::sd::{LoadOptions, PseudoWord, Sampler, SamplerKind, StableDiffusion};
use crate::train::{cpt_loss, AdamW, AdamWConfig, CfgSpec, ConceptPrompts, CptBatch};

/// Real model sizes with random weights, for timing without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomModel {
    Sd15,
    Sdxl,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A model spec; `None` with `random` builds real sizes with random weights.
    pub model: Option<String>,
    pub random: Option<RandomModel>,
    /// Image size in pixels.
    pub size: usize,
    pub steps: usize,
    pub train_iters: usize,
    pub dtype: DType,
    pub device: Device,
    /// Train with activation recompute (gradient checkpointing).
    pub recompute: bool,
}

/// One JSON line, keys as the peer's.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub device: String,
    pub dtype: String,
    pub model: String,
    pub size: usize,
    pub train_step_ms: f64,
    pub sample_step_ms: f64,
    pub sample_total_ms: f64,
    pub sampling_steps: usize,
    pub peak_mem_mib: f64,
    pub threads: usize,
    /// Ours only (the peer has no such keys): whether training used
    /// activation recompute, the peak memory once the model was loaded
    /// (weights and load buffers), and the peak by the end of the training
    /// steps (before sampling): the process's peak RSS (host memory, on CUDA
    /// too), which only grows, so on the CPU `train_peak − loaded_peak` is
    /// what training added.
    pub recompute: bool,
    pub loaded_peak_mem_mib: f64,
    pub train_peak_mem_mib: f64,
}

/// Which timed phase a profiler attached by `scripts/cpu-profile.sh` sees:
/// with `DREAMARTIST_PERF_CTL` naming `perf record --control`'s fifo, the
/// phase named by `DREAMARTIST_PERF_PHASE` (`train`, the default, or
/// `sample`) is wrapped in `enable`/`disable`, so model building and warm-up
/// stay out of the profile.
struct ProfilerWindow {
    fifo: Option<std::path::PathBuf>,
    phase: String,
}

impl ProfilerWindow {
    fn from_env() -> Self {
        Self {
            fifo: std::env::var_os("DREAMARTIST_PERF_CTL").map(Into::into),
            phase: std::env::var("DREAMARTIST_PERF_PHASE").unwrap_or_else(|_| "train".into()),
        }
    }

    fn send(&self, phase: &str, command: &str) {
        use std::io::Write;
        let Some(fifo) = self.fifo.as_ref().filter(|_| self.phase == phase) else {
            return;
        };
        let sent = std::fs::OpenOptions::new()
            .write(true)
            .open(fifo)
            .and_then(|mut f| f.write_all(format!("{command}\n").as_bytes()));
        if let Err(e) = sent {
            tracing::warn!("profiler control {}: {e}", fifo.display());
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Peak resident memory of this process (what the peer reports on CPU).
pub fn peak_rss_mib() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes the struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            return usage.ru_maxrss as f64 / 1024.0;
        }
    }
    f64::NAN
}

/// Peak GPU memory in use during the bench, above what was in use when it
/// started (the CUDA context): a thread polls the driver's free-memory count
/// every millisecond. The peer reports PyTorch's peak allocation, which also
/// counts the weights and excludes the context, so the two compare closely
/// (ours can overstate by what the allocator holds freed).
#[cfg(feature = "cuda")]
struct GpuMemoryPoll {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    baseline: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "cuda")]
impl GpuMemoryPoll {
    fn start(device: &Device) -> Option<Self> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let ctx = device
            .as_cuda_device()
            .ok()?
            .cuda_stream()
            .context()
            .clone();
        let (free, total) = ctx.mem_get_info().ok()?;
        let baseline = total - free;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(baseline));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((free, total)) = ctx.mem_get_info() {
                        peak.fetch_max(total - free, Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        Some(Self {
            stop,
            peak,
            baseline,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> f64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.peak.load(Ordering::Relaxed) - self.baseline) as f64 / (1024.0 * 1024.0)
    }
}

/// Peak memory as the peer measures it on this device: GPU memory on CUDA,
/// the process's resident memory on the CPU.
struct PeakMemory {
    #[cfg(feature = "cuda")]
    gpu: Option<GpuMemoryPoll>,
}

impl PeakMemory {
    fn start(_device: &Device) -> Self {
        Self {
            #[cfg(feature = "cuda")]
            gpu: GpuMemoryPoll::start(_device),
        }
    }

    fn finish(self) -> f64 {
        #[cfg(feature = "cuda")]
        if let Some(gpu) = self.gpu {
            return gpu.finish();
        }
        peak_rss_mib()
    }
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize().context("device synchronisation")
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        _ => "f32",
    }
}

pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let memory = PeakMemory::start(&opts.device);
    let load = LoadOptions {
        dtype: opts.dtype,
        device: opts.device.clone(),
    };
    let sd = match (&opts.model, opts.random) {
        (_, Some(RandomModel::Sd15)) => StableDiffusion::random_sd15(&load)?,
        (_, Some(RandomModel::Sdxl)) => StableDiffusion::random_sdxl(&load)?,
        (Some(m), None) => StableDiffusion::load(m, &load)?,
        (None, None) => anyhow::bail!("give --model SPEC, --sd15-random or --sdxl-random"),
    };
    let loaded_peak = peak_rss_mib();
    let down = sd.vae.downscale();
    if opts.size == 0 || opts.size % 8 != 0 || opts.size % down != 0 {
        anyhow::bail!(
            "size {} must be a multiple of 8 and of the VAE factor {down}",
            opts.size
        );
    }
    let lat = opts.size / down;
    let lc = sd.vae.config.latent_channels;
    let d = sd.word_width();
    let dev = &sd.device;
    // The peer's prompt: "a photo of" + 3 slots, for both words.
    let words = [
        PseudoWord {
            name: "<p>".into(),
            vectors: 3,
        },
        PseudoWord {
            name: "<n>".into(),
            vectors: 3,
        },
    ];
    let prompts = ConceptPrompts {
        positive: sd.tokenize("a photo of <p>", &words),
        negative: sd.tokenize("a photo of <n>", &words),
    };
    let mut rng = Rng::seed(0);
    let pos = Var::from_tensor(&(rng.randn((3, d), dev)? * 0.02)?)?;
    let neg = Var::from_tensor(&(rng.randn((3, d), dev)? * 0.02)?)?;
    let adam = AdamWConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt_pos = AdamW::new(&pos, adam)?;
    let mut opt_neg = AdamW::new(&neg, adam)?;
    let z0 = rng.randn((1, lc, lat, lat), dev)?;
    let cfg = CfgSpec::Constant(3.0);
    let mut train_ms = Vec::new();
    let profiler = ProfilerWindow::from_env();
    for i in 0..opts.train_iters + 2 {
        sync(dev)?;
        if i == 2 {
            profiler.send("train", "enable");
        }
        let t0 = Instant::now();
        let t = rng.below(sd.schedule.num_train_timesteps() as u64) as usize;
        let noise = rng.randn((1, lc, lat, lat), dev)?;
        let batch = CptBatch {
            z0: &z0,
            noise: &noise,
            timesteps: &[t],
            image: None,
            mask: None,
            recompute: opts.recompute,
            min_snr_gamma: None,
        };
        let loss = cpt_loss(
            &sd,
            std::slice::from_ref(&prompts),
            pos.as_tensor(),
            neg.as_tensor(),
            &cfg,
            0.0,
            &batch,
        )?;
        let grads = loss.total.backward()?;
        for (var, opt) in [(&pos, &mut opt_pos), (&neg, &mut opt_neg)] {
            if let Some(g) = grads.get(var.as_tensor()) {
                opt.update(var, g, 3e-3)?;
            }
        }
        sync(dev)?;
        if i >= 2 {
            train_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }

    profiler.send("train", "disable");
    let train_peak = peak_rss_mib();

    // Sampling: encode, DDIM with CFG 7.5, decode; twice, the first as warm-up.
    // Detached: sampling needs no gradient graph.
    let vectors = Tensor::cat(&[pos.as_tensor(), neg.as_tensor()], 0)?.detach();
    let mut sample = || -> Result<(Vec<f64>, f64)> {
        sync(dev)?;
        let t0 = Instant::now();
        let enc = sd.text.encode(
            &[prompts.negative.clone(), prompts.positive.clone()],
            Some(&vectors),
        )?;
        let both = sd.conditioning(&enc, &MicroConditioning::for_size(opts.size, opts.size))?;
        let (uncond, cond) = (both.narrow(0, 1)?, both.narrow(1, 1)?);
        let mut sampler = Sampler::new(&sd.schedule, SamplerKind::Ddim, opts.steps)?;
        let x = (rng.randn((1, lc, lat, lat), dev)? * sampler.init_noise_sigma())?;
        let guided = GuidedContext {
            cond: &cond,
            uncond: &uncond,
            cfg: 7.5,
        };
        let mut step_ms = Vec::new();
        let mut last = Instant::now();
        let x = denoise(&sd.unet, &mut sampler, x, 0, &guided, |_, _| {
            let _ = dev.synchronize();
            step_ms.push(last.elapsed().as_secs_f64() * 1e3);
            last = Instant::now();
            StepControl::Continue
        })?
        .context("sampling was cancelled")?;
        let img = sd
            .vae
            .decode(&sd.vae.unscale_latents(&x)?.to_dtype(sd.dtype)?)?;
        let _ = img.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        sync(dev)?;
        Ok((step_ms, t0.elapsed().as_secs_f64() * 1e3))
    };
    sample()?;
    profiler.send("sample", "enable");
    let (mut step_ms, total_ms) = sample()?;
    profiler.send("sample", "disable");
    Ok(BenchReport {
        implementation: "dreamartist".into(),
        device: match dev.location() {
            candle_core::DeviceLocation::Cpu => "cpu".into(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        },
        dtype: dtype_name(opts.dtype).into(),
        model: sd.name.clone(),
        size: opts.size,
        train_step_ms: round2(median(&mut train_ms)),
        sample_step_ms: round2(median(&mut step_ms)),
        sample_total_ms: (total_ms * 10.0).round() / 10.0,
        sampling_steps: opts.steps,
        peak_mem_mib: (memory.finish() * 10.0).round() / 10.0,
        threads: candle_core::utils::get_num_threads(),
        recompute: opts.recompute,
        loaded_peak_mem_mib: (loaded_peak * 10.0).round() / 10.0,
        train_peak_mem_mib: (train_peak * 10.0).round() / 10.0,
    })
}
