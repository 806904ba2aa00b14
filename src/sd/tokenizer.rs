//! The CLIP BPE tokenizer, built from `vocab.json` + `merges.txt` alone (SD
//! repositories ship no `tokenizer.json`), plus pseudo-word splicing.
//!
//! The pipeline reproduces Hugging Face's fast `CLIPTokenizer`: NFC, whitespace
//! collapse, lowercase; CLIP's regex split; byte-level alphabet; `</w>` word
//! suffix. Special tokens (BOS, EOS and the pad token) are matched in the raw
//! text as HF does, which is why SD 2's `!` pad token turns every literal `!`
//! into id 0: the reference does the same, and models were trained on it.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Replace, Sequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::error::LoadError;

/// CLIP's pre-tokenisation regex (from the reference tokenizer).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A pseudo-word known to the tokenizer: `name` (written literally in prompts,
/// e.g. `<cat-toy>`) stands for `vectors` consecutive embedding slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudoWord {
    pub name: String,
    pub vectors: usize,
}

/// One position of a tokenized prompt: a vocabulary token, or a slot of the
/// stacked pseudo-word matrix (rows of all words, in the order given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Token(u32),
    Slot(usize),
}

impl Piece {
    /// The golden files' convention: slot k is written as id `-(k+1)`.
    pub fn as_i64(&self) -> i64 {
        match *self {
            Piece::Token(t) => t as i64,
            Piece::Slot(k) => -(k as i64) - 1,
        }
    }
}

#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    /// Sequence length including BOS and EOS (77 for every SD model).
    pub max_len: usize,
}

fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Builds the tokenizer from a diffusers `tokenizer/` folder.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        for (f, what) in [
            (&vocab, "tokenizer/vocab.json"),
            (&merges, "tokenizer/merges.txt"),
        ] {
            if !f.exists() {
                return Err(LoadError::MissingFile {
                    path: f.clone(),
                    what: what.into(),
                });
            }
        }
        // Special tokens: special_tokens_map.json, then tokenizer_config.json, then CLIP defaults.
        let mut bos = "<|startoftext|>".to_string();
        let mut eos = "<|endoftext|>".to_string();
        let mut pad = "<|endoftext|>".to_string();
        let mut max_len = 77usize;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = dir.join(name);
            if !p.exists() {
                continue;
            }
            let v: serde_json::Value = super::config::read_json(&p)?;
            if let Some(s) = v.get("bos_token").and_then(token_string) {
                bos = s;
            }
            if let Some(s) = v.get("eos_token").and_then(token_string) {
                eos = s;
            }
            if let Some(s) = v.get("pad_token").and_then(token_string) {
                pad = s;
            }
            if let Some(n) = v.get("model_max_length").and_then(|n| n.as_u64()) {
                // Some configs carry a huge sentinel value; CLIP positions cap it.
                if n <= 77 {
                    max_len = n as usize;
                }
            }
        }
        Self::from_files(&vocab, &merges, &bos, &eos, &pad, max_len)
    }

    pub fn from_files(
        vocab: &Path,
        merges: &Path,
        bos: &str,
        eos: &str,
        pad: &str,
        max_len: usize,
    ) -> Result<Self, LoadError> {
        let bad = |path: &PathBuf, message: String| LoadError::BadTokenizer {
            path: path.clone(),
            message,
        };
        let vocab_s = vocab.to_string_lossy().to_string();
        let merges_s = merges.to_string_lossy().to_string();
        let bpe = BPE::from_file(&vocab_s, &merges_s)
            .unk_token(eos.to_string())
            .end_of_word_suffix("</w>".to_string())
            .build()
            .map_err(|e| {
                // The BPE builder reads both files; say which one is wrong.
                let message = e.to_string();
                if message.contains("Merges") {
                    bad(&merges.to_path_buf(), message)
                } else if message.contains("out of vocabulary") {
                    bad(
                        &merges.to_path_buf(),
                        format!("{message}: merges.txt does not match vocab.json (both must come from the same tokenizer)"),
                    )
                } else {
                    bad(&vocab.to_path_buf(), message)
                }
            })?;
        let mut tok = Tokenizer::new(bpe);
        let to_err = |e: tokenizers::Error| bad(&vocab.to_path_buf(), e.to_string());
        let normalizer = Sequence::new(vec![
            NormalizerWrapper::NFC(NFC),
            NormalizerWrapper::Replace(
                Replace::new(
                    tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                    " ",
                )
                .map_err(to_err)?,
            ),
            NormalizerWrapper::Lowercase(Lowercase),
        ]);
        tok.with_normalizer(Some(normalizer)).map_err(to_err)?;
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(to_err)?;
        tok.with_pre_tokenizer(Some(PreSequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])));
        let mut specials = vec![bos.to_string(), eos.to_string()];
        if !specials.contains(&pad.to_string()) {
            specials.push(pad.to_string());
        }
        tok.add_special_tokens(specials.iter().map(|s| AddedToken::from(s.clone(), true)))
            .map_err(to_err)?;
        let id = |s: &str| {
            tok.token_to_id(s).ok_or_else(|| {
                bad(
                    &vocab.to_path_buf(),
                    format!("special token `{s}` is not in the vocabulary"),
                )
            })
        };
        let (bos, eos, pad) = (id(bos)?, id(eos)?, id(pad)?);
        Ok(Self {
            inner: tok,
            bos,
            eos,
            pad,
            max_len,
        })
    }

    /// Token ids of plain text (no BOS/EOS, no truncation).
    pub fn encode_text(&self, text: &str) -> Vec<u32> {
        if text.trim().is_empty() {
            return Vec::new();
        }
        match self.inner.encode_fast(text, false) {
            Ok(enc) => enc.get_ids().to_vec(),
            // The pipeline has no failure mode on valid UTF-8; keep the prompt usable.
            Err(_) => Vec::new(),
        }
    }

    /// One past the largest id the tokenizer can produce (special tokens included).
    pub fn id_limit(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Splits a prompt into vocabulary tokens and pseudo-word slots, without
    /// BOS/EOS or truncation. Each occurrence of a word's name becomes its slots;
    /// the text around it is tokenized on its own.
    pub fn pieces(&self, prompt: &str, words: &[PseudoWord]) -> Vec<Piece> {
        let mut offsets = Vec::with_capacity(words.len());
        let mut acc = 0;
        for w in words {
            offsets.push(acc);
            acc += w.vectors;
        }
        let mut out = Vec::new();
        let mut rest = prompt;
        loop {
            // Earliest occurrence; on a tie the longest name wins.
            let mut best: Option<(usize, usize)> = None;
            for (i, w) in words.iter().enumerate() {
                if w.name.is_empty() {
                    continue;
                }
                if let Some(pos) = rest.find(&w.name) {
                    let better = match best {
                        None => true,
                        Some((bp, bi)) => {
                            pos < bp || (pos == bp && w.name.len() > words[bi].name.len())
                        }
                    };
                    if better {
                        best = Some((pos, i));
                    }
                }
            }
            match best {
                None => {
                    out.extend(self.encode_text(rest).into_iter().map(Piece::Token));
                    break;
                }
                Some((pos, i)) => {
                    out.extend(self.encode_text(&rest[..pos]).into_iter().map(Piece::Token));
                    out.extend((0..words[i].vectors).map(|k| Piece::Slot(offsets[i] + k)));
                    rest = &rest[pos + words[i].name.len()..];
                }
            }
        }
        out
    }

    /// BOS + pieces (truncated to `max_len - 2`) + EOS, padded to `max_len`.
    pub fn frame(&self, pieces: &[Piece]) -> Vec<Piece> {
        let body = self.max_len.saturating_sub(2);
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(Piece::Token(self.bos));
        ids.extend(pieces.iter().take(body).copied());
        ids.push(Piece::Token(self.eos));
        while ids.len() < self.max_len {
            ids.push(Piece::Token(self.pad));
        }
        ids
    }

    /// The full 77-position sequence for a prompt.
    pub fn tokenize(&self, prompt: &str, words: &[PseudoWord]) -> Vec<Piece> {
        self.frame(&self.pieces(prompt, words))
    }
}
