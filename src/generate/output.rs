//! Writing a generated image: the one place that turns a [`Generated`] into a
//! PNG with A1111's `parameters` chunk, for `generate`, the engine (workbench
//! and `watch`) and the trainer's previews.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::conditioning::words_in;
use super::pipeline::{a1111_parameters, GenerateRequest, Generated};
use super::png::{encode_png, write_numbered};
use crate::sd::StableDiffusion;
use crate::workspace::write_atomic;

/// Where an image goes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// `NNNNN-<seed>.png` in this folder, never overwriting an earlier image.
    Numbered(&'a Path),
    /// Exactly this file (replaced atomically).
    File(&'a Path),
}

/// The pseudo-words of a prompt and its negative prompt, sorted, each once
/// (what the PNG's `Pseudo-words` field lists).
pub fn sample_words(prompt: &str, negative: &str) -> Vec<String> {
    let mut words = words_in(prompt);
    words.extend(words_in(negative));
    words.sort();
    words.dedup();
    words
}

/// Writes one generated image with its A1111 `parameters` (and any `extra`
/// text chunks) and returns its path. `model_hash` is
/// [`StableDiffusion::model_hash`], computed once by the caller.
pub fn save_sample(
    sd: &StableDiffusion,
    model_hash: &str,
    req: &GenerateRequest,
    g: &Generated,
    dest: Destination<'_>,
    extra: &[(&str, &str)],
) -> Result<PathBuf> {
    let words = sample_words(&req.prompt, &g.negative);
    let params = a1111_parameters(req, g, &sd.name, model_hash, &words);
    let mut chunks: Vec<(&str, &str)> = vec![("parameters", &params)];
    chunks.extend_from_slice(extra);
    let bytes = encode_png(&g.image, &chunks)?;
    match dest {
        Destination::Numbered(dir) => write_numbered(dir, g.seed, &bytes),
        Destination::File(path) => {
            write_atomic(path, &bytes)
                .with_context(|| format!("{}: cannot write", path.display()))?;
            Ok(path.to_path_buf())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_sorted_and_listed_once() {
        assert_eq!(
            sample_words("a <b> and <a> and <b>", "<b-neg>, <a>"),
            vec!["<a>", "<b-neg>", "<b>"]
        );
    }
}
