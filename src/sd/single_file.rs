//! Single-file checkpoints in the original LDM layout (A1111 / Civitai
//! `.safetensors` and `.ckpt`), loaded into our diffusers-named modules.
//!
//! The file is read through a [`names::MappedSource`] per component that
//! translates the names the model code asks for. The family is told by the
//! text encoders: HF CLIP under `cond_stage_model.transformer.` (SD 1.x),
//! OpenCLIP under `cond_stage_model.model.` (SD 2.x), or SDXL's pair under
//! `conditioner.embedders.{0,1}.` (CLIP-L with HF names, OpenCLIP-G with
//! OpenCLIP names and its pooled projection). Sizes come from a diffusers
//! config folder when one is given (`config=DIR`), else from the tensor shapes
//! ([`infer`]). Whether the model predicts v or epsilon is not in the file: it
//! comes from `prediction=v|epsilon`, else a sidecar `<stem>.yaml` (A1111's
//! convention, `parameterization: "v"`), else the config folder, else epsilon.
//! The CLIP vocabulary ships with this crate, so a single file needs nothing else.
//!
//! `model = "sd21.safetensors?config=sd21-diffusers&prediction=v"`: options
//! follow a `?`; a relative `config` is relative to the checkpoint's folder.

pub mod infer;
pub mod names;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::clip::ClipTextEncoder;
use super::config::{
    read_json, ClipTextConfig, Prediction, SchedulerConfig, UNetConfig, VaeConfig,
};
use super::error::LoadError;
use super::scheduler::NoiseSchedule;
use super::stable_diffusion::{folder_family, with_config_path, LoadOptions, StableDiffusion};
use super::text::TextStack;
use super::tokenizer::ClipTokenizer;
use super::unet::UNet;
use super::vae::Vae;
use super::weights::{SafetensorsFiles, TensorSource, Weights};
use crate::torchfile::{self, TorchCheckpoint};
pub use infer::InferredConfigs;
use names::{Component, MappedSource, TextLayout, UnetLayout};

pub use super::family::Family;

/// Whether a model spec names a single-file checkpoint (by its extension).
pub fn is_single_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".safetensors") || lower.ends_with(".ckpt")
}

/// A single-file checkpoint and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleFileSpec {
    pub path: PathBuf,
    /// A diffusers folder whose `*/config.json` (and `tokenizer/`) describe the model.
    pub config: Option<PathBuf>,
    /// Overrides every other source of the prediction type.
    pub prediction: Option<Prediction>,
}

impl SingleFileSpec {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            config: None,
            prediction: None,
        }
    }

    /// From a spec's options after `?`: `config=DIR&prediction=v`.
    pub fn from_options(path: &Path, options: Option<&str>) -> Result<Self, LoadError> {
        let mut spec = Self::new(path);
        let bad = |message: String| LoadError::BadConfig {
            path: path.to_path_buf(),
            message,
        };
        for opt in options.unwrap_or("").split('&').filter(|o| !o.is_empty()) {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| bad(format!("model option `{opt}` is not key=value")))?;
            match k {
                "config" => {
                    let dir = PathBuf::from(v);
                    spec.config = Some(if dir.is_absolute() {
                        dir
                    } else {
                        path.parent().unwrap_or(Path::new(".")).join(dir)
                    });
                }
                "prediction" => {
                    spec.prediction = Some(Prediction::parse(v).ok_or_else(|| {
                        bad(format!("prediction `{v}` (use v, v_prediction or epsilon)"))
                    })?)
                }
                other => {
                    return Err(bad(format!(
                        "unknown model option `{other}` (known: config=DIR, prediction=v|epsilon)"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

/// Opens a checkpoint file (safetensors, or a torch pickle through the safe reader).
pub fn open_checkpoint(path: &Path) -> Result<Arc<dyn TensorSource>, LoadError> {
    if !path.is_file() {
        return Err(LoadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such single-file checkpoint",
            ),
        });
    }
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
        f.read(&mut head).map_err(|e| LoadError::io(path, e))?
    };
    if torchfile::sniff(&head[..n]).is_some() {
        Ok(Arc::new(TorchCheckpoint::open(path)?))
    } else {
        Ok(Arc::new(SafetensorsFiles::open(path)?))
    }
}

/// SDXL's first text encoder: CLIP ViT-L with transformers' names.
const SDXL_CLIP_L: &str = "conditioner.embedders.0.transformer.text_model.";
/// SDXL's second text encoder: OpenCLIP ViT-bigG with OpenCLIP's names.
const SDXL_CLIP_G: &str = "conditioner.embedders.1.model.";

/// Which family, and where its text encoders live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub family: Family,
    /// The (first) text encoder's prefix.
    pub text_prefix: String,
    /// SDXL's second text encoder (OpenCLIP-G), `None` for SD 1.x / 2.x.
    pub text2_prefix: Option<String>,
}

impl Layout {
    /// Tells SD 1.x, SD 2.x and SDXL apart by the text encoders' keys.
    pub fn detect(src: &dyn TensorSource) -> Result<Self, LoadError> {
        let path = src.origin();
        let unsupported = |message: String| LoadError::UnsupportedLayout {
            path: path.to_path_buf(),
            message,
        };
        let names = src.names();
        let layout = if names
            .iter()
            .any(|n| n.starts_with("conditioner.embedders."))
        {
            Self::detect_sdxl(src, &names)?
        } else {
            Self::detect_sd(src, &names)?
        };
        if src
            .shape("model.diffusion_model.input_blocks.0.0.weight")
            .is_none()
        {
            return Err(unsupported(
                "no UNet (`model.diffusion_model.*`) in the file: not a full SD checkpoint (a VAE, LoRA or embedding?)"
                    .into(),
            ));
        }
        Ok(layout)
    }

    fn detect_sd(src: &dyn TensorSource, names: &[String]) -> Result<Self, LoadError> {
        for prefix in [
            "cond_stage_model.transformer.text_model.",
            "cond_stage_model.transformer.",
        ] {
            if src
                .shape(&format!("{prefix}embeddings.token_embedding.weight"))
                .is_some()
            {
                return Ok(Layout {
                    family: Family::Sd1,
                    text_prefix: prefix.to_string(),
                    text2_prefix: None,
                });
            }
        }
        if src
            .shape("cond_stage_model.model.token_embedding.weight")
            .is_some()
        {
            return Ok(Layout {
                family: Family::Sd2,
                text_prefix: "cond_stage_model.model.".into(),
                text2_prefix: None,
            });
        }
        let mut seen: Vec<String> = Vec::new();
        for n in names {
            let head: String = n.split('.').take(2).collect::<Vec<_>>().join(".");
            if !seen.contains(&head) {
                seen.push(head);
            }
        }
        seen.truncate(8);
        Err(LoadError::UnsupportedLayout {
            path: src.origin().to_path_buf(),
            message: format!(
                "no SD 1.x text encoder (`cond_stage_model.transformer.text_model.*`, CLIP), no \
                 SD 2.x one (`cond_stage_model.model.*`, OpenCLIP) and no SDXL pair \
                 (`conditioner.embedders.*`); the file has {} tensors under {}",
                names.len(),
                if seen.is_empty() {
                    "no names at all".to_string()
                } else {
                    seen.iter()
                        .map(|s| format!("`{s}.*`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        })
    }

    /// SDXL base: CLIP-L at `conditioner.embedders.0`, OpenCLIP-G at `.1`.
    fn detect_sdxl(src: &dyn TensorSource, names: &[String]) -> Result<Self, LoadError> {
        let unsupported = |message: String| LoadError::UnsupportedLayout {
            path: src.origin().to_path_buf(),
            message,
        };
        let has = |name: String| src.shape(&name).is_some();
        let clip_l = has(format!("{SDXL_CLIP_L}embeddings.token_embedding.weight"));
        let clip_g = has(format!("{SDXL_CLIP_G}token_embedding.weight"));
        if !clip_l && has("conditioner.embedders.0.model.token_embedding.weight".into()) {
            return Err(unsupported(
                "an SDXL refiner checkpoint (one OpenCLIP-G text encoder at `conditioner.embedders.0.model.*`); \
                 only base SDXL models with both text encoders are supported"
                    .into(),
            ));
        }
        let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
        match (clip_l, clip_g) {
            (true, true) => Ok(Layout {
                family: Family::Sdxl,
                text_prefix: SDXL_CLIP_L.into(),
                text2_prefix: Some(SDXL_CLIP_G.into()),
            }),
            (true, false) => Err(unsupported(format!(
                "an SDXL checkpoint without its second text encoder: no `{SDXL_CLIP_G}token_embedding.weight` \
                 (OpenCLIP-G, `{SDXL_CLIP_G}*`; the file has {} tensors there). SDXL needs both text encoders; \
                 the file is incomplete (a partial download, or saved with the encoder stripped): use the full checkpoint",
                count(SDXL_CLIP_G)
            ))),
            (false, _) => Err(unsupported(format!(
                "an SDXL checkpoint (`conditioner.embedders.*`) without its first text encoder: no \
                 `{SDXL_CLIP_L}embeddings.token_embedding.weight` (CLIP-L, `{SDXL_CLIP_L}*`; the file has {} \
                 tensors there); use the full checkpoint",
                count(SDXL_CLIP_L)
            ))),
        }
    }

    fn text_component(&self) -> Component {
        let prefix = self.text_prefix.clone();
        Component::Text(match self.family {
            Family::Sd1 | Family::Sdxl => TextLayout::Clip { prefix },
            Family::Sd2 => TextLayout::OpenClip { prefix },
        })
    }

    fn text2_component(&self) -> Option<Component> {
        self.text2_prefix.as_ref().map(|prefix| {
            Component::Text(TextLayout::OpenClip {
                prefix: prefix.clone(),
            })
        })
    }

    /// Each text encoder's token embedding, in order (its shape is `[vocab, width]`).
    fn token_embedding_names(&self) -> Vec<String> {
        let first = match self.family {
            Family::Sd1 | Family::Sdxl => {
                format!("{}embeddings.token_embedding.weight", self.text_prefix)
            }
            Family::Sd2 => format!("{}token_embedding.weight", self.text_prefix),
        };
        let mut out = vec![first];
        if let Some(p) = &self.text2_prefix {
            out.push(format!("{p}token_embedding.weight"));
        }
        out
    }
}

/// Where the configs came from.
#[derive(Debug, Clone)]
pub enum ConfigOrigin {
    Folder(PathBuf),
    Inferred(InferredConfigs),
}

/// All configs of a single-file model.
#[derive(Debug, Clone)]
pub struct Configs {
    pub text: ClipTextConfig,
    /// SDXL's second text encoder.
    pub text_2: Option<ClipTextConfig>,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub scheduler: SchedulerConfig,
    pub prediction: Prediction,
    /// Why that prediction type (`prediction= option`, `sidecar model.yaml`, ...).
    pub prediction_source: String,
    pub origin: ConfigOrigin,
}

/// A sidecar `<stem>.yaml` (A1111) saying `parameterization: "v"` or `"eps"`.
pub fn sidecar_prediction(checkpoint: &Path) -> Option<(Prediction, PathBuf)> {
    let yaml = checkpoint.with_extension("yaml");
    let text = std::fs::read_to_string(&yaml).ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(v) = line.strip_prefix("parameterization:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            let p = match v {
                "v" => Prediction::V,
                "eps" | "epsilon" => Prediction::Epsilon,
                _ => continue,
            };
            return Some((p, yaml));
        }
    }
    None
}

fn from_json<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    path: &Path,
) -> Result<T, LoadError> {
    serde_json::from_value(v).map_err(|e| LoadError::BadConfig {
        path: path.to_path_buf(),
        message: format!("inferred config: {e}"),
    })
}

impl Configs {
    fn resolve(
        spec: &SingleFileSpec,
        src: &dyn TensorSource,
        layout: &Layout,
    ) -> Result<Self, LoadError> {
        let sdxl = layout.family == Family::Sdxl;
        let (text, text_2, unet, vae, scheduler, origin) = match &spec.config {
            Some(dir) => {
                let described = folder_family(dir)?;
                if (described == Family::Sdxl) != sdxl {
                    return Err(LoadError::BadConfig {
                        path: dir.clone(),
                        message: format!(
                            "this config folder describes an {} model but {} is {}; give the \
                             configs of a matching diffusers folder (or none, to read the sizes off the file)",
                            described.short(),
                            spec.path.display(),
                            layout.family.short()
                        ),
                    });
                }
                let scheduler: SchedulerConfig =
                    read_json(&dir.join("scheduler").join("scheduler_config.json"))?;
                let text_2 = if sdxl {
                    Some(read_json(&dir.join("text_encoder_2").join("config.json"))?)
                } else {
                    None
                };
                (
                    read_json(&dir.join("text_encoder").join("config.json"))?,
                    text_2,
                    read_json(&dir.join("unet").join("config.json"))?,
                    read_json(&dir.join("vae").join("config.json"))?,
                    Some(scheduler),
                    ConfigOrigin::Folder(dir.clone()),
                )
            }
            None => {
                let inferred = infer::infer(src, layout)?;
                let path = &spec.path;
                let text_2 = match &inferred.text_2 {
                    Some(t) => Some(from_json(t.clone(), path)?),
                    None => None,
                };
                (
                    from_json(inferred.text.clone(), path)?,
                    text_2,
                    from_json(inferred.unet.clone(), path)?,
                    from_json(inferred.vae.clone(), path)?,
                    None,
                    ConfigOrigin::Inferred(inferred),
                )
            }
        };
        let folder_prediction = match (&scheduler, &spec.config) {
            (Some(s), Some(dir)) => Some((
                s.prediction(&dir.join("scheduler").join("scheduler_config.json"))?,
                dir.clone(),
            )),
            _ => None,
        };
        let (prediction, prediction_source) = if let Some(p) = spec.prediction {
            (p, "the prediction= option".to_string())
        } else if let Some((p, yaml)) = sidecar_prediction(&spec.path) {
            (p, format!("sidecar {}", yaml.display()))
        } else if let Some((p, dir)) = folder_prediction {
            (p, format!("config folder {}", dir.display()))
        } else {
            (
                Prediction::Epsilon,
                "the default; the file does not say: give prediction=v or a sidecar .yaml for v-models"
                    .to_string(),
            )
        };
        let mut scheduler = match scheduler {
            Some(s) => s,
            // The schedule every SD 1.x / 2.x / SDXL model was trained with.
            None => from_json(
                serde_json::json!({
                    "num_train_timesteps": 1000,
                    "beta_start": 0.00085,
                    "beta_end": 0.012,
                    "beta_schedule": "scaled_linear",
                    "steps_offset": 1,
                }),
                &spec.path,
            )?,
        };
        scheduler.prediction_type = prediction.as_str().to_string();
        Ok(Self {
            text,
            text_2,
            unet,
            vae,
            scheduler,
            prediction,
            prediction_source,
            origin,
        })
    }

    /// The file to name in config errors for a component (`unet`, `vae`, ...).
    fn path_of(&self, component: &str, checkpoint: &Path) -> PathBuf {
        match &self.origin {
            ConfigOrigin::Folder(dir) => {
                if component == "scheduler" {
                    dir.join("scheduler").join("scheduler_config.json")
                } else {
                    dir.join(component).join("config.json")
                }
            }
            ConfigOrigin::Inferred(_) => checkpoint.to_path_buf(),
        }
    }
}

/// An opened single-file checkpoint with its layout and configs.
pub struct SingleFile {
    pub spec: SingleFileSpec,
    pub source: Arc<dyn TensorSource>,
    pub layout: Layout,
    pub configs: Configs,
}

impl SingleFile {
    pub fn open(spec: &SingleFileSpec) -> Result<Self, LoadError> {
        Self::with_source(spec, open_checkpoint(&spec.path)?)
    }

    /// [`SingleFile::open`] of a checkpoint already opened as `source` (the
    /// fuzz target opens torch files with small pickle limits).
    pub fn with_source(
        spec: &SingleFileSpec,
        source: Arc<dyn TensorSource>,
    ) -> Result<Self, LoadError> {
        let layout = Layout::detect(source.as_ref())?;
        let configs = Configs::resolve(spec, source.as_ref(), &layout)?;
        Ok(Self {
            spec: spec.clone(),
            source,
            layout,
            configs,
        })
    }

    /// The (first) text encoder under diffusers names.
    pub fn text_encoder_source(&self) -> Arc<dyn TensorSource> {
        Arc::new(MappedSource::new(
            self.source.clone(),
            self.layout.text_component(),
        ))
    }

    /// SDXL's second text encoder under diffusers names (`text_model.*` and
    /// `text_projection.weight`, as `text_encoder_2/` holds them).
    pub fn text_encoder_2_source(&self) -> Option<Arc<dyn TensorSource>> {
        self.layout
            .text2_component()
            .map(|c| Arc::new(MappedSource::new(self.source.clone(), c)) as Arc<dyn TensorSource>)
    }

    /// The UNet under diffusers names (block arithmetic from its config).
    pub fn unet_source(&self) -> Result<Arc<dyn TensorSource>, LoadError> {
        let cfg = &self.configs.unet;
        let n = cfg.block_out_channels.len();
        let cfg_path = self.configs.path_of("unet", &self.spec.path);
        let layers = cfg
            .layers_per_block
            .expand(n, "layers_per_block", &cfg_path)?;
        let up_attention: Vec<bool> = cfg
            .up_block_types
            .iter()
            .map(|t| t == "CrossAttnUpBlock2D")
            .collect();
        if layers.len() != up_attention.len() {
            return Err(LoadError::BadConfig {
                path: cfg_path,
                message: format!(
                    "{} up block types for {} levels",
                    up_attention.len(),
                    layers.len()
                ),
            });
        }
        Ok(Arc::new(MappedSource::new(
            self.source.clone(),
            Component::Unet(UnetLayout::new(
                "model.diffusion_model.",
                &layers,
                &up_attention,
            )),
        )))
    }

    /// The VAE under diffusers names.
    pub fn vae_source(&self) -> Arc<dyn TensorSource> {
        Arc::new(MappedSource::new(
            self.source.clone(),
            Component::Vae {
                prefix: "first_stage_model.".into(),
                levels: self.configs.vae.block_out_channels.len(),
            },
        ))
    }

    /// The tokenizer of the config folder, else the shipped CLIP vocabulary.
    pub fn tokenizer(&self) -> Result<ClipTokenizer, LoadError> {
        self.config_tokenizer("tokenizer")
            .unwrap_or_else(|| shipped_tokenizer(self.layout.family))
    }

    /// SDXL's second tokenizer: the config folder's `tokenizer_2/`, else the
    /// shipped vocabulary padding with `!` (OpenCLIP's pad, id 0).
    pub fn tokenizer_2(&self) -> Result<ClipTokenizer, LoadError> {
        self.config_tokenizer("tokenizer_2")
            .unwrap_or_else(|| shipped_tokenizer_with_pad("!"))
    }

    fn config_tokenizer(&self, folder: &str) -> Option<Result<ClipTokenizer, LoadError>> {
        let t = self.spec.config.as_ref()?.join(folder);
        t.join("vocab.json")
            .is_file()
            .then(|| ClipTokenizer::from_dir(&t))
    }

    /// Builds every module.
    pub fn load(&self, opts: &LoadOptions) -> Result<StableDiffusion, LoadError> {
        let path = &self.spec.path;
        let c = &self.configs;
        let te_cfg = c.path_of("text_encoder", path);
        let text_encoder = ClipTextEncoder::load(
            &Weights::new(
                self.text_encoder_source(),
                "text encoder",
                opts.dtype,
                &opts.device,
            ),
            &c.text,
            false,
        )
        .map_err(|e| with_config_path(e, &te_cfg))?;
        let text = match (self.text_encoder_2_source(), &c.text_2) {
            (Some(src), Some(cfg)) => {
                let te2_cfg = c.path_of("text_encoder_2", path);
                let encoder_2 = ClipTextEncoder::load(
                    &Weights::new(src, "text encoder 2", opts.dtype, &opts.device),
                    cfg,
                    true,
                )
                .map_err(|e| with_config_path(e, &te2_cfg))?;
                TextStack::sdxl(
                    self.tokenizer()?,
                    text_encoder,
                    self.tokenizer_2()?,
                    encoder_2,
                )
            }
            _ => TextStack::single(self.tokenizer()?, text_encoder),
        };
        let unet_cfg = c.path_of("unet", path);
        let unet = UNet::load(
            &Weights::new(self.unet_source()?, "UNet", opts.dtype, &opts.device),
            &c.unet,
            &unet_cfg,
        )
        .map_err(|e| with_config_path(e, &unet_cfg))?;
        let vae_cfg = c.path_of("vae", path);
        let vae = Vae::load(
            &Weights::new(self.vae_source(), "VAE", opts.dtype, &opts.device),
            &c.vae,
            &vae_cfg,
        )
        .map_err(|e| with_config_path(e, &vae_cfg))?;
        let schedule = NoiseSchedule::from_config(&c.scheduler, &c.path_of("scheduler", path))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        let sd = StableDiffusion {
            root: path.clone(),
            name,
            family: self.layout.family,
            text,
            unet,
            vae,
            schedule,
            dtype: opts.dtype,
            device: opts.device.clone(),
        };
        sd.check_text_fits_unet(&unet_cfg)?;
        let vocab = |folder: &str| match &self.spec.config {
            Some(dir) if dir.join(folder).join("vocab.json").is_file() => {
                dir.join(folder).join("vocab.json")
            }
            _ => PathBuf::from("<the shipped CLIP vocabulary>"),
        };
        sd.check_vocabularies(&[vocab("tokenizer"), vocab("tokenizer_2")])?;
        Ok(sd)
    }
}

/// Loads a single-file checkpoint as a whole pipeline.
pub fn load(spec: &SingleFileSpec, opts: &LoadOptions) -> Result<StableDiffusion, LoadError> {
    SingleFile::open(spec)?.load(opts)
}

/// The text encoders' widths, from the config folder or the checkpoint's shapes.
pub fn text_widths(spec: &SingleFileSpec) -> Result<Vec<usize>, LoadError> {
    if let Some(dir) = &spec.config {
        let mut folders = vec!["text_encoder"];
        if dir.join("text_encoder_2").join("config.json").is_file() {
            folders.push("text_encoder_2");
        }
        return folders
            .into_iter()
            .map(|f| {
                read_json::<ClipTextConfig>(&dir.join(f).join("config.json")).map(|c| c.hidden_size)
            })
            .collect();
    }
    let src = open_checkpoint(&spec.path)?;
    let layout = Layout::detect(src.as_ref())?;
    layout
        .token_embedding_names()
        .into_iter()
        .map(|name| match src.shape(&name).as_deref() {
            Some([_, d]) => Ok(*d),
            other => Err(LoadError::UnsupportedLayout {
                path: spec.path.clone(),
                message: format!("`{name}` has shape {other:?}, expected [vocab, width]"),
            }),
        })
        .collect()
}

static VOCAB: &[u8] = include_bytes!("../../assets/clip-tokenizer/vocab.json");
static MERGES: &[u8] = include_bytes!("../../assets/clip-tokenizer/merges.txt");

/// The shipped vocabulary on disk (the tokenizer library reads files): written
/// once per process into a folder under the temp dir, checked byte for byte.
fn shipped_tokenizer_dir() -> Result<PathBuf, LoadError> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = DIR.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(VOCAB);
        h.update(MERGES);
        let tag: String = h
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = std::env::temp_dir().join(format!("dreamartist-clip-tokenizer-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, bytes) in [("vocab.json", VOCAB), ("merges.txt", MERGES)] {
            let p = dir.join(name);
            if std::fs::read(&p).ok().as_deref() != Some(bytes) {
                crate::fsutil::write_atomic(&p, bytes)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        Ok(dir)
    });
    made.clone().map_err(|message| LoadError::BadTokenizer {
        path: std::env::temp_dir(),
        message: format!(
            "cannot write the shipped CLIP vocabulary ({message}); give config=<diffusers folder> with a tokenizer/"
        ),
    })
}

/// The CLIP tokenizer shipped with this crate, with the family's (first) pad token.
pub fn shipped_tokenizer(family: Family) -> Result<ClipTokenizer, LoadError> {
    shipped_tokenizer_with_pad(family.pad_token())
}

/// The shipped CLIP vocabulary padding with `pad` (SDXL's second tokenizer: `!`).
pub fn shipped_tokenizer_with_pad(pad: &str) -> Result<ClipTokenizer, LoadError> {
    let dir = shipped_tokenizer_dir()?;
    ClipTokenizer::from_files(
        &dir.join("vocab.json"),
        &dir.join("merges.txt"),
        "<|startoftext|>",
        "<|endoftext|>",
        pad,
        77,
    )
}
