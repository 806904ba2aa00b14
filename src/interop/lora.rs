//! LoRA files in the kohya layout (what DreamArtist++ writes, and what
//! AUTOMATIC1111, ComfyUI and diffusers read): `inspect` reports them from
//! their header, `export` copies a concept's adapters beside its words, and
//! `import --lora-of` makes a LoRA file a concept's positive (or negative)
//! adapter. Checking a file's layers against a model needs the model; that
//! happens when a prompt uses the concept ([`crate::sd::lora_file`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::safetensors_header::{self, Header};
use super::InteropError;
use crate::concept::{adapter_files, lora_paths, CONCEPT_FILE};
use crate::sd::lora_file;
use crate::workspace::Workspace;

const PARTS: [&str; 3] = [lora_file::DOWN, lora_file::UP, lora_file::ALPHA];

/// Whether a safetensors header holds a kohya LoRA network.
pub fn is_lora(header: &Header) -> bool {
    !header.tensors.is_empty()
        && header.tensors.iter().any(|t| t.name.ends_with(PARTS[0]))
        && header
            .tensors
            .iter()
            .all(|t| t.name.starts_with("lora_") || PARTS.iter().any(|p| t.name.ends_with(p)))
}

/// What `inspect` says about a LoRA file.
pub struct LoraReport {
    pub path: PathBuf,
    /// Adapted layers per network prefix (`lora_unet`, `lora_te`, `lora_te1`, `lora_te2`).
    pub layers: BTreeMap<String, usize>,
    pub ranks: Vec<usize>,
    pub dtypes: Vec<String>,
    /// The family the layer widths point to, when they do.
    pub family: Option<&'static str>,
    /// The text context width the cross-attention layers read, if any.
    pub context_width: Option<usize>,
    /// Names after the original (SGM/LDM) UNet instead of diffusers'.
    pub sgm_names: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a LoRA file's header (no tensor data).
pub fn inspect_lora(path: &Path, header: &Header) -> LoraReport {
    let mut layers = BTreeMap::new();
    let mut ranks = Vec::new();
    let mut dtypes = Vec::new();
    let mut context_width = None;
    let mut two_encoders = false;
    for t in &header.tensors {
        if !dtypes.contains(&t.dtype) {
            dtypes.push(t.dtype.clone());
        }
        let Some(layer) = t.name.strip_suffix(PARTS[0]) else {
            continue;
        };
        let net = ["lora_unet", "lora_te1", "lora_te2", "lora_te"]
            .into_iter()
            .find(|p| layer.starts_with(&format!("{p}_")))
            .unwrap_or("other");
        two_encoders |= net == "lora_te1" || net == "lora_te2";
        *layers.entry(net.to_string()).or_insert(0) += 1;
        if let Some(r) = t.shape.first() {
            if !ranks.contains(r) {
                ranks.push(*r);
            }
        }
        // Cross-attention keys read the text context: its width names the family.
        if layer.ends_with("attn2_to_k") {
            context_width = t.shape.get(1).copied();
        }
    }
    ranks.sort_unstable();
    let family = if two_encoders || context_width == Some(2048) {
        Some("SDXL")
    } else {
        match context_width {
            Some(768) => Some("SD 1.x"),
            Some(1024) => Some("SD 2.x"),
            _ => None,
        }
    };
    let sgm_names = header.tensors.iter().any(|t| {
        [
            "lora_unet_input_blocks_",
            "lora_unet_middle_block_",
            "lora_unet_output_blocks_",
        ]
        .iter()
        .any(|p| t.name.starts_with(p))
    });
    let metadata = header
        .metadata
        .iter()
        .filter(|(k, _)| {
            k.starts_with("dreamartist_")
                || matches!(
                    k.as_str(),
                    "ss_network_module"
                        | "ss_network_dim"
                        | "ss_network_alpha"
                        | "ss_base_model_version"
                        | "ss_sd_model_name"
                        | "ss_output_name"
                )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    LoraReport {
        path: path.to_path_buf(),
        layers,
        ranks,
        dtypes,
        family,
        context_width,
        sgm_names,
        metadata,
    }
}

impl fmt::Display for LoraReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: LoRA network (kohya layout)", self.path.display())?;
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        writeln!(f, "  layers:     {}", layers.join(", "))?;
        let ranks: Vec<String> = self.ranks.iter().map(|r| r.to_string()).collect();
        writeln!(f, "  rank:       {}", ranks.join(", "))?;
        writeln!(f, "  stored as:  {}", self.dtypes.join(", "))?;
        match (self.family, self.context_width) {
            (Some(fam), _) => writeln!(f, "  for:        {fam} (from the layer widths)")?,
            (None, Some(w)) => writeln!(
                f,
                "  for:        a model with {w}-wide text context (not SD 1.x, 2.x or SDXL)"
            )?,
            (None, None) => writeln!(
                f,
                "  for:        unknown family (no cross-attention layer to tell)"
            )?,
        }
        if self.sgm_names {
            writeln!(
                f,
                "  names:      original (SGM) UNet names; read as their diffusers layers"
            )?;
        }
        for (k, v) in &self.metadata {
            writeln!(f, "  {k}: {v}")?;
        }
        Ok(())
    }
}

/// Copies the DreamArtist++ adapters that go with concept `name`'s words
/// (stored in its folder, trained by run `word_run`) into `out`; none when
/// the concept has none.
pub fn export_adapters(
    ws: &Workspace,
    name: &str,
    word_run: &str,
    out: &Path,
) -> Result<Vec<PathBuf>, InteropError> {
    let dir = ws.concept_dir(name);
    let Some((pos, neg)) = adapter_files(&dir, name, &dir, word_run) else {
        return Ok(Vec::new());
    };
    let (to_pos, to_neg) = lora_paths(out, name);
    let mut written = Vec::new();
    for (from, to) in [(pos, to_pos), (neg, to_neg)] {
        if let Some(from) = from {
            let bytes = std::fs::read(&from).map_err(|e| InteropError::io(&from, e))?;
            std::fs::create_dir_all(out).map_err(|e| InteropError::io(out, e))?;
            crate::fsutil::write_atomic(&to, &bytes).map_err(|e| InteropError::write(&to, e))?;
            written.push(to);
        }
    }
    Ok(written)
}

/// Makes the kohya LoRA `file` the positive (or, with `negative`, the
/// negative) DreamArtist++ adapter of `concept`; the file written.
pub fn import_adapter(
    ws: &Workspace,
    file: &Path,
    concept: &str,
    negative: bool,
) -> Result<PathBuf, InteropError> {
    let dir = ws.concept_dir(concept);
    if !dir.join(CONCEPT_FILE).is_file() {
        return Err(InteropError::Invalid(format!(
            "there is no concept `{concept}` in {}; create it first with `dreamartist concept add {concept} --reference IMG`",
            ws.root.display()
        )));
    }
    let header = safetensors_header::read(file)?;
    if !is_lora(&header) {
        return Err(InteropError::Unrecognised {
            path: file.to_path_buf(),
            message:
                "not a LoRA network in the kohya layout (no `<layer>.lora_down.weight` tensors); \
                      `import` without --lora-of takes embeddings"
                    .into(),
        });
    }
    let report = inspect_lora(file, &header);
    let widths = super::workspace::workspace_text_widths(ws)?;
    if let (Some(theirs), Some(ours)) = (report.family, super::family(&widths)) {
        if theirs != ours {
            return Err(InteropError::Invalid(format!(
                "{}: this LoRA is for {theirs} but the workspace's model is {ours}",
                file.display()
            )));
        }
    }
    let (pos, neg) = lora_paths(&dir, concept);
    let to = if negative { neg } else { pos };
    let bytes = std::fs::read(file).map_err(|e| InteropError::io(file, e))?;
    let bytes = mark_imported(file, &bytes)?;
    crate::fsutil::write_atomic(&to, &bytes).map_err(|e| InteropError::write(&to, e))?;
    Ok(to)
}

/// The file with its `dreamartist_run` metadata renamed to
/// `dreamartist_imported_run`: a run of another workspace is not this
/// concept's (generation checks that trained adapters match the words' run).
fn mark_imported(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, InteropError> {
    let corrupt = |message: &str| InteropError::Corrupt {
        path: path.to_path_buf(),
        message: message.into(),
    };
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("shorter than a safetensors header"))?;
    let len = u64::from_le_bytes(len_bytes) as usize;
    let header = bytes
        .get(8..8usize.saturating_add(len))
        .ok_or_else(|| corrupt("the header is cut short"))?;
    let mut json: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| corrupt(&format!("bad header: {e}")))?;
    let Some(meta) = json.get_mut("__metadata__").and_then(|m| m.as_object_mut()) else {
        return Ok(bytes.to_vec());
    };
    let Some(run) = meta.remove("dreamartist_run") else {
        return Ok(bytes.to_vec());
    };
    meta.insert("dreamartist_imported_run".into(), run);
    let mut text = serde_json::to_vec(&json).map_err(|e| corrupt(&e.to_string()))?;
    // Tensor data stays 8-byte aligned, as the format asks.
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}
