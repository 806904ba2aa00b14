//! A workspace folder: `workspace.toml`, `references/`, `concepts/`,
//! `prompts/`, `outputs/`. Files are written to a temporary name and renamed,
//! so an interrupted write never leaves a half-written file behind.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod watch;

/// Atomic writes live in the leaf module [`crate::fsutil`] (so `sd` can use them
/// without depending on the workspace); re-exported here for existing callers.
pub use crate::fsutil;
pub use crate::fsutil::write_atomic;

pub const WORKSPACE_FILE: &str = "workspace.toml";

/// Errors about the workspace itself (callers branch on `NotAWorkspace`).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(
        "{dir}: no workspace.toml here; create a workspace with `dreamartist init {dir} --model <MODEL>` or pass -w <DIR>"
    )]
    NotAWorkspace { dir: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the workspace's model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error("{path}: {source}")]
    Device {
        path: PathBuf,
        #[source]
        source: crate::sd::device::DeviceError,
    },
    #[error(transparent)]
    Load(#[from] Box<crate::sd::LoadError>),
}

/// `workspace.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// A diffusers folder (relative to the workspace) or `hf:org/name`.
    pub model: String,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Run dtype: `f32`, `f16` or `bf16`.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Colour theme of the workbench (a name from `themes/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    /// The CLIP model the workbench evaluates with (a folder or `hf:org/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
}

fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "f32".into()
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub config: WorkspaceConfig,
}

impl Workspace {
    /// Opens the workspace whose `workspace.toml` is in `dir`.
    pub fn open(dir: &Path) -> Result<Self, WorkspaceError> {
        let file = dir.join(WORKSPACE_FILE);
        if !file.is_file() {
            return Err(WorkspaceError::NotAWorkspace {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&file).map_err(|source| WorkspaceError::Io {
            path: file.clone(),
            source,
        })?;
        let config: WorkspaceConfig =
            toml::from_str(&text).map_err(|e| WorkspaceError::Invalid {
                path: file.clone(),
                message: e.to_string().trim().replace('\n', " "),
            })?;
        let ws = Self {
            root: dir.to_path_buf(),
            config,
        };
        // Writes a kill interrupted before their rename (runs/<id>/checkpoints
        // is four levels down).
        crate::fsutil::remove_stale_temp_files(&ws.root, 4);
        Ok(ws)
    }

    /// Creates a workspace in `dir` (which may exist but must not hold one).
    /// A relative model path is read the way the user typed it: from the
    /// current folder (stored absolute), unless it names something from the
    /// workspace folder (stored as given, since the file reads it from there).
    pub fn init(dir: &Path, model: &str) -> Result<Self, WorkspaceError> {
        let model = &anchor_model_path(dir, model);
        let file = dir.join(WORKSPACE_FILE);
        if file.exists() {
            return Err(WorkspaceError::Invalid {
                path: file,
                message: "a workspace already exists here".into(),
            });
        }
        for sub in ["references", "concepts", "prompts", "outputs"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| WorkspaceError::Io { path: p, source })?;
        }
        let config = WorkspaceConfig {
            model: model.to_string(),
            device: default_device(),
            dtype: default_dtype(),
            theme: None,
            clip: None,
        };
        let text = format!(
            "# dreamartist workspace\n# model: a diffusers folder (relative to this file) or hf:org/name\n{}",
            toml::to_string(&config).map_err(|e| WorkspaceError::Invalid {
                path: file.clone(),
                message: e.to_string(),
            })?
        );
        write_atomic(&file, text.as_bytes()).map_err(|source| WorkspaceError::Io {
            path: file.clone(),
            source,
        })?;
        Ok(Self {
            root: dir.to_path_buf(),
            config,
        })
    }

    /// The model spec with folder paths made relative to the workspace.
    pub fn model_spec(&self) -> String {
        let m = &self.config.model;
        if m.starts_with("hf:") || Path::new(m).is_absolute() {
            m.clone()
        } else {
            self.root.join(m).to_string_lossy().to_string()
        }
    }

    pub fn references_dir(&self) -> PathBuf {
        self.root.join("references")
    }
    pub fn concepts_dir(&self) -> PathBuf {
        self.root.join("concepts")
    }
    pub fn prompts_dir(&self) -> PathBuf {
        self.root.join("prompts")
    }
    /// Loads the workspace's model on its device, in its dtype.
    pub fn load_model(&self) -> Result<crate::sd::StableDiffusion, ModelLoadError> {
        let device_err = |source| ModelLoadError::Device {
            path: self.root.join(WORKSPACE_FILE),
            source,
        };
        let opts = crate::sd::LoadOptions {
            dtype: crate::sd::device::parse_dtype(&self.config.dtype).map_err(device_err)?,
            device: crate::sd::device::parse_device(&self.config.device).map_err(device_err)?,
        };
        crate::sd::StableDiffusion::load(&self.model_spec(), &opts)
            .map_err(|e| ModelLoadError::Load(Box::new(e)))
    }

    pub fn outputs_dir(&self) -> PathBuf {
        self.root.join("outputs")
    }
    /// Where a prompt file's images go: `outputs/<file-stem>/`.
    pub fn outputs_for(&self, prompt_file: &Path) -> PathBuf {
        self.outputs_dir().join(
            prompt_file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        )
    }
    pub fn concept_dir(&self, name: &str) -> PathBuf {
        self.concepts_dir().join(name)
    }
}

/// See [`Workspace::init`]: `hf:` specs and absolute paths stay; a relative
/// path (a single file's `?options` kept) that exists from the current folder
/// but not from the workspace folder becomes absolute.
fn anchor_model_path(dir: &Path, model: &str) -> String {
    use crate::sd::ModelSpec;
    let (path, options) = match ModelSpec::parse(model) {
        ModelSpec::HfCache { .. } => return model.to_string(),
        ModelSpec::Folder(path) => (path, None),
        ModelSpec::SingleFile { path, options } => (path, options),
    };
    if path.is_absolute() || dir.join(&path).exists() || !path.exists() {
        return model.to_string();
    }
    match std::path::absolute(&path) {
        Ok(abs) => match options {
            Some(o) => format!("{}?{o}", abs.display()),
            None => abs.display().to_string(),
        },
        Err(_) => model.to_string(),
    }
}
