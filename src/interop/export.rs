//! Writing pseudo-words in the layouts other tools load.
//!
//! | format | files | tensor |
//! |---|---|---|
//! | `a1111` | `<name>.safetensors` (pair: + `<name>-neg.safetensors`) | `emb_params` `[n, d]` |
//! | `a1111-pt` | `<name>.pt` (torch zip pickle) | `string_to_param: {"*": [n, d]}` |
//! | `kohya` | `<name>.safetensors` | `emb_params` `[n, d]` |
//! | `diffusers` | `<name>/learned_embeds.safetensors` | `{"<name>": [n, d]}` |
//! | `onetrainer` | `<name>.safetensors` | `emp_params` `[n, d]` |
//!
//! AUTOMATIC1111 and ComfyUI name a word after its file, so a DreamArtist pair
//! is two files. diffusers' `load_textual_inversion` refuses a file with more
//! than one key, so each word gets its own folder holding the file the
//! diffusers training script writes (`pipe.load_textual_inversion("<out>/<name>")`).
//! Vectors are written as f32: exporting then importing is bit-exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use super::torch_write::{write_a1111_pt, PtMeta};
use super::InteropError;
use crate::workspace::fsutil::save_safetensors_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    A1111,
    A1111Pt,
    Kohya,
    Diffusers,
    OneTrainer,
}

impl ExportFormat {
    pub const NAMES: [&'static str; 5] = ["a1111", "a1111-pt", "kohya", "diffusers", "onetrainer"];

    pub fn parse(s: &str) -> Result<Self, InteropError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "a1111" | "automatic1111" => Self::A1111,
            "a1111-pt" | "pt" => Self::A1111Pt,
            "kohya" | "comfyui" => Self::Kohya,
            "diffusers" => Self::Diffusers,
            "onetrainer" => Self::OneTrainer,
            other => {
                return Err(InteropError::Invalid(format!(
                    "unknown export format `{other}` (known: {})",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::A1111 => "a1111",
            Self::A1111Pt => "a1111-pt",
            Self::Kohya => "kohya",
            Self::Diffusers => "diffusers",
            Self::OneTrainer => "onetrainer",
        }
    }

    /// Where a word named `name` goes under `out`.
    pub fn path_for(&self, out: &Path, name: &str) -> PathBuf {
        match self {
            Self::A1111Pt => out.join(format!("{name}.pt")),
            Self::Diffusers => out.join(name).join("learned_embeds.safetensors"),
            _ => out.join(format!("{name}.safetensors")),
        }
    }
}

/// One word to write.
#[derive(Debug, Clone)]
pub struct ExportWord<'a> {
    pub name: &'a str,
    pub vectors: &'a Tensor,
    pub step: Option<u64>,
    pub checkpoint_name: Option<&'a str>,
    pub checkpoint_hash: Option<&'a str>,
}

/// A word name usable as a file name (no separators, not hidden, not empty).
pub fn check_file_name(name: &str) -> Result<(), InteropError> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(InteropError::Invalid(format!(
            "`{name}` cannot be used as a file name; give another name with --name"
        )));
    }
    Ok(())
}

/// Writes one word; returns the file written.
pub fn export_word(
    word: &ExportWord,
    format: ExportFormat,
    out: &Path,
) -> Result<PathBuf, InteropError> {
    check_file_name(word.name)?;
    let path = format.path_for(out, word.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| InteropError::write(dir, e))?;
    }
    let v = word
        .vectors
        .to_dtype(DType::F32)
        .map_err(|e| InteropError::tensor(&path, e))?;
    if v.rank() != 2 {
        return Err(InteropError::BadShape {
            path: path.clone(),
            message: format!(
                "vectors of `{}` have shape {:?}, expected [n, d]",
                word.name,
                v.dims()
            ),
        });
    }
    let mut md = HashMap::new();
    let (key, meta) = match format {
        ExportFormat::A1111Pt => {
            write_a1111_pt(
                &path,
                &v,
                &PtMeta {
                    name: word.name.to_string(),
                    step: word.step,
                    checkpoint_name: word.checkpoint_name.map(str::to_string),
                    checkpoint_hash: word.checkpoint_hash.map(str::to_string),
                },
            )?;
            return Ok(path);
        }
        ExportFormat::Diffusers => {
            md.insert("format".to_string(), "pt".to_string());
            (format!("<{}>", word.name), md)
        }
        ExportFormat::A1111 | ExportFormat::Kohya | ExportFormat::OneTrainer => {
            md.insert("name".to_string(), word.name.to_string());
            if let Some(s) = word.step {
                md.insert("step".to_string(), s.to_string());
            }
            if let Some(c) = word.checkpoint_name {
                md.insert("sd_checkpoint_name".to_string(), c.to_string());
            }
            if let Some(c) = word.checkpoint_hash {
                md.insert("sd_checkpoint".to_string(), c.to_string());
            }
            let key = if format == ExportFormat::OneTrainer {
                "emp_params"
            } else {
                "emb_params"
            };
            (key.to_string(), md)
        }
    };
    save_safetensors_atomic(&path, &[(key.as_str(), &v)], Some(meta))
        .map_err(|e| InteropError::write(&path, format!("{e:#}")))?;
    Ok(path)
}

/// Writes several words, refusing two with the same name (one would overwrite the other).
pub fn export_words(
    words: &[ExportWord],
    format: ExportFormat,
    out: &Path,
) -> Result<Vec<PathBuf>, InteropError> {
    for (i, w) in words.iter().enumerate() {
        if words[..i].iter().any(|o| o.name == w.name) {
            return Err(InteropError::Invalid(format!(
                "two inputs are both named `{}`; convert them separately or rename one with --name",
                w.name
            )));
        }
    }
    words.iter().map(|w| export_word(w, format, out)).collect()
}
