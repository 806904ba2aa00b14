//! Loading a whole Stable Diffusion pipeline (SD 1.x, 2.x or SDXL): a local
//! diffusers folder, `hf:org/name[@revision]` resolved offline from the Hugging
//! Face cache, or a single-file checkpoint in the original LDM layout
//! (`.safetensors`/`.ckpt`, see [`super::single_file`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::clip::ClipTextEncoder;
use super::config::{read_json, ClipTextConfig, SchedulerConfig, UNetConfig, VaeConfig};
use super::error::LoadError;
use super::family::Family;
use super::scheduler::NoiseSchedule;
use super::single_file::{self, is_single_file, SingleFileSpec};
use super::text::TextStack;
use super::tokenizer::ClipTokenizer;
use super::unet::UNet;
use super::vae::Vae;
use super::weights::{SafetensorsFiles, TensorSource, Weights};

pub(crate) use super::stable_diffusion::with_config_path;
pub use super::stable_diffusion::{folder_family, LoadOptions, StableDiffusion};

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
        if let Some((repo, revision)) = parse_hf(spec) {
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
                    return Err(LoadError::NoModel { path: p.clone() });
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
                match find_in_hf_cache(cache, repo, revision.as_deref(), "model_index.json") {
                    Some(dir) => Ok(dir),
                    None => Err(LoadError::NotInHfCache {
                        spec: match revision {
                            Some(rev) => format!("hf:{repo}@{rev}"),
                            None => format!("hf:{repo}"),
                        },
                        download: match revision {
                            Some(rev) => format!("{repo} --revision {rev}"),
                            None => repo.clone(),
                        },
                        cache: cache.path().clone(),
                    }),
                }
            }
        }
    }
}

/// An `hf:org/name[@revision]` spec's repository and revision (`None` for
/// anything that does not start with `hf:`).
pub fn parse_hf(spec: &str) -> Option<(String, Option<String>)> {
    let rest = spec.strip_prefix("hf:")?;
    Some(match rest.split_once('@') {
        Some((r, v)) => (r.to_string(), Some(v.to_string())),
        None => (rest.to_string(), None),
    })
}

/// The snapshot folder of `repo` (at `revision`) in the offline cache that
/// holds `marker` (`model_index.json` for pipelines, `config.json` for CLIP).
///
/// A branch or tag is looked up through `refs/<name>`; a full commit hash is a
/// snapshot folder of its own (`huggingface_hub` writes no `refs/<sha>` when
/// asked for a commit), so it is found there directly.
pub fn find_in_hf_cache(
    cache: &hf_hub::Cache,
    repo: &str,
    revision: Option<&str>,
    marker: &str,
) -> Option<PathBuf> {
    let r = match revision {
        Some(rev) => {
            hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, rev.to_string())
        }
        None => hf_hub::Repo::model(repo.to_string()),
    };
    let by_ref = cache
        .repo(r.clone())
        .get(marker)
        .and_then(|p| p.parent().map(Path::to_path_buf));
    by_ref.or_else(|| {
        let rev = revision.filter(|r| is_commit_hash(r))?;
        let snap = cache
            .path()
            .join(r.folder_name())
            .join("snapshots")
            .join(rev);
        snap.join(marker).is_file().then_some(snap)
    })
}

/// A full 40-hex-digit git commit hash (never a path: no separators).
fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The offline Hugging Face cache, found as `huggingface_hub` finds it:
/// `$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE` (its older name), `$HF_HOME/hub`,
/// `$XDG_CACHE_HOME/huggingface/hub`, then `~/.cache/huggingface/hub`.
pub fn hf_cache() -> hf_hub::Cache {
    hf_cache_from(|k| std::env::var_os(k))
}

/// [`hf_cache`] with the environment given (tests, and callers that have
/// their own). Without a home folder it falls back to a relative
/// `.cache/huggingface/hub`, which then simply holds nothing.
pub fn hf_cache_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> hf_hub::Cache {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let path = set("HF_HUB_CACHE")
        .or_else(|| set("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| set("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| set("XDG_CACHE_HOME").map(|x| x.join("huggingface/hub")))
        .unwrap_or_else(|| {
            set("HOME")
                .unwrap_or_default()
                .join(".cache/huggingface/hub")
        });
    hf_hub::Cache::new(path)
}

/// The name a folder model goes by (A1111's `Model:` field, the status bar):
/// its folder's name, or for a Hugging Face cache snapshot
/// (`models--org--name/snapshots/<commit>`) the repository's name.
pub fn folder_model_name(root: &Path) -> String {
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().to_string());
    let parent = root.parent();
    if parent.and_then(file_name).as_deref() == Some("snapshots") {
        if let Some(repo) = parent.and_then(Path::parent).and_then(file_name) {
            if let Some(name) = repo.strip_prefix("models--") {
                if let Some((_, last)) = name.rsplit_once("--") {
                    return last.to_string();
                }
                return name.to_string();
            }
        }
    }
    file_name(root).unwrap_or_else(|| "model".into())
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
        let family = folder_family(root)?;
        let text = match family {
            Family::Sdxl => TextStack::sdxl(
                load_tokenizer_at(root, "tokenizer")?,
                load_text_encoder_at(root, "text_encoder", false, opts)?,
                load_tokenizer_at(root, "tokenizer_2")?,
                load_text_encoder_at(root, "text_encoder_2", true, opts)?,
            ),
            Family::Sd1 | Family::Sd2 => {
                TextStack::single(load_tokenizer(root)?, load_text_encoder(root, opts)?)
            }
        };
        let unet = load_unet(root, opts)?;
        let vae = load_vae(root, opts)?;
        let schedule = load_schedule(root)?;
        let name = folder_model_name(root);
        let sd = Self {
            root: root.to_path_buf(),
            name,
            family,
            text,
            unet,
            vae,
            schedule,
            dtype: opts.dtype,
            device: opts.device.clone(),
        };
        sd.check_text_fits_unet(&root.join("unet").join("config.json"))?;
        sd.check_vocabularies(&[
            root.join("tokenizer").join("vocab.json"),
            root.join("tokenizer_2").join("vocab.json"),
        ])?;
        Ok(sd)
    }
}

pub fn load_tokenizer_at(root: &Path, folder: &str) -> Result<ClipTokenizer, LoadError> {
    let dir = root.join(folder);
    if !dir.is_dir() {
        return Err(LoadError::MissingFile {
            path: dir,
            what: format!("{folder}/ with vocab.json and merges.txt"),
        });
    }
    ClipTokenizer::from_dir(&dir)
}

pub fn load_text_encoder_at(
    root: &Path,
    folder: &str,
    with_projection: bool,
    opts: &LoadOptions,
) -> Result<ClipTextEncoder, LoadError> {
    let dir = root.join(folder);
    let cfg_path = dir.join("config.json");
    let cfg: ClipTextConfig = read_json(&cfg_path)?;
    let w = Weights::new(
        open_component_weights(&dir, "model")?,
        if with_projection {
            "text encoder 2"
        } else {
            "text encoder"
        },
        opts.dtype,
        &opts.device,
    );
    ClipTextEncoder::load(&w, &cfg, with_projection).map_err(|e| with_config_path(e, &cfg_path))
}

pub fn load_tokenizer(root: &Path) -> Result<ClipTokenizer, LoadError> {
    load_tokenizer_at(root, "tokenizer")
}

pub fn load_text_encoder(root: &Path, opts: &LoadOptions) -> Result<ClipTextEncoder, LoadError> {
    load_text_encoder_at(root, "text_encoder", false, opts)
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

/// The text encoders' widths (`[768]` SD 1.x, `[1024]` SD 2.x, `[768, 1280]`
/// SDXL) without loading the model: from the configs, or a single file's
/// config folder or token-embedding shapes.
pub fn text_encoder_widths(spec: &ModelSpec) -> Result<Vec<usize>, LoadError> {
    if let Some(file) = spec.single_file()? {
        return single_file::text_widths(&file);
    }
    let root = spec.resolve()?;
    let mut widths = Vec::new();
    // Only the text encoders' configs are read: a folder for width checks
    // may hold nothing else.
    let folders: &[&str] = if root.join("text_encoder_2").join("config.json").is_file() {
        &["text_encoder", "text_encoder_2"]
    } else {
        &["text_encoder"]
    };
    for f in folders {
        let cfg: ClipTextConfig = read_json(&root.join(f).join("config.json"))?;
        widths.push(cfg.hidden_size);
    }
    Ok(widths)
}
