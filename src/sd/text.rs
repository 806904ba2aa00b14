//! The text side of a model: one CLIP tokenizer + encoder per text tower (one
//! for SD 1.x/2.x, two for SDXL), and how their outputs become the UNet's
//! conditioning.
//!
//! A pseudo-word is one row of `width()` numbers per vector: the columns of
//! each tower side by side (SDXL: CLIP-L's 768 then OpenCLIP-G's 1280). Keeping
//! a word as one matrix lets the trainer, the optimiser, EMA, checkpoints and
//! the word bank treat every family alike; only encoding (here), gradient
//! clipping (per tower block) and the file formats (`clip_l` + `clip_g`) look
//! at the split.

use candle_core::{DType, Result, Tensor};

use super::clip::{ClipTextEncoder, HiddenLayer};
use super::tokenizer::{ClipTokenizer, Piece, PseudoWord};

/// One tokenizer + text encoder pair.
#[derive(Clone)]
pub struct TextTower {
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextEncoder,
    /// The hidden state the UNet sees.
    pub layer: HiddenLayer,
    /// Whether this tower's projected pooled output conditions the UNet (SDXL's second).
    pub pooled: bool,
}

impl TextTower {
    pub fn width(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// Position of the first EOS: where CLIP pools (transformers takes the
    /// first `eos_token_id`, so pseudo-word slots never confuse it).
    fn eos_position(&self, seq: &[Piece]) -> usize {
        seq.iter()
            .position(|p| *p == Piece::Token(self.tokenizer.eos))
            .unwrap_or(seq.len().saturating_sub(1))
    }
}

/// A prompt tokenized for every tower of a model, in tower order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens(pub Vec<Vec<Piece>>);

impl Tokens {
    /// The first tower's sequence (the only one on SD 1.x/2.x).
    pub fn first(&self) -> &[Piece] {
        self.0.first().map(Vec::as_slice).unwrap_or(&[])
    }
}

/// What the text side gives the UNet for a batch of prompts.
#[derive(Debug, Clone)]
pub struct TextEncoding {
    /// `[B, T, width]`: the towers' hidden states side by side.
    pub hidden: Tensor,
    /// `[B, proj]` (SDXL): the pooled projection of the second encoder.
    pub pooled: Option<Tensor>,
}

/// Every text tower of a model.
#[derive(Clone)]
pub struct TextStack {
    towers: Vec<TextTower>,
}

impl TextStack {
    /// SD 1.x / 2.x: one encoder, `last_hidden_state`.
    pub fn single(tokenizer: ClipTokenizer, encoder: ClipTextEncoder) -> Self {
        Self {
            towers: vec![TextTower {
                tokenizer,
                encoder,
                layer: HiddenLayer::LastNormed,
                pooled: false,
            }],
        }
    }

    /// SDXL: both encoders' penultimate layers; the second one's pooled projection.
    pub fn sdxl(
        tokenizer: ClipTokenizer,
        encoder: ClipTextEncoder,
        tokenizer_2: ClipTokenizer,
        encoder_2: ClipTextEncoder,
    ) -> Self {
        Self {
            towers: vec![
                TextTower {
                    tokenizer,
                    encoder,
                    layer: HiddenLayer::Penultimate,
                    pooled: false,
                },
                TextTower {
                    tokenizer: tokenizer_2,
                    encoder: encoder_2,
                    layer: HiddenLayer::Penultimate,
                    pooled: true,
                },
            ],
        }
    }

    pub fn towers(&self) -> &[TextTower] {
        &self.towers
    }

    /// The first tower (the only one on SD 1.x/2.x).
    pub fn first(&self) -> &TextTower {
        &self.towers[0]
    }

    /// Each tower's width, in order (`[768]`, `[1024]`, `[768, 1280]`).
    pub fn widths(&self) -> Vec<usize> {
        self.towers.iter().map(TextTower::width).collect()
    }

    /// A pseudo-word vector's width: the towers' widths summed.
    pub fn width(&self) -> usize {
        self.widths().iter().sum()
    }

    /// Width of the pooled projection the UNet takes, if any.
    pub fn pooled_width(&self) -> Option<usize> {
        self.towers
            .iter()
            .find(|t| t.pooled)
            .and_then(|t| t.encoder.projection_size())
    }

    pub fn dtype(&self) -> DType {
        self.towers[0].encoder.dtype()
    }

    /// The full sequences of a prompt, one per tower.
    pub fn tokenize(&self, prompt: &str, words: &[PseudoWord]) -> Tokens {
        Tokens(
            self.towers
                .iter()
                .map(|t| t.tokenizer.tokenize(prompt, words))
                .collect(),
        )
    }

    /// Tower `i`'s columns of a word matrix `[n, width]` (the matrix itself
    /// when there is one tower, so SD 1.x/2.x graphs are unchanged).
    pub fn tower_columns(&self, vectors: &Tensor, i: usize) -> Result<Tensor> {
        let widths = self.widths();
        let total: usize = widths.iter().sum();
        let found = vectors.dims().last().copied().unwrap_or(0);
        if found != total {
            candle_core::bail!(
                "pseudo-word vectors are {found} wide; this model's text encoders take {}",
                describe_widths(&widths)
            );
        }
        if widths.len() == 1 {
            return Ok(vectors.clone());
        }
        let offset: usize = widths[..i].iter().sum();
        vectors.narrow(vectors.rank() - 1, offset, widths[i])
    }

    /// Splits a word matrix into its towers' blocks.
    pub fn split_columns(&self, vectors: &Tensor) -> Result<Vec<Tensor>> {
        (0..self.towers.len())
            .map(|i| self.tower_columns(vectors, i))
            .collect()
    }

    /// Encodes a batch, keeping each tower's hidden state apart (emphasis is
    /// applied per tower, as A1111 does) and the pooled output, if any.
    pub fn encode_towers(
        &self,
        batch: &[Tokens],
        vectors: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let mut hidden = Vec::with_capacity(self.towers.len());
        let mut pooled = None;
        for (i, tower) in self.towers.iter().enumerate() {
            let seqs: Vec<Vec<Piece>> = batch
                .iter()
                .map(|t| {
                    t.0.get(i).cloned().ok_or_else(|| {
                        candle_core::Error::Msg(format!(
                            "prompt tokenized for {} text encoder(s), the model has {}",
                            t.0.len(),
                            self.towers.len()
                        ))
                    })
                })
                .collect::<Result<_>>()?;
            let cols = match vectors {
                Some(v) => Some(self.tower_columns(v, i)?),
                None => None,
            };
            let emb = tower.encoder.embed(&seqs, cols.as_ref())?;
            let pool_at: Option<Vec<usize>> = tower
                .pooled
                .then(|| seqs.iter().map(|s| tower.eos_position(s)).collect());
            let out = tower
                .encoder
                .forward_layers(&emb, tower.layer, pool_at.as_deref())?;
            hidden.push(out.hidden);
            if out.pooled.is_some() {
                pooled = out.pooled;
            }
        }
        Ok((hidden, pooled))
    }

    /// Encodes a batch of tokenized prompts (with the pseudo-word matrix the
    /// slots index) into the UNet's conditioning.
    pub fn encode(&self, batch: &[Tokens], vectors: Option<&Tensor>) -> Result<TextEncoding> {
        let (hidden, pooled) = self.encode_towers(batch, vectors)?;
        Ok(TextEncoding {
            hidden: concat_towers(hidden)?,
            pooled,
        })
    }

    /// The frozen token embeddings of plain text, per tower (`[k_i, d_i]`,
    /// f32); `None` when the text has no tokens.
    pub fn token_embeddings(&self, text: &str) -> Result<Option<Vec<Tensor>>> {
        let mut out = Vec::with_capacity(self.towers.len());
        for t in &self.towers {
            let ids = t.tokenizer.encode_text(text);
            if ids.is_empty() {
                return Ok(None);
            }
            out.push(t.encoder.token_embeddings(&ids)?.to_dtype(DType::F32)?);
        }
        Ok(Some(out))
    }
}

/// Hidden states of the towers side by side on the feature axis.
pub fn concat_towers(hidden: Vec<Tensor>) -> Result<Tensor> {
    match hidden.as_slice() {
        [] => candle_core::bail!("a model without text encoders"),
        [one] => Ok(one.clone()),
        many => {
            let last = many[0].rank().saturating_sub(1);
            Tensor::cat(many, last)
        }
    }
}

/// `768` or `clip_l 768 + clip_g 1280`, for messages.
pub fn describe_widths(widths: &[usize]) -> String {
    match widths {
        [d] => format!("{d}-wide vectors"),
        [l, g] => format!("clip_l {l} + clip_g {g} (= {}) wide vectors", l + g),
        many => format!("{many:?}-wide vectors"),
    }
}
