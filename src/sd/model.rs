//! Loading a whole Stable Diffusion pipeline: a local diffusers folder,
//! `hf:org/name[@revision]` resolved offline from the Hugging Face cache, or a
//! single-file checkpoint in the original LDM layout (`.safetensors`/`.ckpt`,
//! see [`super::single_file`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};

use super::clip::ClipTextEncoder;
use super::config::{
    read_json, ClipTextConfig, Prediction, SchedulerConfig, UNetConfig, VaeConfig,
};
use super::error::LoadError;
use super::scheduler::NoiseSchedule;
use super::single_file::{self, is_single_file, SingleFileSpec};
use super::tokenizer::ClipTokenizer;
use super::unet::UNet;
use super::vae::Vae;
use super::weights::{SafetensorsFiles, TensorSource, Weights};

/// Where a model comes from, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Folder(PathBuf),
    HfCache {
        repo: String,
        revision: Option<String>,
    },
    /// A single-file checkpoint (`.safetensors`/`.ckpt`), with the options
    /// written after `?` (`config=DIR&prediction=v`), checked when it is loaded.
    SingleFile {
        path: PathBuf,
        options: Option<String>,
    },
}

impl ModelSpec {
    pub fn parse(spec: &str) -> Self {
        if let Some(rest) = spec.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, v)) => (r.to_string(), Some(v.to_string())),
                None => (rest.to_string(), None),
            };
            ModelSpec::HfCache { repo, revision }
        } else {
            let (path, options) = match spec.split_once('?') {
                Some((p, o)) if is_single_file(p) => (p, Some(o.to_string())),
                _ => (spec, None),
            };
            if is_single_file(path) {
                ModelSpec::SingleFile {
                    path: PathBuf::from(path),
                    options,
                }
            } else {
                ModelSpec::Folder(PathBuf::from(spec))
            }
        }
    }

    /// The single-file spec with its options parsed (`None` for folders).
    pub fn single_file(&self) -> Result<Option<SingleFileSpec>, LoadError> {
        match self {
            ModelSpec::SingleFile { path, options } => {
                SingleFileSpec::from_options(path, options.as_deref()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The local folder holding the pipeline (HF specs from [`hf_cache`]), or
    /// the checkpoint file of a single-file spec.
    pub fn resolve(&self) -> Result<PathBuf, LoadError> {
        self.resolve_with_cache(&hf_cache())
    }

    /// As [`ModelSpec::resolve`], looking `hf:` specs up in the given cache.
    pub fn resolve_with_cache(&self, cache: &hf_hub::Cache) -> Result<PathBuf, LoadError> {
        match self {
            ModelSpec::Folder(p) => {
                if !p.is_dir() {
                    return Err(LoadError::MissingFile {
                        path: p.clone(),
                        what: "a diffusers model folder here".into(),
                    });
                }
                Ok(p.clone())
            }
            ModelSpec::SingleFile { path, .. } => {
                if !path.is_file() {
                    return Err(LoadError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no such single-file checkpoint",
                        ),
                    });
                }
                Ok(path.clone())
            }
            ModelSpec::HfCache { repo, revision } => {
                let r = match revision {
                    Some(rev) => hf_hub::Repo::with_revision(
                        repo.clone(),
                        hf_hub::RepoType::Model,
                        rev.clone(),
                    ),
                    None => hf_hub::Repo::model(repo.clone()),
                };
                let found = cache.repo(r).get("model_index.json");
                match found.and_then(|p| p.parent().map(Path::to_path_buf)) {
                    Some(dir) => Ok(dir),
                    None => Err(LoadError::NotInHfCache {
                        spec: format!("hf:{repo}"),
                        repo: repo.clone(),
                        cache: cache.path().clone(),
                    }),
                }
            }
        }
    }
}

/// The offline Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache() -> hf_hub::Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) => hf_hub::Cache::new(PathBuf::from(p)),
        None => hf_hub::Cache::from_env(),
    }
}

/// Finds a component's weights: plain, sharded, or `.fp16` variant safetensors.
pub fn open_component_weights(dir: &Path, base: &str) -> Result<Arc<dyn TensorSource>, LoadError> {
    let candidates = [
        format!("{base}.safetensors"),
        format!("{base}.safetensors.index.json"),
        format!("{base}.fp16.safetensors"),
        format!("{base}.fp16.safetensors.index.json"),
    ];
    for c in &candidates {
        let p = dir.join(c);
        if p.exists() {
            let src = if c.ends_with(".json") {
                SafetensorsFiles::open_index(&p)?
            } else {
                SafetensorsFiles::open(&p)?
            };
            return Ok(Arc::new(src));
        }
    }
    let bin = dir.join(format!("{base}.bin"));
    if bin.exists() {
        return Err(LoadError::UnsupportedLayout {
            path: bin,
            message: "PyTorch pickle weights; convert them to safetensors (diffusers saves safetensors by default)".into(),
        });
    }
    Err(LoadError::MissingFile {
        path: dir.join(format!("{base}.safetensors")),
        what: format!("{base}.safetensors (or a sharded/.fp16 variant)"),
    })
}

/// How to load: run dtype and device.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
}

impl LoadOptions {
    /// Refuses combinations the backend cannot run, before any weight is read.
    pub fn check(&self, model: &Path) -> Result<(), LoadError> {
        if self.dtype == DType::BF16 && self.device.is_cpu() {
            return Err(LoadError::UnsupportedLayout {
                path: model.to_path_buf(),
                message: "bf16 runs only on CUDA (candle's CPU backend has no bf16 matmul); \
                          use --dtype f16 or f32 on the CPU"
                    .into(),
            });
        }
        Ok(())
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// Every piece of a Stable Diffusion pipeline that this tool runs.
pub struct StableDiffusion {
    pub root: PathBuf,
    pub name: String,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextEncoder,
    pub unet: UNet,
    pub vae: Vae,
    pub schedule: NoiseSchedule,
    pub dtype: DType,
    pub device: Device,
}

impl StableDiffusion {
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self, LoadError> {
        opts.check(Path::new(spec))?;
        let spec = ModelSpec::parse(spec);
        if let Some(file) = spec.single_file()? {
            return Self::load_single_file(&file, opts);
        }
        Self::load_folder(&spec.resolve()?, opts)
    }

    /// Loads an original-layout single-file checkpoint.
    pub fn load_single_file(spec: &SingleFileSpec, opts: &LoadOptions) -> Result<Self, LoadError> {
        opts.check(&spec.path)?;
        single_file::load(spec, opts)
    }

    pub fn load_folder(root: &Path, opts: &LoadOptions) -> Result<Self, LoadError> {
        opts.check(root)?;
        let tokenizer = load_tokenizer(root)?;
        let text_encoder = load_text_encoder(root, opts)?;
        let unet = load_unet(root, opts)?;
        let vae = load_vae(root, opts)?;
        let schedule = load_schedule(root)?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        Ok(Self {
            root: root.to_path_buf(),
            name,
            tokenizer,
            text_encoder,
            unet,
            vae,
            schedule,
            dtype: opts.dtype,
            device: opts.device.clone(),
        })
    }

    pub fn prediction(&self) -> Prediction {
        self.schedule.prediction
    }
}

pub fn load_tokenizer(root: &Path) -> Result<ClipTokenizer, LoadError> {
    let dir = root.join("tokenizer");
    if !dir.is_dir() {
        return Err(LoadError::MissingFile {
            path: dir,
            what: "tokenizer/ with vocab.json and merges.txt".into(),
        });
    }
    ClipTokenizer::from_dir(&dir)
}

pub fn load_text_encoder(root: &Path, opts: &LoadOptions) -> Result<ClipTextEncoder, LoadError> {
    let dir = root.join("text_encoder");
    let cfg_path = dir.join("config.json");
    let cfg: ClipTextConfig = read_json(&cfg_path)?;
    let w = Weights::new(
        open_component_weights(&dir, "model")?,
        "text encoder",
        opts.dtype,
        &opts.device,
    );
    ClipTextEncoder::load(&w, &cfg).map_err(|e| with_config_path(e, &cfg_path))
}

pub fn load_unet(root: &Path, opts: &LoadOptions) -> Result<UNet, LoadError> {
    let dir = root.join("unet");
    let cfg_path = dir.join("config.json");
    let cfg: UNetConfig = read_json(&cfg_path)?;
    let w = Weights::new(
        open_component_weights(&dir, "diffusion_pytorch_model")?,
        "UNet",
        opts.dtype,
        &opts.device,
    );
    UNet::load(&w, &cfg, &cfg_path).map_err(|e| with_config_path(e, &cfg_path))
}

pub fn load_vae(root: &Path, opts: &LoadOptions) -> Result<Vae, LoadError> {
    let dir = root.join("vae");
    let cfg_path = dir.join("config.json");
    let cfg: VaeConfig = read_json(&cfg_path)?;
    let w = Weights::new(
        open_component_weights(&dir, "diffusion_pytorch_model")?,
        "VAE",
        opts.dtype,
        &opts.device,
    );
    Vae::load(&w, &cfg, &cfg_path).map_err(|e| with_config_path(e, &cfg_path))
}

pub fn load_schedule(root: &Path) -> Result<NoiseSchedule, LoadError> {
    let path = root.join("scheduler").join("scheduler_config.json");
    let cfg: SchedulerConfig = read_json(&path)?;
    NoiseSchedule::from_config(&cfg, &path)
}

/// The text encoder's width (768 for SD 1.x, 1024 for SD 2.x) without loading
/// the model: from `text_encoder/config.json`, or a single file's config folder
/// or token-embedding shape.
pub fn text_encoder_width(spec: &ModelSpec) -> Result<usize, LoadError> {
    if let Some(file) = spec.single_file()? {
        return single_file::text_width(&file);
    }
    let root = spec.resolve()?;
    let cfg: ClipTextConfig = read_json(&root.join("text_encoder").join("config.json"))?;
    Ok(cfg.hidden_size)
}

/// Blocks report config problems against a placeholder name; give them the real path.
pub(crate) fn with_config_path(e: LoadError, cfg_path: &Path) -> LoadError {
    match e {
        LoadError::BadConfig { path, message } if path.is_relative() && !path.exists() => {
            LoadError::BadConfig {
                path: cfg_path.to_path_buf(),
                message,
            }
        }
        LoadError::UnsupportedLayout { path, message } if path.is_relative() && !path.exists() => {
            LoadError::UnsupportedLayout {
                path: cfg_path.to_path_buf(),
                message,
            }
        }
        other => other,
    }
}
