//! Encodes a prompt and a negative prompt with embedding files, the way
//! `generate` does, and writes the UNet's conditioning to a safetensors file
//! (`cond`, `uncond`, and on SDXL `cond_pooled`, `uncond_pooled`), so another
//! implementation can be compared with it
//! (`scripts/check-sdxl-pair-diffusers.py` does this with diffusers).
//!
//! ```text
//! cargo run --release --example encode_with_words -- MODEL_DIR OUT.safetensors "a photo of <cat>" "<cat-neg>" cat.safetensors cat-neg.safetensors
//! ```
//! Each file becomes the word `<file-stem>`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use dreamartist::concept::load_embedding;
use dreamartist::generate::conditioning::{encode, prepare};
use dreamartist::generate::WordBank;
use dreamartist::sd::{LoadOptions, StableDiffusion};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out, prompt, negative, files @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: encode_with_words MODEL_DIR OUT.safetensors PROMPT NEGATIVE [EMBEDDING...]"
        );
    };
    let sd = StableDiffusion::load_folder(Path::new(model), &LoadOptions::default())?;
    let mut bank = WordBank::new();
    for f in files {
        let path = Path::new(f);
        let (vectors, _) = load_embedding(path)?;
        let stem = path
            .file_stem()
            .context("an embedding file needs a name")?
            .to_string_lossy();
        bank.insert(&stem, vectors, f.as_str());
    }
    let mut tensors = HashMap::new();
    for (key, text) in [("cond", prompt), ("uncond", negative)] {
        let enc = encode(&sd, &prepare(&sd, text, &bank)?)?;
        tensors.insert(key.to_string(), enc.hidden);
        if let Some(p) = enc.pooled {
            tensors.insert(format!("{key}_pooled"), p);
        }
    }
    candle_core::safetensors::save(&tensors, out)?;
    println!("{out}: {} tensors", tensors.len());
    Ok(())
}
