//! Our embedding files: one tensor `emb_params` `[n, d]` f32 plus metadata —
//! the layout AUTOMATIC1111, ComfyUI and kohya load by file name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::workspace::fsutil::save_safetensors_atomic;

/// What we record next to the vectors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingMeta {
    /// The pseudo-word's name without brackets (`cat` or `cat-neg`).
    pub name: String,
    pub step: u64,
    pub base_model: String,
    pub base_model_hash: String,
    pub pos_vectors: usize,
    pub neg_vectors: usize,
}

impl EmbeddingMeta {
    fn to_map(&self, vectors: usize) -> HashMap<String, String> {
        HashMap::from([
            ("name".into(), self.name.clone()),
            ("step".into(), self.step.to_string()),
            ("sd_checkpoint_name".into(), self.base_model.clone()),
            ("sd_checkpoint".into(), self.base_model_hash.clone()),
            ("vectors".into(), vectors.to_string()),
            ("pos_vectors".into(), self.pos_vectors.to_string()),
            ("neg_vectors".into(), self.neg_vectors.to_string()),
            ("format".into(), "dreamartist".into()),
        ])
    }
}

pub fn save_embedding(path: &Path, vectors: &Tensor, meta: &EmbeddingMeta) -> Result<()> {
    let v = vectors.to_dtype(DType::F32)?;
    let n = v.dim(0)?;
    save_safetensors_atomic(path, &[("emb_params", &v)], Some(meta.to_map(n)))
        .with_context(|| format!("{}: cannot write the embedding", path.display()))
}

/// Loads one of our embedding files (`emb_params`), with its metadata.
pub fn load_embedding(path: &Path) -> Result<(Tensor, EmbeddingMeta)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a safetensors embedding ({e})", path.display()))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: bad safetensors header ({e})", path.display()))?;
    let map = md.metadata().clone().unwrap_or_default();
    let view = st
        .tensor("emb_params")
        .map_err(|_| anyhow!("{}: no `emb_params` tensor", path.display()))?;
    let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)?.to_dtype(DType::F32)?;
    if t.rank() != 2 {
        return Err(anyhow!(
            "{}: `emb_params` has shape {:?}, expected [n, d]",
            path.display(),
            t.dims()
        ));
    }
    let get = |k: &str| map.get(k).cloned().unwrap_or_default();
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    Ok((
        t,
        EmbeddingMeta {
            name: get("name"),
            step: num("step"),
            base_model: get("sd_checkpoint_name"),
            base_model_hash: get("sd_checkpoint"),
            pos_vectors: num("pos_vectors") as usize,
            neg_vectors: num("neg_vectors") as usize,
        },
    ))
}
