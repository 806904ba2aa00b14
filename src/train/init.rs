//! Initial pseudo-word vectors. Two modes:
//!
//! * `tokens` (the default, A1111's): the init text's token embeddings spread
//!   over the slots in order; the negative word gets a 1e-3 jitter so the two
//!   words are not identical.
//! * `mean`: every slot of both words is the mean embedding of the init text's
//!   tokens plus `N(0, init_noise²)`. With several words ("red green … cross")
//!   this starts the concept in the middle of a vocabulary instead of on one
//!   word, which is how the toy-world reference initialises TI and DreamArtist.
//!
//! Every draw comes from the run's seeded [`Rng`] in a fixed order (positive
//! matrix first, then negative), so the positive init of a seed is the same for
//! Textual Inversion and DreamArtist.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use super::TrainError;
use crate::rng::Rng;
use crate::sd::StableDiffusion;

/// How the vectors start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitMode {
    #[default]
    Tokens,
    Mean,
}

impl InitMode {
    pub const NAMES: [&'static str; 2] = ["tokens", "mean"];
}

impl FromStr for InitMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "tokens" => Ok(InitMode::Tokens),
            "mean" => Ok(InitMode::Mean),
            other => Err(format!(
                "unknown init mode `{other}` (known: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for InitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitMode::Tokens => "tokens",
            InitMode::Mean => "mean",
        })
    }
}

/// The init text's token embeddings per text encoder (`[k_i, d_i]`, f32).
fn text_embeddings(sd: &StableDiffusion, text: &str) -> Result<Vec<Tensor>, TrainError> {
    sd.text.token_embeddings(text)?.ok_or_else(|| {
        TrainError::Config(format!(
            "init text `{text}` has no tokens; use a word such as `*` or the concept's class"
        ))
    })
}

/// The token embeddings spread over `n` slots (token `i·k/n` for slot `i`).
fn spread(emb: &Tensor, n: usize) -> Result<Tensor, TrainError> {
    let k = emb.dim(0)?;
    let rows: Vec<u32> = (0..n).map(|i| ((i * k) / n) as u32).collect();
    Ok(emb.index_select(&Tensor::new(rows.as_slice(), emb.device())?, 0)?)
}

/// Each encoder's block computed on its own, side by side (a word's row holds
/// every encoder's columns; SDXL's tokenizers may split a text differently).
fn per_tower(
    emb: &[Tensor],
    mut f: impl FnMut(&Tensor) -> Result<Tensor, TrainError>,
) -> Result<Tensor, TrainError> {
    let blocks = emb.iter().map(&mut f).collect::<Result<Vec<_>, _>>()?;
    Ok(crate::sd::text::concat_towers(blocks)?)
}

/// The initial `(positive, negative)` matrices, drawing any noise from `rng`.
pub fn initial_vectors(
    sd: &StableDiffusion,
    (text, neg_text): (&str, Option<&str>),
    mode: InitMode,
    noise: f64,
    (n_pos, n_neg): (usize, usize),
    rng: &mut Rng,
) -> Result<(Tensor, Tensor), TrainError> {
    let emb = text_embeddings(sd, text)?;
    // The negative's own text, else the same (draws stay in the same order).
    let neg_emb = match neg_text {
        Some(t) => text_embeddings(sd, t)?,
        None => emb.clone(),
    };
    match mode {
        InitMode::Tokens => {
            let pos = per_tower(&emb, |e| spread(e, n_pos))?;
            let neg = per_tower(&neg_emb, |e| spread(e, n_neg))?;
            let jitter = (rng.randn(neg.dims(), neg.device())? * 1e-3)?;
            Ok((pos, (neg + jitter)?))
        }
        InitMode::Mean => {
            if !(noise.is_finite() && noise >= 0.0) {
                return Err(TrainError::Config(format!(
                    "init_noise must be a non-negative number, got {noise}"
                )));
            }
            let mean = per_tower(&emb, |e| Ok(e.mean_keepdim(0)?))?;
            let neg_mean = per_tower(&neg_emb, |e| Ok(e.mean_keepdim(0)?))?;
            let mut around = |mean: &Tensor, n: usize| -> Result<Tensor, TrainError> {
                let d = mean.dim(1)?;
                let eps = (rng.randn((n, d), mean.device())? * noise)?;
                Ok(mean.broadcast_add(&eps)?)
            };
            let pos = around(&mean, n_pos)?;
            let neg = around(&neg_mean, n_neg)?;
            Ok((pos, neg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_modes_parse_and_print() {
        for name in InitMode::NAMES {
            let m: InitMode = name.parse().unwrap();
            assert_eq!(m.to_string(), name);
        }
        assert!("median".parse::<InitMode>().is_err());
        assert_eq!(InitMode::default(), InitMode::Tokens);
    }

    #[test]
    fn spread_covers_every_token_in_order() {
        let emb = Tensor::arange(0f32, 4.0, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((4, 1))
            .unwrap();
        let s = spread(&emb, 2).unwrap().flatten_all().unwrap();
        assert_eq!(s.to_vec1::<f32>().unwrap(), vec![0.0, 2.0]);
        let s = spread(&emb, 6).unwrap().flatten_all().unwrap();
        assert_eq!(
            s.to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 1.0, 2.0, 2.0, 3.0]
        );
    }
}
