//! A `.ckpt` (torch pickle) checkpoint seen as a state dict: the tensors under
//! `"state_dict"` (PyTorch Lightning, as the original SD checkpoints) or at
//! the top level. Trainer state next to it (callbacks, optimizer, numpy
//! scalars) may name foreign classes; those become inert placeholders that are
//! never constructed, since only the tensors are read.
//!
//! `sd` makes this a tensor source for model loading (`sd::weights`); it lives
//! here so that reading the file needs nothing from `sd`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::pickle::{GlobalPolicy, Limits, TensorRef, Value};
use super::reader::TorchFile;
use super::TorchFileError;

pub struct TorchCheckpoint {
    file: TorchFile,
    tensors: HashMap<String, TensorRef>,
    order: Vec<String>,
}

impl TorchCheckpoint {
    pub fn open(path: &Path) -> Result<Self, TorchFileError> {
        Self::open_with(path, &Limits::DEFAULT)
    }

    /// [`TorchCheckpoint::open`] with the pickle held to `limits`.
    pub fn open_with(path: &Path, limits: &Limits) -> Result<Self, TorchFileError> {
        let file = TorchFile::open_with(path, GlobalPolicy::Inert, limits)?;
        let root = file.root();
        let dict = match root.get("state_dict") {
            Some(sd @ Value::Dict(_)) => sd,
            _ => root,
        };
        let Some(pairs) = dict.as_dict() else {
            return Err(TorchFileError::Unrecognised {
                path: path.to_path_buf(),
                message: format!("the pickle holds a {}, not a state dict", root.kind()),
            });
        };
        let mut tensors = HashMap::new();
        let mut order = Vec::new();
        for (k, v) in pairs {
            if let (Some(k), Value::Tensor(t)) = (k.as_str(), v) {
                order.push(k.to_string());
                tensors.insert(k.to_string(), (**t).clone());
            }
        }
        if tensors.is_empty() {
            let keys: Vec<String> = pairs
                .iter()
                .take(10)
                .map(|(k, v)| format!("{} ({})", k.as_str().unwrap_or("?"), v.kind()))
                .collect();
            return Err(TorchFileError::Unrecognised {
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

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The state dict's tensor names, in file order.
    pub fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    /// The stored shape of `name`, or `None` if absent.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone())
    }

    pub fn dtype_name(&self, name: &str) -> Option<&'static str> {
        self.tensors.get(name).map(|t| t.dtype.name())
    }

    /// Reads `name` in its stored dtype; `None` if the state dict has no such tensor.
    pub fn load(&self, name: &str, device: &Device) -> Option<Result<Tensor, TorchFileError>> {
        let t = self.tensors.get(name)?;
        Some(self.file.tensor(t, device))
    }
}
