//! Tokenize a prompt with a pseudo-word and run the text encoder on it.
//!
//! ```text
//! cargo run --example encode_prompt -- tests/fixtures/tiny-sd1/model "a photo of <cat-toy> on a beach"
//! ```
//! The `<cat-toy>` pseudo-word gets 3 random vectors here; the trainer learns them.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use dreamartist::sd::{model, LoadOptions, Piece, PseudoWord};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .context("usage: encode_prompt <MODEL_DIR> <PROMPT>")?;
    let prompt = args.next().unwrap_or_else(|| "a photo of <cat-toy>".into());
    let root = std::path::Path::new(&model_dir);
    let tokenizer = model::load_tokenizer(root)?;
    let encoder = model::load_text_encoder(root, &LoadOptions::default())?;

    let words = [PseudoWord {
        name: "<cat-toy>".into(),
        vectors: 3,
    }];
    let pieces = tokenizer.tokenize(&prompt, &words);
    // Everything up to and including EOS; the rest is padding.
    let eos_at = pieces
        .iter()
        .position(|p| *p == Piece::Token(tokenizer.eos))
        .unwrap_or(pieces.len() - 1);
    let shown: Vec<String> = pieces[..=eos_at]
        .iter()
        .map(|p| match p {
            Piece::Token(t) => tokenizer.id_to_token(*t).unwrap_or_default(),
            Piece::Slot(k) => format!("<slot {k}>"),
        })
        .collect();
    println!("tokens: {}", shown.join(" "));

    let d = encoder.hidden_size();
    let vectors = (Tensor::randn(0f32, 1.0, (3, d), &Device::Cpu)? * 0.02)?;
    let hidden = encoder.encode(&[pieces], Some(&vectors))?;
    println!("last_hidden_state: {:?}", hidden.dims());
    Ok(())
}
