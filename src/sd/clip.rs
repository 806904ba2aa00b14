//! CLIP text encoder with an embeddings-in entry point, so pseudo-word vectors
//! (trainable `Var`s) can be spliced into the token embeddings and gradients
//! flow back to them. SDXL reads the penultimate layer (no final norm) and, from
//! its second encoder, the projected pooled output; both come from one pass.

use candle_core::{DType, Device, Result, Tensor};

use super::config::ClipTextConfig;
use super::error::LoadError;
use super::lora::LinearSite;
use super::nn::{attention, merge_heads, quick_gelu, split_heads, LayerNorm, Linear};
use super::tokenizer::Piece;
use super::weights::Weights;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => quick_gelu(x),
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

#[derive(Debug, Clone)]
struct ClipAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl ClipAttention {
    fn load(w: &Weights, d: usize, heads: usize) -> std::result::Result<Self, LoadError> {
        Ok(Self {
            q: Linear::load(&w.pp("q_proj"), d, d, true)?,
            k: Linear::load(&w.pp("k_proj"), d, d, true)?,
            v: Linear::load(&w.pp("v_proj"), d, d, true)?,
            out: Linear::load(&w.pp("out_proj"), d, d, true)?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(x)?, self.heads)?;
        let k = split_heads(&self.k.forward(x)?, self.heads)?;
        let v = split_heads(&self.v.forward(x)?, self.heads)?;
        let o = attention(&q, &k, &v, self.scale, false, Some(mask))?;
        self.out.forward(&merge_heads(&o)?)
    }
}

#[derive(Debug, Clone)]
struct ClipLayer {
    ln1: LayerNorm,
    attn: ClipAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl ClipLayer {
    fn forward(&self, x: &Tensor, mask: &Tensor, act: Activation) -> Result<Tensor> {
        let h = (x + self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let m = self
            .fc2
            .forward(&act.apply(&self.fc1.forward(&self.ln2.forward(&h)?)?)?)?;
        h + m
    }
}

/// Which hidden state a model conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenLayer {
    /// `last_hidden_state`: every layer, then the final layer norm (SD 1.x/2.x;
    /// SD 2.x's diffusers encoder already stops one layer early).
    LastNormed,
    /// `hidden_states[-2]`: the output of the second-to-last layer, not normed (SDXL).
    Penultimate,
}

/// What one pass of the text encoder returns.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `[B, T, d]` at the requested [`HiddenLayer`].
    pub hidden: Tensor,
    /// `[B, proj]`: `text_projection(final_layer_norm(last)[eos])`, when asked for.
    pub pooled: Option<Tensor>,
}

/// The text tower of CLIP (`CLIPTextModel`, or `CLIPTextModelWithProjection`
/// when `text_projection.weight` is present).
#[derive(Debug, Clone)]
pub struct ClipTextEncoder {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<ClipLayer>,
    final_ln: LayerNorm,
    /// `[proj, d]`, no bias.
    text_projection: Option<Linear>,
    act: Activation,
    pub config: ClipTextConfig,
    /// Every linear layer, where LoRA adapters can attach.
    linear_sites: Vec<LinearSite>,
    dtype: DType,
    device: Device,
}

impl ClipTextEncoder {
    /// Loads from weights named as transformers' `CLIPTextModel` (`text_model.*`);
    /// `with_projection` also loads `text_projection.weight`
    /// (`CLIPTextModelWithProjection`), which SDXL's pooled output needs.
    pub fn load(
        w: &Weights,
        cfg: &ClipTextConfig,
        with_projection: bool,
    ) -> std::result::Result<Self, LoadError> {
        let act = match cfg.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(LoadError::UnsupportedLayout {
                    path: "text_encoder/config.json".into(),
                    message: format!("hidden_act `{other}` (supported: quick_gelu, gelu)"),
                })
            }
        };
        let d = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || d % cfg.num_attention_heads != 0 {
            return Err(LoadError::BadConfig {
                path: "text_encoder/config.json".into(),
                message: format!(
                    "hidden_size {d} is not divisible by num_attention_heads {}",
                    cfg.num_attention_heads
                ),
            });
        }
        let tm = w.pp("text_model");
        let emb = tm.pp("embeddings");
        let token_embedding = emb.get(&[cfg.vocab_size, d], "token_embedding.weight")?;
        let position_embedding = emb.get(
            &[cfg.max_position_embeddings, d],
            "position_embedding.weight",
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lw = tm.pp(format!("encoder.layers.{i}"));
            layers.push(ClipLayer {
                ln1: LayerNorm::load(&lw.pp("layer_norm1"), d, cfg.layer_norm_eps)?,
                attn: ClipAttention::load(&lw.pp("self_attn"), d, cfg.num_attention_heads)?,
                ln2: LayerNorm::load(&lw.pp("layer_norm2"), d, cfg.layer_norm_eps)?,
                fc1: Linear::load(&lw.pp("mlp.fc1"), d, cfg.intermediate_size, true)?,
                fc2: Linear::load(&lw.pp("mlp.fc2"), cfg.intermediate_size, d, true)?,
            });
        }
        let final_ln = LayerNorm::load(&tm.pp("final_layer_norm"), d, cfg.layer_norm_eps)?;
        let text_projection = if with_projection {
            let proj = match (cfg.projection_dim, w.shape_of("text_projection.weight")) {
                (Some(p), _) => p,
                (None, Some(shape)) => shape.first().copied().unwrap_or(d),
                (None, None) => d,
            };
            Some(Linear::load(&w.pp("text_projection"), d, proj, false)?)
        } else {
            None
        };
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_ln,
            text_projection,
            act,
            config: cfg.clone(),
            linear_sites: w.linear_sites(),
            dtype: w.dtype(),
            device: w.device().clone(),
        })
    }

    /// The encoder's linear layers (transformers paths and widths).
    pub fn linear_sites(&self) -> &[LinearSite] {
        &self.linear_sites
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Width of the pooled projection, when the encoder has one.
    pub fn projection_size(&self) -> Option<usize> {
        self.text_projection.as_ref().map(|_| {
            self.config
                .projection_dim
                .unwrap_or(self.config.hidden_size)
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The (frozen) embedding rows of vocabulary tokens, `[n, d]`.
    pub fn token_embeddings(&self, ids: &[u32]) -> Result<Tensor> {
        let idx = Tensor::new(ids, &self.device)?;
        self.token_embedding.index_select(&idx, 0)
    }

    /// Token embeddings of a batch of sequences, with `Slot(k)` positions taken
    /// from row k of `vectors` (`[n_slots, d]`, typically trainable).
    pub fn embed(&self, batch: &[Vec<Piece>], vectors: Option<&Tensor>) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(batch.len());
        for seq in batch {
            let ids: Vec<u32> = seq
                .iter()
                .map(|p| match p {
                    Piece::Token(t) => *t,
                    Piece::Slot(_) => 0,
                })
                .collect();
            let tokens = self.token_embeddings(&ids)?;
            let has_slots = seq.iter().any(|p| matches!(p, Piece::Slot(_)));
            let row = match (has_slots, vectors) {
                (false, _) => tokens,
                (true, None) => {
                    candle_core::bail!("prompt uses pseudo-words but no vectors were given")
                }
                (true, Some(v)) => {
                    let n = v.dim(0)?;
                    let mut idx = Vec::with_capacity(seq.len());
                    for (i, p) in seq.iter().enumerate() {
                        match p {
                            Piece::Slot(k) if *k >= n => candle_core::bail!(
                                "pseudo-word slot {k} is out of range: only {n} vectors were given"
                            ),
                            Piece::Slot(k) => idx.push(*k as u32),
                            Piece::Token(_) => idx.push((n + i) as u32),
                        }
                    }
                    let v = v.to_dtype(self.dtype)?;
                    let table = Tensor::cat(&[&v, &tokens], 0)?;
                    table.index_select(&Tensor::new(idx.as_slice(), &self.device)?, 0)?
                }
            };
            rows.push(row);
        }
        Tensor::stack(&rows, 0)
    }

    /// Runs the transformer on embeddings `[B, T, d]` (positions are added
    /// here) and returns `last_hidden_state`.
    pub fn forward_embeddings(&self, emb: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward_layers(emb, HiddenLayer::LastNormed, None)?
            .hidden)
    }

    /// Runs the transformer on embeddings `[B, T, d]`, returning the hidden
    /// state at `layer` and, with `pool_at` (one position per sequence, the
    /// first EOS), the projected pooled output. Layers that neither needs are
    /// not run.
    pub fn forward_layers(
        &self,
        emb: &Tensor,
        layer: HiddenLayer,
        pool_at: Option<&[usize]>,
    ) -> Result<ClipOutput> {
        let (b, t, _d) = emb.dims3()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence of {t} tokens is longer than the text encoder's {} positions",
                self.config.max_position_embeddings
            );
        }
        let projection = match (pool_at, &self.text_projection) {
            (None, _) => None,
            (Some(_), None) => {
                candle_core::bail!("pooled output asked of a text encoder without text_projection")
            }
            (Some(at), Some(p)) if at.len() == b => Some((at, p)),
            (Some(at), Some(_)) => {
                candle_core::bail!("{} pooling positions for a batch of {b}", at.len())
            }
        };
        let pos = self.position_embedding.narrow(0, 0, t)?;
        let mut x = emb.broadcast_add(&pos)?;
        let mask = causal_mask(t, self.dtype, &self.device)?;
        let n = self.layers.len();
        let run = match (layer, projection.is_some()) {
            (HiddenLayer::Penultimate, false) => n.saturating_sub(1),
            _ => n,
        };
        let mut penultimate = None;
        for (i, l) in self.layers.iter().take(run).enumerate() {
            x = l.forward(&x, &mask, self.act)?;
            if i + 2 == n {
                penultimate = Some(x.clone());
            }
        }
        let hidden = match layer {
            HiddenLayer::LastNormed => self.final_ln.forward(&x)?,
            // With a single layer, "penultimate" is the embeddings themselves.
            HiddenLayer::Penultimate => match penultimate {
                Some(p) => p,
                None if n <= 1 => emb.broadcast_add(&pos)?,
                None => x.clone(),
            },
        };
        let pooled = match projection {
            None => None,
            Some((at, proj)) => {
                let mut rows = Vec::with_capacity(b);
                for (i, &p) in at.iter().enumerate() {
                    if p >= t {
                        candle_core::bail!("pooling position {p} is past the {t} tokens");
                    }
                    rows.push(x.get(i)?.narrow(0, p, 1)?);
                }
                let last = Tensor::cat(&rows, 0)?;
                Some(proj.forward(&self.final_ln.forward(&last)?)?)
            }
        };
        Ok(ClipOutput { hidden, pooled })
    }

    /// Convenience: tokenized sequences (+ vectors) → `last_hidden_state`.
    pub fn encode(&self, batch: &[Vec<Piece>], vectors: Option<&Tensor>) -> Result<Tensor> {
        self.forward_embeddings(&self.embed(batch, vectors)?)
    }
}

fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_slice(&mask, (t, t), device)?.to_dtype(dtype)
}
