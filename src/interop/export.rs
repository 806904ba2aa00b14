//! Writing pseudo-words in the layouts other tools load.
//!
//! | format | files | tensor |
//! |---|---|---|
//! | `a1111` | `<name>.safetensors` (pair: + `<name>-neg.safetensors`) | `emb_params` `[n, d]` |
//! | `a1111-pt` | `<name>.pt` (torch zip pickle) | `string_to_param: {"*": [n, d]}` |
//! | `kohya` | `<name>.safetensors` | `emb_params` `[n, d]` |
//! | `diffusers` | `<name>/learned_embeds.safetensors` | `{"<name>": [n, d]}` |
//! | `onetrainer` | `<name>.safetensors` | `emp_params` `[n, d]` |
//! | SDXL, every format but `a1111-pt` | `<name>.safetensors` | `clip_l` `[n, 768]` + `clip_g` `[n, 1280]` |
//!
//! AUTOMATIC1111 and ComfyUI name a word after its file, so a DreamArtist pair
//! is two files. diffusers' `load_textual_inversion` refuses a file with more
//! than one key, so each word gets its own folder holding the file the
//! diffusers training script writes (`pipe.load_textual_inversion("<out>/<name>")`).
//! Vectors are written as f32: exporting then importing is bit-exact.
//!
//! SDXL words have one layout everywhere: AUTOMATIC1111, ComfyUI, kohya and
//! OneTrainer all read `clip_l` + `clip_g` safetensors. `a1111-pt`'s
//! `string_to_param` pickle has one tensor per word, so it has no SDXL form
//! and is refused. diffusers has no SDXL embedding file of its own; its
//! documented way loads the same file one encoder at a time (see
//! [`diffusers_sdxl_note`]), so `diffusers` writes that file too and says how.

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

    /// Where a word named `name` of one text encoder (SD 1.x, 2.x) goes under `out`.
    pub fn path_for(&self, out: &Path, name: &str) -> PathBuf {
        match self {
            Self::A1111Pt => out.join(format!("{name}.pt")),
            Self::Diffusers => out.join(name).join("learned_embeds.safetensors"),
            _ => out.join(format!("{name}.safetensors")),
        }
    }

    /// Where a word with these per-encoder widths goes: SDXL words are one
    /// `<name>.safetensors` in every format.
    pub fn path_for_widths(&self, out: &Path, name: &str, widths: &[usize]) -> PathBuf {
        if is_sdxl(widths) {
            out.join(format!("{name}.safetensors"))
        } else {
            self.path_for(out, name)
        }
    }
}

fn is_sdxl(widths: &[usize]) -> bool {
    widths.len() == 2
}

/// One word to write.
#[derive(Debug, Clone)]
pub struct ExportWord<'a> {
    pub name: &'a str,
    pub vectors: &'a Tensor,
    /// Each text encoder's columns of `vectors` (`[768]`, SDXL `[768, 1280]`);
    /// empty: one encoder.
    pub widths: &'a [usize],
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

/// Refuses a word the format cannot hold, before anything is written.
fn check_word(word: &ExportWord, format: ExportFormat) -> Result<(), InteropError> {
    check_file_name(word.name)?;
    let dims = word.vectors.dims();
    let [_, d] = dims else {
        return Err(InteropError::Invalid(format!(
            "the vectors of `{}` have shape {dims:?}, expected [n, d]",
            word.name
        )));
    };
    let sum: usize = word.widths.iter().sum();
    if word.widths.len() > 2 || (!word.widths.is_empty() && sum != *d) {
        return Err(InteropError::Invalid(format!(
            "the vectors of `{}` are {d} wide, which does not split into text-encoder blocks {:?}",
            word.name, word.widths
        )));
    }
    if is_sdxl(word.widths) && format == ExportFormat::A1111Pt {
        return Err(InteropError::Invalid(format!(
            "<{}> is an SDXL word (clip_l {} + clip_g {}), and `a1111-pt`'s `string_to_param` \
             layout holds one tensor per word, so it has no SDXL form; AUTOMATIC1111 and ComfyUI \
             load SDXL embeddings as `clip_l` + `clip_g` safetensors: use --format a1111",
            word.name, word.widths[0], word.widths[1]
        )));
    }
    Ok(())
}

/// The A1111 fields our safetensors exports carry as metadata: the tools read
/// only the tensors, but people (and `inspect`, and `import`) see where a word came from.
fn a1111_metadata(word: &ExportWord) -> HashMap<String, String> {
    let mut md = HashMap::new();
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
    md
}

/// Writes one word; returns the file written.
pub fn export_word(
    word: &ExportWord,
    format: ExportFormat,
    out: &Path,
) -> Result<PathBuf, InteropError> {
    check_word(word, format)?;
    let path = format.path_for_widths(out, word.name, word.widths);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| InteropError::write(dir, e))?;
    }
    let v = word
        .vectors
        .to_dtype(DType::F32)
        .map_err(|e| InteropError::tensor(&path, e))?;
    if let [l, g] = word.widths {
        let block = |start: usize, len: usize| {
            v.narrow(1, start, len)
                .and_then(|t| t.contiguous())
                .map_err(|e| InteropError::tensor(&path, e))
        };
        let (cl, cg) = (block(0, *l)?, block(*l, *g)?);
        save_safetensors_atomic(
            &path,
            &[("clip_l", &cl), ("clip_g", &cg)],
            Some(a1111_metadata(word)),
        )
        .map_err(|e| InteropError::write(&path, format!("{e:#}")))?;
        return Ok(path);
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
            let key = if format == ExportFormat::OneTrainer {
                "emp_params"
            } else {
                "emb_params"
            };
            (key.to_string(), a1111_metadata(word))
        }
    };
    save_safetensors_atomic(&path, &[(key.as_str(), &v)], Some(meta))
        .map_err(|e| InteropError::write(&path, format!("{e:#}")))?;
    Ok(path)
}

/// What an export wrote, and what the user needs to know to load it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exported {
    pub files: Vec<PathBuf>,
    /// How to load the files, where the target tool needs more than the file
    /// (diffusers and SDXL): shown to the user next to the list of files.
    pub note: Option<String>,
}

/// Writes several words, refusing two with the same name (one would overwrite
/// the other) and any word the format cannot hold before writing anything.
pub fn export_words(
    words: &[ExportWord],
    format: ExportFormat,
    out: &Path,
) -> Result<Exported, InteropError> {
    for (i, w) in words.iter().enumerate() {
        if words[..i].iter().any(|o| o.name == w.name) {
            return Err(InteropError::Invalid(format!(
                "two inputs are both named `{}`; convert them separately or rename one with --name",
                w.name
            )));
        }
        check_word(w, format)?;
    }
    let files = words
        .iter()
        .map(|w| export_word(w, format, out))
        .collect::<Result<Vec<_>, _>>()?;
    let sdxl: Vec<(&str, &Path)> = words
        .iter()
        .zip(&files)
        .filter(|(w, _)| is_sdxl(w.widths))
        .map(|(w, f)| (w.name, f.as_path()))
        .collect();
    let note =
        (format == ExportFormat::Diffusers && !sdxl.is_empty()).then(|| diffusers_sdxl_note(&sdxl));
    Ok(Exported { files, note })
}

/// The Python lines that load SDXL words (`name`, file) into a diffusers
/// `StableDiffusionXLPipeline`: diffusers takes an SDXL embedding one text
/// encoder at a time, from the `clip_l` / `clip_g` tensors of the file.
pub fn diffusers_sdxl_note(words: &[(&str, &Path)]) -> String {
    let mut s = String::from(
        "diffusers loads an SDXL embedding one text encoder at a time \
         (pipe: a StableDiffusionXLPipeline):\n    from safetensors.torch import load_file\n",
    );
    for (name, path) in words {
        let file = format!("{:?}", path.display().to_string());
        s.push_str(&format!(
            "    state_dict = load_file({file})\n    \
             pipe.load_textual_inversion(state_dict[\"clip_g\"], token=\"<{name}>\", \
             text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)\n    \
             pipe.load_textual_inversion(state_dict[\"clip_l\"], token=\"<{name}>\", \
             text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)\n"
        ));
    }
    for (name, _) in words {
        if let Some(base) = name.strip_suffix("-neg") {
            if words.iter().any(|(n, _)| *n == base) {
                s.push_str(&format!(
                    "and write <{base}> in the prompt, <{name}> in negative_prompt\n"
                ));
            }
        }
    }
    s
}
