//! From prompt text to UNet context: pseudo-word lookup, A1111 emphasis,
//! 75-token chunking (long prompts), and DreamArtist's automatic negative words.
//! SDXL's two tokenizers chunk the prompt each on their own (they differ only
//! where `!` is their pad token); emphasis is applied to each encoder's output
//! and the pooled embedding comes from the first chunk, as A1111 and ComfyUI do.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use super::adapters::{AdapterBank, PromptAdapters, WordAdapters};
use super::prompt::{parse, Fragment};
use crate::sd::text::{concat_towers, describe_widths, TextTower};
use crate::sd::{ClipTokenizer, Piece, PseudoWord, StableDiffusion, TextEncoding, Tokens};

/// Why a prompt cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("unknown pseudo-word `{word}`; known: {known}")]
    UnknownWord { word: String, known: String },
    #[error("pseudo-word `{word}` has vectors of width {found} but the model's text encoders take {expected} ({origin}); an embedding works only with the model family it was trained for")]
    Width {
        word: String,
        found: usize,
        /// The model's widths, described (`768-wide vectors`, `clip_l 768 + clip_g 1280 …`).
        expected: String,
        origin: String,
    },
    #[error("pseudo-word `{word}` has NaN or infinite values ({origin}); retrain it (a lower learning rate) or re-import a good file")]
    NonFinite { word: String, origin: String },
    #[error("pseudo-word `{word}` has {vectors} vectors ({origin}); a word takes 1 to {MAX_WORD_VECTORS}, as its vectors must fit one 75-token chunk of the prompt")]
    VectorCount {
        word: String,
        vectors: usize,
        origin: String,
    },
    #[error("emphasis weight {weight} is out of range (at most {MAX_EMPHASIS}; too many nested brackets?)")]
    Emphasis { weight: f64 },
    #[error("the adapters of `{word}` cannot be used: {message}")]
    Adapter { word: String, message: String },
    #[error("the text encoder produced NaN or infinite values for `{prompt}`; the model's text encoder weights may be broken (or, in f16, overflow: try dtype f32)")]
    EncoderNonFinite { prompt: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The most vectors one pseudo-word may have: its slots must fit one chunk
/// (a chunk holds 75 tokens between BOS and EOS), as they are never split.
pub const MAX_WORD_VECTORS: usize = CHUNK;

/// The largest emphasis weight a prompt may reach (A1111 multiplies by 1.1 a
/// bracket: this is ~70 nested brackets).
pub const MAX_EMPHASIS: f64 = 1000.0;

/// Whether every value of a tensor is finite.
pub fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    Ok(t.to_dtype(DType::F32)?
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?
        .is_finite())
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
    /// DreamArtist++ concepts' adapters, by positive word.
    adapters: AdapterBank,
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

    /// Gives a concept's positive word its DreamArtist++ adapters.
    pub fn insert_adapters(&mut self, word: &str, adapters: WordAdapters) {
        self.adapters.insert(word, adapters);
    }

    /// The adapters a word brings, if any.
    pub fn adapters_of(&self, word: &str) -> Option<&WordAdapters> {
        self.adapters.get(word)
    }

    /// The adapters of the DreamArtist++ concepts `prompt` names, read for `sd`.
    pub fn adapters_for(
        &self,
        sd: &StableDiffusion,
        prompt: &str,
    ) -> Result<PromptAdapters, PromptError> {
        self.adapters.for_prompt(sd, prompt)
    }

    pub fn names(&self) -> Vec<String> {
        self.words.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Checks every word against the text encoders' widths (one row of a
    /// word holds every encoder's columns side by side).
    pub fn check_width(&self, widths: &[usize]) -> Result<(), PromptError> {
        let d: usize = widths.iter().sum();
        for (word, w) in &self.words {
            let found = w.vectors.dims().last().copied().unwrap_or(0);
            if found != d {
                return Err(PromptError::Width {
                    word: word.clone(),
                    found,
                    expected: describe_widths(widths),
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

/// A prompt ready to encode: each text encoder's chunks plus the stacked
/// vectors they reference.
pub struct PreparedPrompt {
    /// `towers[i][c]`: chunk `c` for text encoder `i`; every tower has the
    /// same number of chunks (a shorter one is padded with empty chunks).
    pub towers: Vec<Vec<Chunk>>,
    pub words: Vec<PseudoWord>,
    pub vectors: Option<Tensor>,
}

impl PreparedPrompt {
    /// The first text encoder's chunks (the only ones on SD 1.x/2.x).
    pub fn chunks(&self) -> &[Chunk] {
        self.towers.first().map(Vec::as_slice).unwrap_or(&[])
    }
}

const CHUNK: usize = 75;
const COMMA_BACKTRACK: usize = 20;

/// Tokenizes with emphasis and pseudo-words and splits into chunks as A1111 does
/// (a chunk that fills up breaks after its last comma if that is within 20
/// tokens; a pseudo-word's vectors never straddle two chunks), once per text
/// encoder.
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
                words.push(pseudo_word(&w, v)?);
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
    let mut towers: Vec<Vec<Chunk>> = sd
        .text
        .towers()
        .iter()
        .map(|t| chunk_prompt(&t.tokenizer, prompt, &words))
        .collect();
    let weights = towers.iter().flatten().flat_map(|c| c.weights.iter());
    if let Some(&weight) = weights
        .into_iter()
        .find(|w| !w.is_finite() || w.abs() > MAX_EMPHASIS)
    {
        return Err(PromptError::Emphasis { weight });
    }
    let most = towers.iter().map(Vec::len).max().unwrap_or(1);
    for (tower, chunks) in sd.text.towers().iter().zip(towers.iter_mut()) {
        while chunks.len() < most {
            chunks.push(empty_chunk(tower));
        }
    }
    let vectors = if mats.is_empty() {
        None
    } else {
        Some(Tensor::cat(&mats, 0)?.to_device(&sd.device)?)
    };
    Ok(PreparedPrompt {
        towers,
        words,
        vectors,
    })
}

/// A word of the bank as the tokenizer sees it, refused when its vectors
/// cannot be used: NaN or infinite values, or a count no chunk can hold (an
/// imported file can have any number; more than a chunk's 75 would be cut off
/// silently, and none would drop the word from the prompt).
fn pseudo_word(name: &str, v: &WordVectors) -> Result<PseudoWord, PromptError> {
    if !all_finite(&v.vectors)? {
        return Err(PromptError::NonFinite {
            word: name.to_string(),
            origin: v.origin.clone(),
        });
    }
    let vectors = v.vectors.dim(0)?;
    if !(1..=MAX_WORD_VECTORS).contains(&vectors) {
        return Err(PromptError::VectorCount {
            word: name.to_string(),
            vectors,
            origin: v.origin.clone(),
        });
    }
    Ok(PseudoWord {
        name: name.to_string(),
        vectors,
    })
}

fn empty_chunk(tower: &TextTower) -> Chunk {
    let pieces = tower.tokenizer.frame(&[]);
    Chunk {
        weights: vec![1.0; pieces.len()],
        pieces,
    }
}

/// One text encoder's chunks of a prompt, with its tokenizer: each chunk
/// framed (BOS, at most 75 pieces, EOS, padding) with one weight per position.
/// Every word has 1 to [`MAX_WORD_VECTORS`] vectors ([`prepare`] refuses
/// others); a longer one would lose its last slots to the framing.
pub fn chunk_prompt(tok: &ClipTokenizer, prompt: &str, words: &[PseudoWord]) -> Vec<Chunk> {
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
    let mut offsets = Vec::new();
    let mut acc = 0;
    for w in words {
        offsets.push(acc);
        acc += w.vectors;
    }
    for frag in parse(prompt) {
        let (text, weight) = match frag {
            Fragment::Break => {
                close(&mut cur, &mut chunks, &mut last_comma);
                continue;
            }
            Fragment::Text { text, weight } => (text, weight),
        };
        // Group slots of one word so they move together.
        let pieces = tok.pieces(&text, words);
        let mut groups: Vec<Vec<Piece>> = Vec::new();
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
    chunks
}

/// A1111's emphasis: hidden states `[1, T, d]` scaled per token, then
/// rescaled so their mean is what it was.
fn emphasize(z: Tensor, weights: &[f64]) -> Result<Tensor, PromptError> {
    if weights.iter().all(|w| *w == 1.0) {
        return Ok(z);
    }
    let dt = z.dtype();
    let z32 = z.to_dtype(DType::F32)?;
    let n = weights.len();
    let w: Vec<f32> = weights.iter().map(|w| *w as f32).collect();
    let w = Tensor::from_vec(w, (1, n, 1), z.device())?;
    let original = z32.mean_all()?;
    let weighted = z32.broadcast_mul(&w)?;
    let new = weighted.mean_all()?;
    Ok(weighted.broadcast_mul(&(original / new)?)?.to_dtype(dt)?)
}

/// Encodes a prepared prompt: each chunk through the text encoders, emphasis
/// applied per encoder with A1111's mean-preserving rescale, encoders side by
/// side, chunks concatenated; the pooled output (SDXL) of the first chunk.
pub fn encode(sd: &StableDiffusion, p: &PreparedPrompt) -> Result<TextEncoding, PromptError> {
    let chunks = p.chunks().len();
    let mut outs = Vec::with_capacity(chunks);
    let mut pooled = None;
    for c in 0..chunks {
        let tokens = Tokens(p.towers.iter().map(|t| t[c].pieces.clone()).collect());
        let (hidden, pool) = sd
            .text
            .encode_towers(std::slice::from_ref(&tokens), p.vectors.as_ref())?;
        let hidden = hidden
            .into_iter()
            .zip(&p.towers)
            .map(|(z, tower)| emphasize(z, &tower[c].weights))
            .collect::<Result<Vec<_>, _>>()?;
        outs.push(concat_towers(hidden)?);
        if c == 0 {
            pooled = pool;
        }
    }
    Ok(TextEncoding {
        hidden: Tensor::cat(&outs, 1)?,
        pooled,
    })
}

/// Pads the shorter of two encodings with empty-prompt chunks so both have the
/// same length (A1111 does the same for cond/uncond of different lengths).
pub fn pad_pair(
    sd: &StableDiffusion,
    a: TextEncoding,
    b: TextEncoding,
) -> Result<(TextEncoding, TextEncoding), PromptError> {
    let (la, lb) = (a.hidden.dim(1)?, b.hidden.dim(1)?);
    if la == lb {
        return Ok((a, b));
    }
    let empty = sd.text.encode(&[sd.tokenize("", &[])], None)?.hidden;
    let chunk = empty.dim(1)?;
    let pad = |t: TextEncoding, to: usize| -> candle_core::Result<TextEncoding> {
        let missing = (to - t.hidden.dim(1)?) / chunk;
        let mut parts = vec![t.hidden];
        for _ in 0..missing {
            parts.push(empty.clone());
        }
        Ok(TextEncoding {
            hidden: Tensor::cat(&parts, 1)?,
            pooled: t.pooled,
        })
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

    fn word(rows: usize) -> WordVectors {
        WordVectors {
            vectors: Tensor::zeros((rows, 4), DType::F32, &candle_core::Device::Cpu).unwrap(),
            origin: "big.safetensors".into(),
        }
    }

    /// Fuzzing (fuzz/src/prompt.rs, "the chunks hold the prompt's pieces"):
    /// a word of more vectors than a chunk holds lost its last slots to the
    /// framing, silently (an imported file can have any number of vectors).
    #[test]
    fn words_must_fit_a_chunk() {
        assert_eq!(
            pseudo_word("<w>", &word(MAX_WORD_VECTORS)).unwrap().vectors,
            75
        );
        for rows in [0, MAX_WORD_VECTORS + 1] {
            let err = pseudo_word("<w>", &word(rows)).unwrap_err();
            assert!(
                matches!(err, PromptError::VectorCount { vectors, .. } if vectors == rows),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("<w>") && msg.contains("big.safetensors"),
                "{msg}"
            );
        }
        // The largest word fits one chunk whole, after text or not.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny-sd1/model/tokenizer");
        let tok = ClipTokenizer::from_dir(&dir).unwrap();
        let words = [PseudoWord {
            name: "<w>".into(),
            vectors: MAX_WORD_VECTORS,
        }];
        let slots: Vec<Piece> = (0..MAX_WORD_VECTORS).map(Piece::Slot).collect();
        for (prompt, chunks) in [("<w>", 1), ("a cat, <w>", 2)] {
            let got = chunk_prompt(&tok, prompt, &words);
            assert_eq!(got.len(), chunks, "{prompt}");
            let last = &got[chunks - 1].pieces;
            assert_eq!(&last[1..=MAX_WORD_VECTORS], slots.as_slice(), "{prompt}");
        }
    }
}
