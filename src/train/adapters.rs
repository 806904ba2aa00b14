//! DreamArtist++'s adapters in training: a positive and a negative LoRA
//! network on the same layers, trained with the pseudo-word pair through the
//! same guided loss. In the one UNet call on `[z_t, z_t]` (and the one text
//! encoder call on `[negative prompts; positive prompts]`) the negative
//! network acts on the first half and the positive on the second
//! ([`Scope`]), as HCP-Diffusion's DreamArtist++ does.
//!
//! Each adapter tensor is a [`Var`] with its own AdamW state (and EMA when the
//! run keeps one); the negative network learns at `lora_lr × neg_lr_weight`.
//! Gradients are clipped per network (the norm over all its tensors) at
//! `clip_grad_norm`, as the words are per matrix. Everything here is in the
//! checkpoint under `lora.<branch>.<kohya name>.{down,up}` with `adam_m.`,
//! `adam_v.` and `ema.` prefixes, so a resumed run continues bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use super::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;
use crate::sd::lora::{
    Applied, LayerKey, LinearSite, LoraLayer, LoraNetwork, Rows, Scope, Targets,
};
use crate::sd::lora_file::kohya_name;
use crate::sd::{Family, StableDiffusion};

/// Named entries of a checkpoint (tensors or metadata values).
pub type Named<T> = Vec<(String, T)>;

/// The two networks, in the order of a CFG batch's halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    Negative,
    Positive,
}

impl Branch {
    pub const BOTH: [Branch; 2] = [Branch::Negative, Branch::Positive];

    pub fn name(self) -> &'static str {
        match self {
            Branch::Negative => "neg",
            Branch::Positive => "pos",
        }
    }
}

/// One trained tensor (a layer's `down` or `up`).
struct Param {
    var: Var,
    opt: AdamW,
    ema: Option<Tensor>,
    /// Gradient summed over the step's micro-batches.
    acc: Option<Tensor>,
}

/// One adapted layer of one network.
struct TrainedLayer {
    key: LayerKey,
    alpha: f64,
    down: Param,
    up: Param,
}

/// Both networks of a DreamArtist++ run, with their optimiser state.
pub struct AdapterTraining {
    family: Family,
    /// Negative first, then positive.
    branches: [Vec<TrainedLayer>; 2],
}

/// The sum of per-tensor scalars, added in f64 on the device in order and
/// read back once (not once per tensor: hundreds of device syncs a step on
/// CUDA). 0 for none.
fn device_sum(
    scalars: impl Iterator<Item = candle_core::Result<Tensor>>,
) -> candle_core::Result<f64> {
    let mut total: Option<Tensor> = None;
    for s in scalars {
        let s = s?.to_dtype(candle_core::DType::F64)?;
        total = Some(match total {
            Some(t) => (t + s)?,
            None => s,
        });
    }
    total.map_or(Ok(0.0), |t| t.to_scalar::<f64>())
}

/// The sites a run adapts: the model's layers that `targets` covers.
pub fn target_sites(sd: &StableDiffusion, targets: &Targets) -> Vec<LinearSite> {
    sd.linear_sites()
        .into_iter()
        .filter(|s| targets.covers(&s.key))
        .collect()
}

impl AdapterTraining {
    /// Fresh networks (negative, then positive, drawn from `rng`), `up` zero:
    /// the model starts exactly as without adapters.
    pub fn init(
        sd: &StableDiffusion,
        targets: &Targets,
        rank: usize,
        alpha: f64,
        adam: AdamWConfig,
        ema: bool,
        rng: &mut Rng,
    ) -> candle_core::Result<Self> {
        let sites = target_sites(sd, targets);
        if sites.is_empty() {
            candle_core::bail!("the model has no layer for LoRA targets `{targets}`");
        }
        let mut branches: [Vec<TrainedLayer>; 2] = Default::default();
        for (i, _) in Branch::BOTH.iter().enumerate() {
            let net = LoraNetwork::init(&sites, rank, alpha, rng, &sd.device)?;
            branches[i] = Self::trained(&net, adam, ema)?;
        }
        Ok(Self {
            family: sd.family,
            branches,
        })
    }

    fn trained(
        net: &LoraNetwork,
        adam: AdamWConfig,
        ema: bool,
    ) -> candle_core::Result<Vec<TrainedLayer>> {
        let param = |t: &Tensor| -> candle_core::Result<Param> {
            let var = Var::from_tensor(t)?;
            Ok(Param {
                opt: AdamW::new(&var, adam)?,
                ema: if ema { Some(t.copy()?) } else { None },
                var,
                acc: None,
            })
        };
        net.layers()
            .map(|(key, l)| {
                Ok(TrainedLayer {
                    key: key.clone(),
                    alpha: l.alpha,
                    down: param(&l.down)?,
                    up: param(&l.up)?,
                })
            })
            .collect()
    }

    fn params(&self) -> impl Iterator<Item = &Param> {
        self.branches
            .iter()
            .flatten()
            .flat_map(|l| [&l.down, &l.up])
    }

    /// The networks as they are now (the live variables, so they train).
    fn live(&self, branch: Branch) -> LoraNetwork {
        let layers = &self.branches[branch as usize];
        LoraNetwork::new(
            layers
                .iter()
                .map(|l| {
                    (
                        l.key.clone(),
                        LoraLayer {
                            down: l.down.var.as_tensor().clone(),
                            up: l.up.var.as_tensor().clone(),
                            alpha: l.alpha,
                        },
                    )
                })
                .collect(),
        )
    }

    /// The scope of one training forward and backward: negative network on
    /// the first half, positive on the second; with `plain_ti` (train cfg 1,
    /// only positive rows) the positive network on every row.
    pub fn scope(&self, plain_ti: bool) -> Arc<Scope> {
        let applied = if plain_ti {
            vec![Applied {
                network: Arc::new(self.live(Branch::Positive)),
                strength: 1.0,
                rows: Rows::All,
            }]
        } else {
            vec![
                Applied {
                    network: Arc::new(self.live(Branch::Negative)),
                    strength: 1.0,
                    rows: Rows::FirstHalf,
                },
                Applied {
                    network: Arc::new(self.live(Branch::Positive)),
                    strength: 1.0,
                    rows: Rows::SecondHalf,
                },
            ]
        };
        let trainable = self.params().map(|p| p.var.as_tensor().clone()).collect();
        Arc::new(Scope::training(applied, trainable))
    }

    /// Adds a micro-batch's gradients (`scaled` as the loss was).
    pub fn accumulate(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        for l in self.branches.iter_mut().flatten() {
            for p in [&mut l.down, &mut l.up] {
                if let Some(g) = grads.get(p.var.as_tensor()) {
                    p.acc = Some(match p.acc.take() {
                        Some(a) => (a + g)?,
                        None => g.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Clips each network's accumulated gradient to `clip` (0: off), takes
    /// one AdamW step (`lr` for the positive network, `lr_neg` for the
    /// negative; `lr_neg` None leaves the negative one untouched, as in
    /// Textual Inversion) and clears the sums. Returns the two norms before
    /// clipping (negative, positive).
    pub fn update(
        &mut self,
        lr: f64,
        lr_neg: Option<f64>,
        clip: f64,
    ) -> candle_core::Result<[f64; 2]> {
        let mut norms = [0.0; 2];
        for (i, branch) in Branch::BOTH.iter().enumerate() {
            let layers = &mut self.branches[i];
            let squares = layers
                .iter()
                .flat_map(|l| [&l.down.acc, &l.up.acc])
                .flatten()
                .map(|a| a.sqr()?.sum_all());
            let norm = device_sum(squares)?.sqrt();
            norms[i] = norm;
            let coef = if clip > 0.0 && norm.is_finite() {
                (clip / (norm + 1e-6)).min(1.0)
            } else {
                1.0
            };
            let rate = match branch {
                Branch::Positive => Some(lr),
                Branch::Negative => lr_neg,
            };
            for l in layers.iter_mut() {
                for p in [&mut l.down, &mut l.up] {
                    let acc = p.acc.take();
                    let Some(rate) = rate else { continue };
                    let g = match acc {
                        Some(a) => (a * coef)?,
                        None => p.var.zeros_like()?,
                    };
                    p.opt.update(&p.var, &g, rate)?;
                }
            }
        }
        Ok(norms)
    }

    /// Moves each EMA towards the live tensors (`decay` per branch:
    /// negative, positive) and, where `replace` says so, copies it back.
    pub fn update_ema(&mut self, decay: [f64; 2], replace: [bool; 2]) -> candle_core::Result<()> {
        for (i, layers) in self.branches.iter_mut().enumerate() {
            for l in layers.iter_mut() {
                for p in [&mut l.down, &mut l.up] {
                    if let Some(e) = p.ema.as_mut() {
                        let live = p.var.as_tensor().detach();
                        *e = ((&*e * decay[i])? + (live * (1.0 - decay[i]))?)?;
                        if replace[i] {
                            p.var.set(e)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The live networks, detached (previews: no gradient graph).
    pub fn snapshot(&self, branch: Branch) -> LoraNetwork {
        self.live(branch)
            .map_tensors(|t| Ok(t.detach()))
            .unwrap_or_default()
    }

    /// The networks to write at the end: the EMA when the run keeps one.
    pub fn finished(&self, branch: Branch) -> candle_core::Result<LoraNetwork> {
        let layers = &self.branches[branch as usize];
        let mut out = BTreeMap::new();
        for l in layers {
            let pick = |p: &Param| -> candle_core::Result<Tensor> {
                Ok(match &p.ema {
                    Some(e) => e.clone(),
                    None => p.var.as_tensor().detach(),
                })
            };
            out.insert(
                l.key.clone(),
                LoraLayer {
                    down: pick(&l.down)?,
                    up: pick(&l.up)?,
                    alpha: l.alpha,
                },
            );
        }
        Ok(LoraNetwork::new(out))
    }

    /// Sum of `|x|` over every adapter tensor (a divergence check).
    pub fn magnitude(&self) -> candle_core::Result<f64> {
        device_sum(self.params().map(|p| p.var.abs()?.sum_all()))
    }

    fn base_name(&self, branch: usize, key: &LayerKey) -> String {
        format!(
            "lora.{}.{}",
            Branch::BOTH[branch].name(),
            kohya_name(key, self.family)
        )
    }

    /// The checkpoint's tensors and metadata for the adapters.
    pub fn checkpoint_entries(&self) -> (Named<Tensor>, Named<String>) {
        let mut tensors = Vec::new();
        let mut steps = None;
        for (i, layers) in self.branches.iter().enumerate() {
            for l in layers {
                let base = self.base_name(i, &l.key);
                for (part, p) in [("down", &l.down), ("up", &l.up)] {
                    let name = format!("{base}.{part}");
                    tensors.push((format!("adam_m.{name}"), p.opt.m.clone()));
                    tensors.push((format!("adam_v.{name}"), p.opt.v.clone()));
                    if let Some(e) = &p.ema {
                        tensors.push((format!("ema.{name}"), e.clone()));
                    }
                    tensors.push((name, p.var.as_tensor().clone()));
                    steps.get_or_insert(p.opt.step);
                }
            }
        }
        let mut meta = vec![("adam_step_lora".to_string(), steps.unwrap_or(0).to_string())];
        if let Some(l) = self.branches[1].first() {
            meta.push(("lora_alpha".to_string(), format!("{}", l.alpha)));
        }
        (tensors, meta)
    }

    /// The adapters of a checkpoint written by [`Self::checkpoint_entries`],
    /// for a run adapting `targets` of `sd`.
    pub fn from_checkpoint(
        sd: &StableDiffusion,
        targets: &Targets,
        tensors: &HashMap<String, Tensor>,
        meta: &HashMap<String, String>,
        adam: AdamWConfig,
        ema: bool,
        device: &Device,
    ) -> Result<Self, String> {
        let step: u64 = meta
            .get("adam_step_lora")
            .and_then(|v| v.parse().ok())
            .ok_or("missing metadata `adam_step_lora` (a checkpoint of a run without adapters?)")?;
        let alpha: f64 = meta
            .get("lora_alpha")
            .and_then(|v| v.parse().ok())
            .ok_or("missing metadata `lora_alpha`")?;
        let sites = target_sites(sd, targets);
        let mut out = Self {
            family: sd.family,
            branches: Default::default(),
        };
        for i in 0..2 {
            let mut layers = Vec::with_capacity(sites.len());
            for site in &sites {
                let base = out.base_name(i, &site.key);
                let get = |name: &str| -> Result<Tensor, String> {
                    tensors
                        .get(name)
                        .ok_or_else(|| format!("missing tensor `{name}`"))?
                        .to_device(device)
                        .map_err(|e| e.to_string())
                };
                let param = |part: &str| -> Result<Param, String> {
                    let name = format!("{base}.{part}");
                    let var = Var::from_tensor(&get(&name)?).map_err(|e| e.to_string())?;
                    Ok(Param {
                        opt: AdamW {
                            config: adam,
                            m: get(&format!("adam_m.{name}"))?,
                            v: get(&format!("adam_v.{name}"))?,
                            step,
                        },
                        ema: if ema {
                            Some(get(&format!("ema.{name}"))?)
                        } else {
                            None
                        },
                        var,
                        acc: None,
                    })
                };
                layers.push(TrainedLayer {
                    key: site.key.clone(),
                    alpha,
                    down: param("down")?,
                    up: param("up")?,
                });
            }
            out.branches[i] = layers;
        }
        Ok(out)
    }
}
