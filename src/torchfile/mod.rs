//! PyTorch files (`.pt`, `.bin`, `.ckpt`) read safely: without Python, without
//! running code, and within bounded memory and time, whatever the file holds.
//!
//! A leaf module: it depends on nothing else in this crate (only std, candle
//! and zip), so both `sd` (single-file `.ckpt` checkpoints) and `interop`
//! (embedding files) use it without depending on each other. It has its own
//! error type, [`TorchFileError`]; each caller converts it variant by variant.
//!
//! - [`pickle`]: the safe subset of Python's pickle machine (no imports, no
//!   calls; bounded by [`pickle::Limits`]).
//! - [`reader`]: the zip and legacy containers ([`TorchFile`]); every tensor's
//!   layout is checked against its storage when the file is opened.
//! - [`checkpoint`]: a state dict view of a checkpoint ([`TorchCheckpoint`]).

pub mod checkpoint;
pub mod pickle;
pub mod reader;

use std::path::{Path, PathBuf};

pub use checkpoint::TorchCheckpoint;
pub use reader::{contiguous_strides, sniff, TorchFile, TorchFormat};

/// The message for a file that is neither of torch's formats.
pub const NOT_A_TORCH_FILE: &str =
    "not a PyTorch file (neither a torch zip archive nor a legacy torch pickle)";

/// Why a torch file could not be read. Each names the file and says what was
/// found; the messages read the same as the callers' own errors (`interop`'s
/// `InteropError`, `sd`'s `LoadError`), which convert these variant by variant.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a torch file, or one that holds something other than what was asked
    /// for (a checkpoint without a state dict).
    #[error("{path}: {message}")]
    Unrecognised { path: PathBuf, message: String },
    #[error("{path}: damaged file: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The pickle names code (a global outside the tensor allow-list).
    #[error("{path}: {message}")]
    Unsafe { path: PathBuf, message: String },
    #[error("{path}: not supported: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// A safety limit: the file would need more memory or work than any real
    /// torch file does (a pickle bomb, a broadcast view of absurd size).
    #[error("{path}: refused: {message}")]
    LimitExceeded { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Tensor {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

impl TorchFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TorchFileError::Io { path, .. }
            | TorchFileError::Unrecognised { path, .. }
            | TorchFileError::Corrupt { path, .. }
            | TorchFileError::Unsafe { path, .. }
            | TorchFileError::Unsupported { path, .. }
            | TorchFileError::LimitExceeded { path, .. }
            | TorchFileError::Tensor { path, .. } => path,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TorchFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, message: impl Into<String>) -> Self {
        TorchFileError::Corrupt {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: &Path, message: impl Into<String>) -> Self {
        TorchFileError::Unsupported {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn limit(path: &Path, message: impl Into<String>) -> Self {
        TorchFileError::LimitExceeded {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn tensor(path: &Path, source: candle_core::Error) -> Self {
        TorchFileError::Tensor {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A pickle error about `path`, sorted by what it means for the user.
    pub(crate) fn pickle(path: &Path, e: pickle::PickleError) -> Self {
        use pickle::PickleError;
        match e {
            PickleError::ForbiddenGlobal { .. } => TorchFileError::Unsafe {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            PickleError::Limit { .. } => Self::limit(path, e.to_string()),
            PickleError::Truncated { .. } => Self::corrupt(path, e.to_string()),
            PickleError::Invalid { .. } => Self::corrupt(path, format!("unreadable pickle: {e}")),
        }
    }
}
