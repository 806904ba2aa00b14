//! Named tensor access with shape checks and dtype conversion.
//!
//! Model code asks for `weights.pp("down_blocks.0").get(&[c, c, 3, 3], "conv.weight")`;
//! the answer is a tensor in the run dtype on the run device, or a [`LoadError`]
//! that names the file, the tensor, and the shape the config implied. Sources are
//! behind a trait so that other on-disk layouts (single-file checkpoints) can map
//! their names onto the diffusers names the model code uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::error::LoadError;
use super::lora::{LayerKey, LinearSite, Net, SiteKind};
use crate::torchfile::TorchCheckpoint;

/// Something that holds named tensors (one or more files).
pub trait TensorSource: Send + Sync {
    /// The file (or folder) to name in error messages.
    fn origin(&self) -> &Path;
    /// The stored shape of `name`, or `None` if absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Loads `name` in its stored dtype.
    fn load(&self, name: &str, device: &Device) -> Result<Tensor, LoadError>;
    /// All tensor names (for diagnostics and layout detection).
    fn names(&self) -> Vec<String>;
    /// How to name `name` in error messages: the name as stored in the file,
    /// which differs from the requested one for sources that translate names.
    /// True for sources that make up weights instead of reading them (benchmarks).
    fn random_init(&self) -> bool {
        false
    }

    fn describe(&self, name: &str) -> String {
        name.to_string()
    }
}

/// A `.ckpt` checkpoint's state dict, read by the leaf module [`crate::torchfile`].
impl TensorSource for TorchCheckpoint {
    fn origin(&self) -> &Path {
        self.path()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        TorchCheckpoint::shape(self, name)
    }

    fn load(&self, name: &str, device: &Device) -> Result<Tensor, LoadError> {
        match TorchCheckpoint::load(self, name, device) {
            Some(t) => Ok(t?),
            None => Err(LoadError::MissingTensor {
                path: self.path().to_path_buf(),
                name: name.to_string(),
                expected: Vec::new(),
                component: "checkpoint".into(),
            }),
        }
    }

    fn names(&self) -> Vec<String> {
        TorchCheckpoint::names(self)
    }
}

/// One or several memory-mapped safetensors files (sharded checkpoints list
/// their shards in a `*.safetensors.index.json`).
pub struct SafetensorsFiles {
    origin: PathBuf,
    inner: MmapedSafetensors,
}

impl SafetensorsFiles {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        if !path.exists() {
            return Err(LoadError::MissingFile {
                path: path.to_path_buf(),
                what: "this weights file".into(),
            });
        }
        // SAFETY: the mapping is read-only; a model file being rewritten while we
        // run is outside what this tool supports (as with every mmap-based loader).
        let inner = unsafe { MmapedSafetensors::new(path) }.map_err(|e| LoadError::BadWeights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            origin: path.to_path_buf(),
            inner,
        })
    }

    /// Opens the shards listed in a diffusers/transformers `*.safetensors.index.json`.
    pub fn open_index(index: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(index).map_err(|e| LoadError::io(index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LoadError::BadConfig {
                path: index.to_path_buf(),
                message: e.to_string(),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| LoadError::BadConfig {
                path: index.to_path_buf(),
                message: "no `weight_map` object".into(),
            })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: BTreeSet<PathBuf> = BTreeSet::new();
        for v in map.values() {
            // Shards sit beside their index; a name with a path in it would
            // read whatever file it points at.
            let plain = v.as_str().filter(|f| {
                let p = Path::new(f);
                !f.is_empty()
                    && p.components().count() == 1
                    && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
            });
            let Some(f) = plain else {
                return Err(LoadError::BadConfig {
                    path: index.to_path_buf(),
                    message: format!(
                        "weight_map names the shard {v}; shards must be file names in the index's folder"
                    ),
                });
            };
            files.insert(dir.join(f));
        }
        for f in &files {
            if !f.exists() {
                return Err(LoadError::MissingFile {
                    path: f.clone(),
                    what: format!("this shard (listed in {})", index.display()),
                });
            }
        }
        let files: Vec<PathBuf> = files.into_iter().collect();
        // SAFETY: as in `open`.
        let inner =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| LoadError::BadWeights {
                path: index.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            origin: index.to_path_buf(),
            inner,
        })
    }
}

impl TensorSource for SafetensorsFiles {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.get(name).ok().map(|v| v.shape().to_vec())
    }

    fn load(&self, name: &str, device: &Device) -> Result<Tensor, LoadError> {
        self.inner
            .load(name, device)
            .map_err(|source| LoadError::Tensor {
                path: self.origin.clone(),
                source,
            })
    }

    fn names(&self) -> Vec<String> {
        self.inner.tensors().into_iter().map(|(n, _)| n).collect()
    }
}

/// A view of a tensor source under a name prefix, producing tensors in the run
/// dtype and device.
#[derive(Clone)]
pub struct Weights {
    source: Arc<dyn TensorSource>,
    prefix: String,
    dtype: DType,
    device: Device,
    component: Arc<str>,
    /// The linear layers built from this source (all views share it): the
    /// places a LoRA adapter can attach to ([`super::lora`]).
    linears: Arc<std::sync::Mutex<Vec<LinearSite>>>,
}

impl Weights {
    pub fn new(
        source: Arc<dyn TensorSource>,
        component: &str,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            source,
            prefix: String::new(),
            dtype,
            device: device.clone(),
            component: component.into(),
            linears: Default::default(),
        }
    }

    /// Records a layer mapping `in_dim` to `out_dim` features at this view's
    /// path and returns its key, for networks that take adapters (not the VAE).
    pub(crate) fn record_site(
        &self,
        in_dim: usize,
        out_dim: usize,
        kind: SiteKind,
    ) -> Option<LayerKey> {
        let key = LayerKey::new(Net::of_component(&self.component)?, self.prefix.clone());
        if let Ok(mut sites) = self.linears.lock() {
            sites.push(LinearSite {
                key: key.clone(),
                in_dim,
                out_dim,
                kind,
            });
        }
        Some(key)
    }

    /// The linear layers recorded so far by every view of this source.
    pub fn linear_sites(&self) -> Vec<LinearSite> {
        self.linears.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A view one level deeper: `pp("resnets.0")`.
    pub fn pp(&self, segment: impl AsRef<str>) -> Self {
        let segment = segment.as_ref();
        let prefix = if self.prefix.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{}", self.prefix, segment)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A freshly initialised tensor for benchmarks with real sizes and random
    /// weights: norm scales 1, biases 0, matrices scaled by 1/sqrt(fan-in) so
    /// activations stay in range through deep stacks.
    fn random(&self, shape: &[usize], name: &str) -> candle_core::Result<Tensor> {
        if shape.len() == 1 {
            return if name.ends_with("bias") {
                Tensor::zeros(shape, self.dtype, &self.device)
            } else {
                Tensor::ones(shape, self.dtype, &self.device)
            };
        }
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let std = if name.contains("embedding") {
            0.02
        } else {
            1.0 / (fan_in as f64).sqrt()
        };
        Tensor::randn(0f32, std as f32, shape, &self.device)?.to_dtype(self.dtype)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.source.shape(&self.full_name(name)).is_some()
    }

    /// The stored shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.source.shape(&self.full_name(name))
    }

    /// Loads `name` and checks that it has `shape`.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor, LoadError> {
        let full = self.full_name(name);
        if self.source.random_init() {
            return self
                .random(shape, name)
                .map_err(|source| LoadError::Tensor {
                    path: self.source.origin().to_path_buf(),
                    source,
                });
        }
        let Some(found) = self.source.shape(&full) else {
            return Err(LoadError::MissingTensor {
                path: self.source.origin().to_path_buf(),
                name: self.source.describe(&full),
                expected: shape.to_vec(),
                component: self.component.to_string(),
            });
        };
        if found != shape {
            return Err(LoadError::ShapeMismatch {
                path: self.source.origin().to_path_buf(),
                name: self.source.describe(&full),
                expected: shape.to_vec(),
                found,
                component: self.component.to_string(),
            });
        }
        let t = self.source.load(&full, &self.device)?;
        if t.dtype() == self.dtype {
            Ok(t)
        } else {
            t.to_dtype(self.dtype).map_err(|source| LoadError::Tensor {
                path: self.source.origin().to_path_buf(),
                source,
            })
        }
    }
}

/// A source with no file: every tensor is freshly initialised at the requested
/// shape (benchmarks with SD-sized random weights; compute is what matters).
pub struct RandomInit {
    origin: PathBuf,
}

impl RandomInit {
    pub fn new(label: &str) -> Self {
        Self {
            origin: PathBuf::from(label),
        }
    }
}

impl TensorSource for RandomInit {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn shape(&self, _name: &str) -> Option<Vec<usize>> {
        None
    }

    fn load(&self, name: &str, _device: &Device) -> Result<Tensor, LoadError> {
        Err(LoadError::MissingTensor {
            path: self.origin.clone(),
            name: name.to_string(),
            expected: Vec::new(),
            component: "random weights".into(),
        })
    }

    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn random_init(&self) -> bool {
        true
    }
}
