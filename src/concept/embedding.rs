//! Our embedding files: one tensor `emb_params` `[n, d]` f32 plus metadata —
//! the layout AUTOMATIC1111, ComfyUI and kohya load by file name. SDXL words
//! are two tensors, `clip_l` `[n, 768]` and `clip_g` `[n, 1280]`, as those tools
//! write and read SDXL embeddings; in memory they are one `[n, 768 + 1280]`
//! matrix (see [`crate::sd::text`]).

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
    /// Each text encoder's columns of the matrix (`[768, 1280]` on SDXL,
    /// written as `clip_l` + `clip_g`); empty or one width: a single `emb_params`.
    pub widths: Vec<usize>,
    /// The training run the vectors come from (empty for imported words): a
    /// concept's two files from different runs are a torn pair.
    pub run: String,
}

/// The tensor names of SDXL's two text encoders' blocks, in order.
pub const SDXL_KEYS: [&str; 2] = ["clip_l", "clip_g"];

impl EmbeddingMeta {
    fn to_map(&self, vectors: usize) -> HashMap<String, String> {
        HashMap::from([
            ("name".into(), self.name.clone()),
            ("run".into(), self.run.clone()),
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

/// Writes a word atomically: `emb_params`, or `clip_l` + `clip_g` when
/// `meta.widths` has SDXL's two blocks.
pub fn save_embedding(path: &Path, vectors: &Tensor, meta: &EmbeddingMeta) -> Result<()> {
    let v = vectors.to_dtype(DType::F32)?;
    let n = v.dim(0)?;
    let d = v.dim(1)?;
    let tensors: Vec<(&str, Tensor)> = match meta.widths.as_slice() {
        [] | [_] => vec![("emb_params", v)],
        [l, g] if l + g == d => vec![
            (SDXL_KEYS[0], v.narrow(1, 0, *l)?.contiguous()?),
            (SDXL_KEYS[1], v.narrow(1, *l, *g)?.contiguous()?),
        ],
        other => {
            return Err(anyhow!(
                "{}: cannot write a {d}-wide word as text-encoder blocks {other:?}",
                path.display()
            ))
        }
    };
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
    save_safetensors_atomic(path, &refs, Some(meta.to_map(n)))
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
    let read = |key: &str| -> Result<Option<Tensor>> {
        let Ok(view) = st.tensor(key) else {
            return Ok(None);
        };
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)?.to_dtype(DType::F32)?;
        if t.rank() != 2 {
            return Err(anyhow!(
                "{}: `{key}` has shape {:?}, expected [n, d]",
                path.display(),
                t.dims()
            ));
        }
        Ok(Some(t))
    };
    let (t, widths) = match (
        read("emb_params")?,
        read(SDXL_KEYS[0])?,
        read(SDXL_KEYS[1])?,
    ) {
        (Some(t), None, None) => {
            let d = t.dim(1)?;
            (t, vec![d])
        }
        (None, Some(l), Some(g)) => {
            if l.dim(0)? != g.dim(0)? {
                return Err(anyhow!(
                    "{}: `clip_l` has {} vectors but `clip_g` has {}",
                    path.display(),
                    l.dim(0)?,
                    g.dim(0)?
                ));
            }
            let widths = vec![l.dim(1)?, g.dim(1)?];
            (Tensor::cat(&[&l, &g], 1)?, widths)
        }
        _ => {
            return Err(anyhow!(
                "{}: neither an `emb_params` tensor nor an SDXL `clip_l` + `clip_g` pair",
                path.display()
            ))
        }
    };
    let get = |k: &str| map.get(k).cloned().unwrap_or_default();
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    Ok((
        t,
        EmbeddingMeta {
            name: get("name"),
            run: get("run"),
            step: num("step"),
            base_model: get("sd_checkpoint_name"),
            base_model_hash: get("sd_checkpoint"),
            pos_vectors: num("pos_vectors") as usize,
            neg_vectors: num("neg_vectors") as usize,
            widths,
        },
    ))
}
