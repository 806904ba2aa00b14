//! DreamArtist++ concepts at generation: `<name>` in a prompt brings the
//! concept's words *and* its two LoRA adapters. The positive adapter acts on
//! the conditional half of every UNet call (and, when it has text-encoder
//! layers, on the prompt's encoding) at `lora_pos`; the negative one on the
//! unconditional half (and the negative prompt's encoding) at `lora_neg`,
//! which is how HCP-Diffusion samples DreamArtist++ (0.8 / 0.65 there).
//! Several such concepts in one prompt add their adapters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::conditioning::{encode, prepare, words_in, PromptError, WordBank};
use crate::sd::lora::{self, Applied, LoraNetwork, Rows, Scope};
use crate::sd::lora_file::load_kohya;
use crate::sd::{StableDiffusion, TextEncoding};

/// Where an adapter comes from: a kohya file (read for the model in use
/// when a prompt needs it) or a network in memory (training previews).
#[derive(Debug, Clone)]
pub enum AdapterSource {
    File(PathBuf),
    Network(Arc<LoraNetwork>),
}

/// A concept's adapters (either may be absent: an imported positive only).
#[derive(Debug, Clone, Default)]
pub struct WordAdapters {
    pub positive: Option<AdapterSource>,
    pub negative: Option<AdapterSource>,
}

/// The adapters of the concepts a prompt names, by word.
#[derive(Debug, Clone, Default)]
pub struct AdapterBank {
    words: BTreeMap<String, WordAdapters>,
}

/// Which rows and which adapters a model call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterRows {
    /// The prompt's encoding: the positive adapters on every row.
    Positive,
    /// The negative prompt's encoding: the negative adapters on every row.
    Negative,
    /// A UNet call on `[uncond; cond]`: negative on the first half, positive
    /// on the second.
    CfgHalves,
}

/// The adapters in force for one prompt.
#[derive(Debug, Clone, Default)]
pub struct PromptAdapters {
    positive: Vec<Arc<LoraNetwork>>,
    negative: Vec<Arc<LoraNetwork>>,
    /// The words that brought them (for messages and image metadata).
    pub words: Vec<String>,
}

impl PromptAdapters {
    pub fn is_empty(&self) -> bool {
        self.positive.is_empty() && self.negative.is_empty()
    }

    /// The scope for a call of kind `rows` (`None` without adapters).
    pub fn scope(&self, pos: f64, neg: f64, rows: AdapterRows) -> Option<Arc<Scope>> {
        fn applied(nets: &[Arc<LoraNetwork>], strength: f64, rows: Rows) -> Vec<Applied> {
            nets.iter()
                .map(|n| Applied {
                    network: n.clone(),
                    strength,
                    rows,
                })
                .collect()
        }
        let list: Vec<Applied> = match rows {
            AdapterRows::Positive => applied(&self.positive, pos, Rows::All),
            AdapterRows::Negative => applied(&self.negative, neg, Rows::All),
            AdapterRows::CfgHalves => {
                let mut l = applied(&self.negative, neg, Rows::FirstHalf);
                l.extend(applied(&self.positive, pos, Rows::SecondHalf));
                l
            }
        };
        (!list.is_empty()).then(|| Arc::new(Scope::new(list)))
    }

    /// Encodes `prompt` under the positive adapters (at `pos`) and `negative`
    /// under the negative ones (at `neg`): the two halves of a guided run.
    pub fn encode_pair(
        &self,
        sd: &StableDiffusion,
        bank: &WordBank,
        (prompt, negative): (&str, &str),
        (pos, neg): (f64, f64),
    ) -> Result<(TextEncoding, TextEncoding), PromptError> {
        let under = |text: &str, rows: AdapterRows| {
            let _scope = lora::enter(self.scope(pos, neg, rows));
            encode(sd, &prepare(sd, text, bank)?)
        };
        let cond = under(prompt, AdapterRows::Positive)?;
        let uncond = under(negative, AdapterRows::Negative)?;
        Ok((cond, uncond))
    }
}

impl AdapterBank {
    /// Gives `word` (`<name>`, brackets added if missing) its adapters.
    pub fn insert(&mut self, word: &str, adapters: WordAdapters) {
        let key = if word.starts_with('<') {
            word.to_string()
        } else {
            format!("<{word}>")
        };
        self.words.insert(key, adapters);
    }

    pub fn get(&self, word: &str) -> Option<&WordAdapters> {
        self.words.get(word)
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The adapters of the words in `prompt`, read for `sd` (a file made for
    /// another model family is refused, naming it).
    pub fn for_prompt(
        &self,
        sd: &StableDiffusion,
        prompt: &str,
    ) -> Result<PromptAdapters, PromptError> {
        let mut out = PromptAdapters::default();
        if self.words.is_empty() {
            return Ok(out);
        }
        let mut seen = std::collections::BTreeSet::new();
        for word in words_in(prompt) {
            let Some(a) = self.words.get(&word) else {
                continue;
            };
            if !seen.insert(word.clone()) {
                continue;
            }
            let load = |src: &AdapterSource| -> Result<Arc<LoraNetwork>, PromptError> {
                match src {
                    AdapterSource::Network(n) => Ok(n.clone()),
                    AdapterSource::File(p) => {
                        let loaded = load_kohya(p, &sd.linear_sites(), sd.family, &sd.device)
                            .map_err(|e| PromptError::Adapter {
                                word: word.clone(),
                                message: e.to_string(),
                            })?;
                        Ok(Arc::new(loaded.network))
                    }
                }
            };
            if let Some(p) = &a.positive {
                out.positive.push(load(p)?);
            }
            if let Some(n) = &a.negative {
                out.negative.push(load(n)?);
            }
            out.words.push(word);
        }
        Ok(out)
    }
}
