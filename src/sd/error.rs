//! Typed errors for loading and running the Stable Diffusion stack.
//!
//! Every loading error names the file it is about and says what was expected, so
//! a user pointing the tool at a broken or foreign model folder knows what to fix.

use std::path::PathBuf;

/// Errors from reading model folders, configs, weights and tokenizer files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: missing file. A diffusers model folder needs {what}; \
         point the model at a complete folder (model_index.json, scheduler/, text_encoder/, tokenizer/, unet/, vae/)"
    )]
    MissingFile { path: PathBuf, what: String },
    #[error(
        "{path}: no such model folder; give a diffusers folder (model_index.json, scheduler/, \
         text_encoder/, tokenizer/, unet/, vae/), `hf:org/name` from the Hugging Face cache, or a \
         single-file checkpoint (.safetensors / .ckpt)"
    )]
    NoModel { path: PathBuf },
    #[error("{path}: invalid config: {message}. Fix the file or re-download it from the model's repository")]
    BadConfig { path: PathBuf, message: String },
    #[error("{path}: unsupported model layout: {message}")]
    UnsupportedLayout { path: PathBuf, message: String },
    #[error("{path}: not a readable safetensors file ({message}); the download may be truncated")]
    BadWeights { path: PathBuf, message: String },
    #[error(
        "{path}: missing tensor `{name}` (expected shape {expected:?} for the {component}); \
         the weights do not match the config next to them"
    )]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        component: String,
    },
    #[error(
        "{path}: tensor `{name}` has shape {found:?} but the {component} config asks for {expected:?}; \
         the weights do not match the config next to them"
    )]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        component: String,
    },
    #[error("{path}: cannot build the tokenizer: {message}")]
    BadTokenizer { path: PathBuf, message: String },
    #[error(
        "`{spec}` is not in the Hugging Face cache at {cache}; download it there first \
         (for example `huggingface-cli download {download}`) or give a local folder"
    )]
    NotInHfCache {
        spec: String,
        /// The arguments of `huggingface-cli download` that fetch it.
        download: String,
        cache: PathBuf,
    },
    #[error("{path}: {source}")]
    Tensor {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A `.ckpt` checkpoint that the torch-file reader refused (its message
    /// names the file and what was wrong: damaged, unsafe, over a limit).
    #[error(transparent)]
    TorchFile(#[from] crate::torchfile::TorchFileError),
}

impl LoadError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            return LoadError::MissingFile {
                what: "this file".to_string(),
                path,
            };
        }
        LoadError::Io { path, source }
    }
}

/// Errors while running the models (shape problems at run time, device failures).
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type SdResult<T> = std::result::Result<T, SdError>;
