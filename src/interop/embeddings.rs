//! Embedding files as other tools write them, read into one shape: a word
//! name and an f32 `[vectors, width]` matrix.
//!
//! | tool | container | layout |
//! |---|---|---|
//! | AUTOMATIC1111 / DreamArtist extension | torch pickle (`.pt`, zip or legacy) | `string_to_param: {"*": [n, d]}` (+ `name`, `step`, `sd_checkpoint*`) |
//! | diffusers textual inversion | safetensors or torch pickle (`.bin`) | `{"<token>": [n, d]}` or `[d]` |
//! | kohya sd-scripts / ComfyUI | safetensors | `{"emb_params": [n, d]}` (often fp16) |
//! | OneTrainer | safetensors | `{"emp_params": [n, d]}` |
//! | SDXL: A1111, ComfyUI, kohya, OneTrainer | safetensors (or a pickled dict) | `{"clip_l": [n, 768], "clip_g": [n, 1280]}` |
//! | this tool | safetensors | `emb_params`, or SDXL's `clip_l` + `clip_g`, + metadata `format = dreamartist` |
//!
//! Words are named after the file (as A1111 does: the file name is what users
//! type), except diffusers files, which carry their token. An SDXL word is
//! read as one `[n, clip_l + clip_g]` matrix, CLIP-L's columns first, as the
//! model stack holds it ([`crate::sd::text`]). Refused: files where the
//! embedding cannot be told apart from other tensors, half an SDXL word, and
//! OneTrainer's output embeddings (see [`classify`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::safetensors_header::{self, Header, TensorInfo};
use super::InteropError;
use crate::torchfile::pickle::{GlobalPolicy, Limits, TensorRef, Value};
use crate::torchfile::{self, TorchFile};

/// The layout an embedding was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// `string_to_param` pickle (AUTOMATIC1111, DreamArtist extension).
    A1111,
    /// `{"<token>": tensor}` (diffusers textual inversion).
    Diffusers,
    /// `emb_params` (kohya sd-scripts, ComfyUI, A1111 safetensors).
    Kohya,
    /// `emp_params` (OneTrainer).
    OneTrainer,
    /// `emb_params` with our metadata.
    Dreamartist,
    /// A bare tensor saved with `torch.save(tensor)`.
    Tensor,
    /// SDXL's `clip_l` + `clip_g` (AUTOMATIC1111, ComfyUI, kohya, OneTrainer:
    /// they all write and read this one layout).
    Sdxl,
}

impl EmbeddingFormat {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::A1111 => "AUTOMATIC1111 / DreamArtist (string_to_param)",
            Self::Diffusers => "diffusers learned_embeds ({\"<token>\": vectors})",
            Self::Kohya => "kohya / ComfyUI (emb_params)",
            Self::OneTrainer => "OneTrainer (emp_params)",
            Self::Dreamartist => "dreamartist (emb_params + metadata)",
            Self::Tensor => "a bare tensor",
            Self::Sdxl => "SDXL clip_l + clip_g (AUTOMATIC1111 / ComfyUI / kohya / OneTrainer)",
        }
    }
}

/// One pseudo-word's vectors, read from a foreign (or our own) file.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The word without brackets (`astro`, `astro-neg`, `cat-toy`).
    pub name: String,
    /// f32 `[vectors, width]` on the CPU; an SDXL word's `clip_l` columns come first.
    pub vectors: Tensor,
    /// Each text encoder's columns of `vectors`: `[768]` (SD 1.x), `[1024]`
    /// (SD 2.x), `[768, 1280]` (SDXL). Compared per encoder: an SD 1.x word
    /// must never pass for SDXL's first encoder alone.
    pub widths: Vec<usize>,
    pub format: EmbeddingFormat,
    /// `safetensors`, `torch zip pickle` or `legacy (pre-1.6) torch pickle`.
    pub container: &'static str,
    pub source: PathBuf,
    /// The dtype on disk (`F16` for most kohya files; `clip_l F16, clip_g F32` if they differ).
    pub stored_dtype: String,
    /// Training step, when the file records it.
    pub step: Option<u64>,
    /// The name stored inside the file, when it differs from how the word is called.
    pub stored_name: Option<String>,
    /// The model it was trained on, when recorded (`sd_checkpoint_name`).
    pub checkpoint_name: Option<String>,
    pub checkpoint_hash: Option<String>,
}

impl Embedding {
    /// How many values are NaN or infinite (a diverged training's file).
    pub fn non_finite(&self) -> usize {
        self.vectors
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map(|v| v.iter().filter(|x| !x.is_finite()).count())
            .unwrap_or(0)
    }

    /// Refuses a word with NaN or infinite values: it would turn every image
    /// it is used in into noise.
    pub fn check_finite(&self) -> Result<(), InteropError> {
        match self.non_finite() {
            0 => Ok(()),
            n => Err(InteropError::NonFinite {
                path: self.source.clone(),
                count: n,
                total: self.vectors.elem_count(),
            }),
        }
    }

    pub fn count(&self) -> usize {
        self.vectors.dims().first().copied().unwrap_or(0)
    }

    /// The full row width (all encoders' columns).
    pub fn width(&self) -> usize {
        self.vectors.dims().get(1).copied().unwrap_or(0)
    }

    pub fn is_sdxl(&self) -> bool {
        self.widths.len() == 2
    }

    /// The layout, for `inspect`: the format, and for our own SDXL files their two tensors.
    pub fn layout(&self) -> String {
        match (self.format, self.is_sdxl()) {
            (EmbeddingFormat::Dreamartist, true) => {
                "dreamartist (clip_l + clip_g + metadata)".into()
            }
            (f, _) => f.describe().into(),
        }
    }

    /// Refuses an embedding made for another model family: `model_widths` are
    /// the workspace model's text encoders' widths, compared one by one.
    pub fn check_width(&self, model_widths: &[usize]) -> Result<(), InteropError> {
        if self.widths == model_widths {
            Ok(())
        } else {
            Err(InteropError::Width {
                path: self.source.clone(),
                found: self.widths.clone(),
                expected: model_widths.to_vec(),
            })
        }
    }
}

/// A DreamArtist pair (`X` and `X-neg`) or a single word.
// A command holds a few of these; boxing a pair's words would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Group {
    Pair { pos: Embedding, neg: Embedding },
    Single(Embedding),
}

impl Group {
    pub fn name(&self) -> &str {
        match self {
            Group::Pair { pos, .. } => &pos.name,
            Group::Single(e) => &e.name,
        }
    }

    /// Renames the word, or the pair (`N` and `N-neg`).
    pub fn rename(&mut self, name: &str) {
        match self {
            Group::Pair { pos, neg } => {
                pos.name = name.to_string();
                neg.name = format!("{name}-neg");
            }
            Group::Single(e) => e.name = name.to_string(),
        }
    }

    pub fn words(&self) -> Vec<&Embedding> {
        match self {
            Group::Pair { pos, neg } => vec![pos, neg],
            Group::Single(e) => vec![e],
        }
    }
}

/// Groups words into DreamArtist pairs where both `X` and `X-neg` are present,
/// keeping the input order otherwise.
pub fn pair_up(words: Vec<Embedding>) -> Vec<Group> {
    let mut rest: Vec<Option<Embedding>> = words.into_iter().map(Some).collect();
    let mut groups = Vec::new();
    for i in 0..rest.len() {
        let Some(name) = rest[i].as_ref().map(|e| e.name.clone()) else {
            continue;
        };
        if name.ends_with("-neg") {
            let base = name.trim_end_matches("-neg");
            if rest.iter().flatten().any(|e| e.name == base) {
                continue; // taken when its positive comes up
            }
        }
        let neg_name = format!("{name}-neg");
        let neg_idx = rest
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.name == neg_name));
        let pos = rest[i].take();
        match (pos, neg_idx.and_then(|j| rest[j].take())) {
            (Some(pos), Some(neg)) => groups.push(Group::Pair { pos, neg }),
            (Some(pos), None) => groups.push(Group::Single(pos)),
            _ => {}
        }
    }
    // Negatives whose positive came later in the input.
    groups.extend(rest.into_iter().flatten().map(Group::Single));
    groups
}

/// Loads an embedding from any supported file.
pub fn load_embedding_file(path: &Path) -> Result<Embedding, InteropError> {
    load_embedding_file_with(path, &Limits::DEFAULT)
}

/// [`load_embedding_file`] with a torch file's pickle held to `limits` (the
/// fuzz target uses small ones, so that a pickle bomb is refused in
/// microseconds rather than a second).
pub fn load_embedding_file_with(path: &Path, limits: &Limits) -> Result<Embedding, InteropError> {
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| InteropError::io(path, e))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(r) => n += r,
                Err(e) => return Err(InteropError::io(path, e)),
            }
        }
        n
    };
    if n == 0 {
        return Err(InteropError::Corrupt {
            path: path.to_path_buf(),
            message: "the file is empty".into(),
        });
    }
    if torchfile::sniff(&head[..n]).is_some() {
        from_torch(path, limits)
    } else if safetensors_header::sniff(&head[..n]) {
        from_safetensors(path)
    } else {
        Err(InteropError::Unrecognised {
            path: path.to_path_buf(),
            message: "not an embedding file: neither safetensors nor a PyTorch pickle".into(),
        })
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "embedding".into())
}

/// Prefixes that mark a whole model rather than an embedding.
const CHECKPOINT_PREFIXES: [&str; 4] = [
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.",
    "conditioner.",
];

fn not_a_checkpoint(path: &Path, names: &[&str]) -> Result<(), InteropError> {
    if names
        .iter()
        .any(|n| CHECKPOINT_PREFIXES.iter().any(|p| n.starts_with(p)))
    {
        return Err(InteropError::Unrecognised {
            path: path.to_path_buf(),
            message: format!(
                "a Stable Diffusion checkpoint ({} tensors), not an embedding; \
                 use it as a model (`model = \"{}\"` in workspace.toml) or look at it with `dreamartist inspect`",
                names.len(),
                path.display()
            ),
        });
    }
    Ok(())
}

/// Where a file's embedding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// One tensor (index into the file's tensors).
    One(usize, EmbeddingFormat),
    /// SDXL: `clip_l`'s and `clip_g`'s indices, in that order.
    Sdxl([usize; 2], EmbeddingFormat),
}

/// The SDXL keys, as every tool names them.
const CLIP_L: &str = "clip_l";
const CLIP_G: &str = "clip_g";

/// OneTrainer's output embeddings: `<key>_out` next to (or instead of) `<key>`.
fn is_output_key(name: &str, tensors: &[TensorInfo]) -> bool {
    name.strip_suffix("_out").is_some_and(|base| {
        [CLIP_L, CLIP_G].contains(&base) || tensors.iter().any(|t| t.name == base)
    })
}

/// `` `a` [1, 768] F32, `b` [1, 768] F32 `` (the first 8).
fn listed(tensors: &[TensorInfo]) -> String {
    let mut listed: Vec<String> = tensors.iter().take(8).map(TensorInfo::describe).collect();
    if tensors.len() > 8 {
        listed.push(format!("… and {} more", tensors.len() - 8));
    }
    listed.join(", ")
}

/// Which tensor(s) of a file are the embedding, and in which layout.
///
/// OneTrainer's *output* embeddings (`clip_l_out` / `clip_g_out`) are refused
/// rather than loaded: their trained vectors replace the text encoders'
/// outputs at the word's positions, which no input-side word can express, and
/// the `clip_l` / `clip_g` beside them are then not the word (OneTrainer
/// saves zeros there). Loading those would import a word that silently does
/// nothing; refusing says what the file is.
fn classify(
    path: &Path,
    tensors: &[TensorInfo],
    metadata_format: Option<&str>,
) -> Result<Found, InteropError> {
    let find = |name: &str| tensors.iter().position(|t| t.name == name);
    let ours = metadata_format == Some("dreamartist");
    if tensors.iter().any(|t| is_output_key(&t.name, tensors)) {
        return Err(InteropError::OutputEmbedding {
            path: path.to_path_buf(),
            found: listed(tensors),
        });
    }
    match (find(CLIP_L), find(CLIP_G)) {
        (Some(l), Some(g)) => {
            if tensors.len() > 2 {
                return Err(InteropError::Sdxl {
                    path: path.to_path_buf(),
                    message: format!(
                        "besides `clip_l` and `clip_g` it holds other tensors ({}); \
                         keep only the word's two tensors",
                        listed(tensors)
                    ),
                });
            }
            let format = if ours {
                EmbeddingFormat::Dreamartist
            } else {
                EmbeddingFormat::Sdxl
            };
            return Ok(Found::Sdxl([l, g], format));
        }
        (Some(_), None) | (None, Some(_)) => {
            let (has, lacks) = if find(CLIP_L).is_some() {
                (CLIP_L, CLIP_G)
            } else {
                (CLIP_G, CLIP_L)
            };
            return Err(InteropError::Sdxl {
                path: path.to_path_buf(),
                message: format!(
                    "it has `{has}` but no `{lacks}` (found {}); an SDXL word holds vectors \
                     for both text encoders",
                    listed(tensors)
                ),
            });
        }
        (None, None) => {}
    }
    if let Some(i) = find("emb_params") {
        let f = if ours {
            EmbeddingFormat::Dreamartist
        } else {
            EmbeddingFormat::Kohya
        };
        return Ok(Found::One(i, f));
    }
    if let Some(i) = find("emp_params") {
        return Ok(Found::One(i, EmbeddingFormat::OneTrainer));
    }
    let a1111: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].name.starts_with("string_to_param."))
        .collect();
    if a1111.len() == 1 {
        return Ok(Found::One(a1111[0], EmbeddingFormat::A1111));
    }
    match tensors.len() {
        0 => Err(InteropError::Unrecognised {
            path: path.to_path_buf(),
            message: "the file holds no tensors, so no embedding".into(),
        }),
        1 => Ok(Found::One(0, EmbeddingFormat::Diffusers)),
        n => Err(InteropError::Ambiguous {
            path: path.to_path_buf(),
            found: format!("{n} tensors ({})", listed(tensors)),
        }),
    }
}

/// `[d]` → `[1, d]`; anything but `[n, d]` is refused. Converts to f32.
fn as_vectors(path: &Path, key: &str, t: Tensor) -> Result<Tensor, InteropError> {
    let t = match t.dims() {
        [d] if *d > 0 => t
            .reshape((1, *d))
            .map_err(|e| InteropError::tensor(path, e))?,
        [n, d] if *n > 0 && *d > 0 => t,
        dims => {
            return Err(InteropError::BadShape {
                path: path.to_path_buf(),
                message: format!(
                    "tensor `{key}` has shape {dims:?}; an embedding is [vectors, width] (or [width] for one vector)"
                ),
            })
        }
    };
    t.to_dtype(DType::F32)
        .and_then(|t| t.contiguous())
        .map_err(|e| InteropError::tensor(path, e))
}

/// The word's matrix and per-encoder widths from its tensor(s) (`clip_l` then
/// `clip_g` for SDXL), each already `[n, d]` f32.
fn join(path: &Path, parts: Vec<(String, Tensor)>) -> Result<(Tensor, Vec<usize>), InteropError> {
    let widths: Vec<usize> = parts.iter().map(|(_, t)| t.dims()[1]).collect();
    match parts.as_slice() {
        [(_, t)] => Ok((t.clone(), widths)),
        [(lk, l), (gk, g)] => {
            let (nl, ng) = (l.dims()[0], g.dims()[0]);
            if nl != ng {
                return Err(InteropError::Sdxl {
                    path: path.to_path_buf(),
                    message: format!(
                        "`{lk}` has {nl} vectors {:?} but `{gk}` has {ng} {:?}; \
                         a word has as many vectors for each text encoder",
                        l.dims(),
                        g.dims()
                    ),
                });
            }
            let v = Tensor::cat(&[l, g], 1).map_err(|e| InteropError::tensor(path, e))?;
            Ok((v, widths))
        }
        _ => Err(InteropError::Invalid(format!(
            "{}: an embedding of {} tensors",
            path.display(),
            parts.len()
        ))),
    }
}

/// `F16`, or `clip_l F16, clip_g F32` when the parts differ.
fn dtypes(parts: &[(&str, String)]) -> String {
    match parts {
        [(_, d), rest @ ..] if rest.iter().all(|(_, o)| o == d) => d.clone(),
        _ => parts
            .iter()
            .map(|(k, d)| format!("{k} {d}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn from_safetensors(path: &Path) -> Result<Embedding, InteropError> {
    let header: Header = safetensors_header::read(path)?;
    let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
    not_a_checkpoint(path, &names)?;
    let md = |k: &str| header.metadata.get(k).filter(|v| !v.is_empty()).cloned();
    let (indices, format) = match classify(path, &header.tensors, md("format").as_deref())? {
        Found::One(i, f) => (vec![i], f),
        Found::Sdxl(lg, f) => (lg.to_vec(), f),
    };
    let bytes = std::fs::read(path).map_err(|e| InteropError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| InteropError::Corrupt {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file ({e})"),
    })?;
    let mut parts = Vec::new();
    for &i in &indices {
        let info = &header.tensors[i];
        let view = st.tensor(&info.name).map_err(|e| InteropError::Corrupt {
            path: path.to_path_buf(),
            message: format!("tensor `{}`: {e}", info.name),
        })?;
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
            .map_err(|e| InteropError::tensor(path, e))?;
        parts.push((info.name.clone(), as_vectors(path, &info.name, t)?));
    }
    let (vectors, widths) = join(path, parts)?;
    let stored: Vec<(&str, String)> = indices
        .iter()
        .map(|&i| {
            (
                header.tensors[i].name.as_str(),
                header.tensors[i].dtype.clone(),
            )
        })
        .collect();
    let name = match format {
        EmbeddingFormat::Diffusers => token_name(&header.tensors[indices[0]].name),
        _ => stem(path),
    };
    Ok(Embedding {
        name,
        vectors,
        widths,
        format,
        container: "safetensors",
        source: path.to_path_buf(),
        stored_dtype: dtypes(&stored),
        step: md("step").and_then(|s| s.parse().ok()),
        stored_name: md("name"),
        checkpoint_name: md("sd_checkpoint_name"),
        checkpoint_hash: md("sd_checkpoint"),
    })
}

/// `<cat-toy>` → `cat-toy`.
fn token_name(key: &str) -> String {
    key.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

fn from_torch(path: &Path, limits: &Limits) -> Result<Embedding, InteropError> {
    let file = TorchFile::open_with(path, GlobalPolicy::Strict, limits)?;
    let root = file.root();
    let unrecognised = |message: String| InteropError::Unrecognised {
        path: path.to_path_buf(),
        message,
    };
    // (key, tensor) of the word's tensor(s), and the layout they were found in.
    let (found, format): (Vec<(String, TensorRef)>, EmbeddingFormat) = match root {
        Value::Tensor(t) => (
            vec![("tensor".to_string(), (**t).clone())],
            EmbeddingFormat::Tensor,
        ),
        Value::Dict(pairs) => {
            if let Some(params) = root.get("string_to_param") {
                let Some(params) = params.as_dict() else {
                    return Err(unrecognised(format!(
                        "`string_to_param` is a {}, expected a dict of tensors",
                        params.kind()
                    )));
                };
                let terms: Vec<(String, &TensorRef)> = params
                    .iter()
                    .filter_map(|(k, v)| match v {
                        Value::Tensor(t) => Some((k.as_str().unwrap_or("?").to_string(), &**t)),
                        _ => None,
                    })
                    .collect();
                match terms.as_slice() {
                    [(k, t)] => (
                        vec![(format!("string_to_param.{k}"), (*t).clone())],
                        EmbeddingFormat::A1111,
                    ),
                    [] => return Err(unrecognised("`string_to_param` holds no tensor".into())),
                    many => {
                        return Err(InteropError::Ambiguous {
                            path: path.to_path_buf(),
                            found: format!(
                                "{} terms in `string_to_param` ({})",
                                many.len(),
                                many.iter()
                                    .map(|(k, t)| format!("`{k}` {:?}", t.shape))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        })
                    }
                }
            } else {
                let mut infos = Vec::new();
                let mut refs = Vec::new();
                for (k, v) in pairs {
                    if let (Some(k), Value::Tensor(t)) = (k.as_str(), v) {
                        infos.push(TensorInfo {
                            name: k.to_string(),
                            dtype: t.dtype.name().to_string(),
                            shape: t.shape.clone(),
                        });
                        refs.push((**t).clone());
                    }
                }
                let names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
                not_a_checkpoint(path, &names)?;
                if infos.is_empty() {
                    let keys: Vec<String> = pairs
                        .iter()
                        .take(8)
                        .map(|(k, v)| format!("{} ({})", k.as_str().unwrap_or("?"), v.kind()))
                        .collect();
                    return Err(unrecognised(format!(
                        "no tensors at the top level (found {}); not an embedding",
                        if keys.is_empty() {
                            "an empty dict".into()
                        } else {
                            keys.join(", ")
                        }
                    )));
                }
                let (indices, format) = match classify(path, &infos, None)? {
                    Found::One(i, f) => (vec![i], f),
                    Found::Sdxl(lg, f) => (lg.to_vec(), f),
                };
                let found = indices
                    .iter()
                    .map(|&i| (infos[i].name.clone(), refs[i].clone()))
                    .collect();
                (found, format)
            }
        }
        other => {
            return Err(unrecognised(format!(
                "the pickle holds a {}, not an embedding dict",
                other.kind()
            )))
        }
    };
    let mut parts = Vec::new();
    for (key, tref) in &found {
        let t = file.tensor(tref, &Device::Cpu)?;
        parts.push((key.clone(), as_vectors(path, key, t)?));
    }
    let (vectors, widths) = join(path, parts)?;
    let stored: Vec<(&str, String)> = found
        .iter()
        .map(|(k, t)| (k.as_str(), t.dtype.name().to_string()))
        .collect();
    let text = |k: &str| root.get(k).and_then(Value::as_str).map(str::to_string);
    let name = match format {
        EmbeddingFormat::Diffusers => token_name(&found[0].0),
        _ => stem(path),
    };
    Ok(Embedding {
        name,
        vectors,
        widths,
        format,
        container: file.format().describe(),
        source: path.to_path_buf(),
        stored_dtype: dtypes(&stored),
        step: root
            .get("step")
            .and_then(Value::as_int)
            .and_then(|s| u64::try_from(s).ok()),
        stored_name: text("name"),
        checkpoint_name: text("sd_checkpoint_name"),
        checkpoint_hash: text("sd_checkpoint"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(name: &str) -> Embedding {
        Embedding {
            name: name.into(),
            vectors: Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap(),
            widths: vec![4],
            format: EmbeddingFormat::Kohya,
            container: "safetensors",
            source: PathBuf::from(format!("{name}.safetensors")),
            stored_dtype: "F32".into(),
            step: None,
            stored_name: None,
            checkpoint_name: None,
            checkpoint_hash: None,
        }
    }

    fn names(groups: &[Group]) -> Vec<String> {
        groups
            .iter()
            .map(|g| match g {
                Group::Pair { pos, neg } => format!("{}+{}", pos.name, neg.name),
                Group::Single(e) => e.name.clone(),
            })
            .collect()
    }

    #[test]
    fn pairs_are_found_in_any_order() {
        let g = pair_up(vec![emb("a-neg"), emb("b"), emb("a"), emb("c-neg")]);
        assert_eq!(names(&g), vec!["b", "a+a-neg", "c-neg"]);
        let g = pair_up(vec![emb("x"), emb("x-neg")]);
        assert_eq!(names(&g), vec!["x+x-neg"]);
    }

    #[test]
    fn token_names_lose_their_brackets() {
        assert_eq!(token_name("<cat-toy>"), "cat-toy");
        assert_eq!(token_name("plain"), "plain");
    }
}
