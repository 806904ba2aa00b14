//! A `.ckpt` (torch pickle) checkpoint as a [`TensorSource`]: the state dict
//! under `"state_dict"` (PyTorch Lightning, as the original SD checkpoints) or
//! at the top level. Trainer state next to it (callbacks, optimizer, numpy
//! scalars) may name foreign classes; those become inert placeholders that are
//! never constructed, since only the tensors are read.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::pickle::{GlobalPolicy, TensorRef, Value};
use super::torch::TorchFile;
use super::InteropError;
use crate::sd::weights::TensorSource;
use crate::sd::LoadError;

pub struct TorchCheckpoint {
    file: TorchFile,
    tensors: HashMap<String, TensorRef>,
    order: Vec<String>,
}

/// An interop error as a loading error about the same file.
pub fn to_load_error(e: InteropError, path: &Path) -> LoadError {
    let text = e.to_string();
    let prefix = format!("{}: ", path.display());
    let detail = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
    LoadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, detail),
    }
}

impl TorchCheckpoint {
    pub fn open(path: &Path) -> Result<Self, InteropError> {
        let file = TorchFile::open(path, GlobalPolicy::Inert)?;
        let root = file.root();
        let dict = match root.get("state_dict") {
            Some(sd @ Value::Dict(_)) => sd,
            _ => root,
        };
        let Some(pairs) = dict.as_dict() else {
            return Err(InteropError::Unrecognised {
                path: path.to_path_buf(),
                message: format!("the pickle holds a {}, not a state dict", root.kind()),
            });
        };
        let mut tensors = HashMap::new();
        let mut order = Vec::new();
        for (k, v) in pairs {
            if let (Some(k), Value::Tensor(t)) = (k.as_str(), v) {
                order.push(k.to_string());
                tensors.insert(k.to_string(), t.clone());
            }
        }
        if tensors.is_empty() {
            let keys: Vec<String> = pairs
                .iter()
                .take(10)
                .map(|(k, v)| format!("{} ({})", k.as_str().unwrap_or("?"), v.kind()))
                .collect();
            return Err(InteropError::Unrecognised {
                path: path.to_path_buf(),
                message: format!(
                    "no tensors in the state dict (top-level keys: {})",
                    keys.join(", ")
                ),
            });
        }
        Ok(Self {
            file,
            tensors,
            order,
        })
    }

    pub fn dtype_name(&self, name: &str) -> Option<&'static str> {
        self.tensors.get(name).map(|t| t.dtype.name())
    }
}

impl TensorSource for TorchCheckpoint {
    fn origin(&self) -> &Path {
        self.file.path()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone())
    }

    fn load(&self, name: &str, device: &Device) -> Result<Tensor, LoadError> {
        let path = self.file.path();
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                path: path.to_path_buf(),
                name: name.to_string(),
                expected: Vec::new(),
                component: "checkpoint".into(),
            })?;
        self.file
            .tensor(t, device)
            .map_err(|e| to_load_error(e, path))
    }

    fn names(&self) -> Vec<String> {
        self.order.clone()
    }
}
