//! From prompt text to UNet context: pseudo-word lookup, A1111 emphasis,
//! 75-token chunking (long prompts), and DreamArtist's automatic negative words.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use super::prompt::{parse, Fragment};
use crate::sd::{Piece, PseudoWord, StableDiffusion};

/// Why a prompt cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("unknown pseudo-word `{word}`; known: {known}")]
    UnknownWord { word: String, known: String },
    #[error("pseudo-word `{word}` has vectors of width {found} but the model's text encoder is {expected} wide ({origin})")]
    Width {
        word: String,
        found: usize,
        expected: usize,
        origin: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// One pseudo-word's vectors and where they came from.
#[derive(Debug, Clone)]
pub struct WordVectors {
    /// `[n, d]` f32.
    pub vectors: Tensor,
    /// File or description, for messages.
    pub origin: String,
}

/// The pseudo-words a prompt may use, by their written form (`<cat>`, `<cat-neg>`).
#[derive(Debug, Clone, Default)]
pub struct WordBank {
    words: BTreeMap<String, WordVectors>,
}

impl WordBank {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `<name>` (brackets added if missing).
    pub fn insert(&mut self, name: &str, vectors: Tensor, origin: impl Into<String>) {
        let key = if name.starts_with('<') {
            name.to_string()
        } else {
            format!("<{name}>")
        };
        self.words.insert(
            key,
            WordVectors {
                vectors,
                origin: origin.into(),
            },
        );
    }

    pub fn get(&self, word: &str) -> Option<&WordVectors> {
        self.words.get(word)
    }

    pub fn names(&self) -> Vec<String> {
        self.words.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Checks every word against the text encoder's width.
    pub fn check_width(&self, d: usize) -> Result<(), PromptError> {
        for (word, w) in &self.words {
            let found = w.vectors.dims().last().copied().unwrap_or(0);
            if found != d {
                return Err(PromptError::Width {
                    word: word.clone(),
                    found,
                    expected: d,
                    origin: w.origin.clone(),
                });
            }
        }
        Ok(())
    }

    fn known(&self) -> String {
        if self.words.is_empty() {
            "none (train a concept or import an embedding)".into()
        } else {
            self.names().join(", ")
        }
    }
}

/// `<word>`-shaped spans of a prompt (letters, digits, `_`, `-`, `.`).
pub fn words_in(prompt: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = prompt.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            if let Some(len) = prompt[i + 1..].find('>') {
                let inner = &prompt[i + 1..i + 1 + len];
                if !inner.is_empty()
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    out.push(format!("<{inner}>"));
                    i += len + 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// DreamArtist's pairing: each `<name>` of the prompt whose `<name-neg>` is known
/// and not already in the negative prompt brings it into the negative prompt.
pub fn auto_negative(prompt: &str, negative: &str, bank: &WordBank) -> String {
    let present = words_in(negative);
    let mut added: Vec<String> = Vec::new();
    for w in words_in(prompt) {
        let Some(stem) = w.strip_prefix('<').and_then(|s| s.strip_suffix('>')) else {
            continue;
        };
        if stem.ends_with("-neg") {
            continue;
        }
        let neg = format!("<{stem}-neg>");
        if bank.get(&neg).is_some() && !present.contains(&neg) && !added.contains(&neg) {
            added.push(neg);
        }
    }
    if added.is_empty() {
        negative.to_string()
    } else if negative.trim().is_empty() {
        added.join(", ")
    } else {
        format!("{}, {}", added.join(", "), negative)
    }
}

/// One 77-position chunk: pieces and their emphasis weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub pieces: Vec<Piece>,
    pub weights: Vec<f64>,
}

/// A prompt ready to encode: chunks plus the stacked vectors they reference.
pub struct PreparedPrompt {
    pub chunks: Vec<Chunk>,
    pub words: Vec<PseudoWord>,
    pub vectors: Option<Tensor>,
}

const CHUNK: usize = 75;
const COMMA_BACKTRACK: usize = 20;

/// Tokenizes with emphasis and pseudo-words and splits into chunks as A1111 does
/// (a chunk that fills up breaks after its last comma if that is within 20
/// tokens; a pseudo-word's vectors never straddle two chunks).
pub fn prepare(
    sd: &StableDiffusion,
    prompt: &str,
    bank: &WordBank,
) -> Result<PreparedPrompt, PromptError> {
    // The pseudo-words this prompt uses, in order of first use.
    let mut words: Vec<PseudoWord> = Vec::new();
    let mut mats: Vec<Tensor> = Vec::new();
    for w in words_in(prompt) {
        if words.iter().any(|p| p.name == w) {
            continue;
        }
        match bank.get(&w) {
            Some(v) => {
                words.push(PseudoWord {
                    name: w.clone(),
                    vectors: v.vectors.dim(0)?,
                });
                mats.push(v.vectors.to_dtype(DType::F32)?);
            }
            None => {
                return Err(PromptError::UnknownWord {
                    word: w,
                    known: bank.known(),
                })
            }
        }
    }
    let tok = &sd.tokenizer;
    let comma = tok.token_to_id(",</w>");
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut cur = Chunk {
        pieces: Vec::new(),
        weights: Vec::new(),
    };
    let mut last_comma: Option<usize> = None;
    let close = |cur: &mut Chunk, chunks: &mut Vec<Chunk>, last_comma: &mut Option<usize>| {
        let framed = tok.frame(&cur.pieces);
        let mut weights = vec![1.0];
        weights.extend(cur.weights.iter().copied());
        weights.resize(framed.len(), 1.0);
        chunks.push(Chunk {
            pieces: framed,
            weights,
        });
        *cur = Chunk {
            pieces: Vec::new(),
            weights: Vec::new(),
        };
        *last_comma = None;
    };
    for frag in parse(prompt) {
        let (text, weight) = match frag {
            Fragment::Break => {
                close(&mut cur, &mut chunks, &mut last_comma);
                continue;
            }
            Fragment::Text { text, weight } => (text, weight),
        };
        // Group slots of one word so they move together.
        let pieces = tok.pieces(&text, &words);
        let mut groups: Vec<Vec<Piece>> = Vec::new();
        let mut offsets = Vec::new();
        let mut acc = 0;
        for w in &words {
            offsets.push(acc);
            acc += w.vectors;
        }
        let mut k = 0;
        while k < pieces.len() {
            match pieces[k] {
                Piece::Slot(s) => {
                    let wi = offsets.iter().rposition(|o| *o <= s).unwrap_or(0);
                    let n = words[wi].vectors;
                    groups.push(pieces[k..(k + n).min(pieces.len())].to_vec());
                    k += n;
                }
                t => {
                    groups.push(vec![t]);
                    k += 1;
                }
            }
        }
        for g in groups {
            if g.len() == 1 {
                if let Piece::Token(t) = g[0] {
                    if Some(t) == comma {
                        last_comma = Some(cur.pieces.len());
                    } else if cur.pieces.len() == CHUNK {
                        if let Some(lc) = last_comma.filter(|lc| CHUNK - lc <= COMMA_BACKTRACK) {
                            let split = lc + 1;
                            let moved_p = cur.pieces.split_off(split);
                            let moved_w = cur.weights.split_off(split);
                            close(&mut cur, &mut chunks, &mut last_comma);
                            cur.pieces = moved_p;
                            cur.weights = moved_w;
                        }
                    }
                }
            }
            if cur.pieces.len() == CHUNK || cur.pieces.len() + g.len() > CHUNK {
                close(&mut cur, &mut chunks, &mut last_comma);
            }
            cur.weights.extend(std::iter::repeat_n(weight, g.len()));
            cur.pieces.extend(g);
        }
    }
    if !cur.pieces.is_empty() || chunks.is_empty() {
        close(&mut cur, &mut chunks, &mut last_comma);
    }
    let vectors = if mats.is_empty() {
        None
    } else {
        Some(Tensor::cat(&mats, 0)?.to_device(&sd.device)?)
    };
    Ok(PreparedPrompt {
        chunks,
        words,
        vectors,
    })
}

/// Encodes a prepared prompt: each chunk through the text encoder, emphasis
/// applied with A1111's mean-preserving rescale, chunks concatenated.
pub fn encode(sd: &StableDiffusion, p: &PreparedPrompt) -> Result<Tensor, PromptError> {
    let mut outs = Vec::with_capacity(p.chunks.len());
    for c in &p.chunks {
        let z = sd
            .text_encoder
            .encode(std::slice::from_ref(&c.pieces), p.vectors.as_ref())?;
        let z = if c.weights.iter().all(|w| *w == 1.0) {
            z
        } else {
            let dt = z.dtype();
            let z32 = z.to_dtype(DType::F32)?;
            let n = c.weights.len();
            let w: Vec<f32> = c.weights.iter().map(|w| *w as f32).collect();
            let w = Tensor::from_vec(w, (1, n, 1), z.device())?;
            let original = z32.mean_all()?;
            let weighted = z32.broadcast_mul(&w)?;
            let new = weighted.mean_all()?;
            weighted.broadcast_mul(&(original / new)?)?.to_dtype(dt)?
        };
        outs.push(z);
    }
    Ok(Tensor::cat(&outs, 1)?)
}

/// Pads the shorter of two encodings with empty-prompt chunks so both have the
/// same length (A1111 does the same for cond/uncond of different lengths).
pub fn pad_pair(
    sd: &StableDiffusion,
    a: Tensor,
    b: Tensor,
) -> Result<(Tensor, Tensor), PromptError> {
    let (la, lb) = (a.dim(1)?, b.dim(1)?);
    if la == lb {
        return Ok((a, b));
    }
    let empty = sd
        .text_encoder
        .encode(&[sd.tokenizer.tokenize("", &[])], None)?;
    let chunk = empty.dim(1)?;
    let pad = |t: Tensor, to: usize| -> candle_core::Result<Tensor> {
        let missing = (to - t.dim(1)?) / chunk;
        let mut parts = vec![t];
        for _ in 0..missing {
            parts.push(empty.clone());
        }
        Tensor::cat(&parts, 1)
    };
    if la < lb {
        Ok((pad(a, lb)?, b))
    } else {
        Ok((a, pad(b, la)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pseudo_words() {
        assert_eq!(
            words_in("a <cat> and <dog-neg>, <lora:x:1> <>"),
            vec!["<cat>", "<dog-neg>"]
        );
    }

    #[test]
    fn auto_negative_adds_known_pairs_once() {
        let mut bank = WordBank::new();
        let v = Tensor::zeros((1, 4), DType::F32, &candle_core::Device::Cpu).unwrap();
        bank.insert("cat", v.clone(), "t");
        bank.insert("cat-neg", v.clone(), "t");
        bank.insert("dog", v, "t");
        assert_eq!(
            auto_negative("a <cat> and a <dog>", "blurry", &bank),
            "<cat-neg>, blurry"
        );
        assert_eq!(auto_negative("a <cat>", "", &bank), "<cat-neg>");
        assert_eq!(
            auto_negative("a <cat>", "<cat-neg>, x", &bank),
            "<cat-neg>, x"
        );
        assert_eq!(auto_negative("a dog", "x", &bank), "x");
    }
}
