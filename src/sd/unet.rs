//! diffusers `UNet2DConditionModel` for SD 1.x / 2.x / SDXL (and inpainting
//! variants with more input channels). Every size comes from `unet/config.json`.
//! SDXL's `text_time` added embedding takes the pooled text projection and six
//! micro-conditioning ids ([`AddedCond`]).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use super::blocks::{
    Downsample, ResnetBlock, ResnetSpec, SpatialTransformer, TransformerSpec, Upsample,
};
use super::checkpoint::{checkpoint, Segment};
use super::config::UNetConfig;
use super::error::LoadError;
use super::lora::LinearSite;
use super::nn::{Conv2d, GroupNorm, Linear};
use super::weights::Weights;

type LoadResult<T> = std::result::Result<T, LoadError>;

/// One ResNet block and the transformer after it (if the level has
/// cross-attention): the unit of activation recompute.
#[derive(Debug)]
struct Pair {
    resnet: ResnetBlock,
    attention: Option<SpatialTransformer>,
}

impl Segment for Pair {
    fn run(&self, x: &Tensor, context: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let x = self.resnet.forward(x, Some(temb))?;
        match &self.attention {
            Some(attn) => attn.forward(&x, context),
            None => Ok(x),
        }
    }
}

#[derive(Debug, Clone)]
struct DownBlock {
    pairs: Vec<Arc<Pair>>,
    downsample: Option<Downsample>,
}

#[derive(Debug, Clone)]
struct UpBlock {
    pairs: Vec<Arc<Pair>>,
    upsample: Option<Upsample>,
}

#[derive(Debug)]
struct MidBlock {
    resnet_in: ResnetBlock,
    attentions: Vec<(SpatialTransformer, ResnetBlock)>,
}

impl Segment for MidBlock {
    fn run(&self, x: &Tensor, context: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet_in.forward(x, Some(temb))?;
        for (attn, resnet) in &self.attentions {
            x = attn.forward(&x, context)?;
            x = resnet.forward(&x, Some(temb))?;
        }
        Ok(x)
    }
}

/// SDXL's added conditioning of one batch.
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// `[B, proj]`: the second text encoder's pooled projection.
    pub text_embeds: Tensor,
    /// `[B, 6]`: original height, width, crop top, crop left, target height, width.
    pub time_ids: Tensor,
}

impl AddedCond {
    /// `[uncond; cond]`-style concatenation of two batches.
    pub fn cat(parts: &[&AddedCond]) -> Result<AddedCond> {
        let te: Vec<&Tensor> = parts.iter().map(|a| &a.text_embeds).collect();
        let ti: Vec<&Tensor> = parts.iter().map(|a| &a.time_ids).collect();
        Ok(AddedCond {
            text_embeds: Tensor::cat(&te, 0)?,
            time_ids: Tensor::cat(&ti, 0)?,
        })
    }

    /// The same conditioning repeated `n` times along the batch.
    pub fn repeat(&self, n: usize) -> Result<AddedCond> {
        Ok(AddedCond {
            text_embeds: self.text_embeds.repeat((n, 1))?,
            time_ids: self.time_ids.repeat((n, 1))?,
        })
    }
}

/// Everything the UNet is conditioned on besides latents and timesteps.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `[B, T, D]` text hidden states for cross-attention.
    pub context: Tensor,
    /// SDXL's pooled text and time ids.
    pub added: Option<AddedCond>,
}

impl Conditioning {
    /// Batches concatenated (e.g. `[uncond; cond]` for guidance).
    pub fn cat(parts: &[&Conditioning]) -> Result<Conditioning> {
        let ctx: Vec<&Tensor> = parts.iter().map(|c| &c.context).collect();
        let added = match parts
            .iter()
            .map(|c| c.added.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(a) if !a.is_empty() => Some(AddedCond::cat(&a)?),
            _ => None,
        };
        Ok(Conditioning {
            context: Tensor::cat(&ctx, 0)?,
            added,
        })
    }

    /// The same conditioning repeated `n` times along the batch.
    pub fn repeat(&self, n: usize) -> Result<Conditioning> {
        Ok(Conditioning {
            context: self.context.repeat((n, 1, 1))?,
            added: match &self.added {
                Some(a) => Some(a.repeat(n)?),
                None => None,
            },
        })
    }

    /// Rows `start..start+len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Conditioning> {
        Ok(Conditioning {
            context: self.context.narrow(0, start, len)?,
            added: match &self.added {
                Some(a) => Some(AddedCond {
                    text_embeds: a.text_embeds.narrow(0, start, len)?,
                    time_ids: a.time_ids.narrow(0, start, len)?,
                }),
                None => None,
            },
        })
    }

    pub fn batch(&self) -> Result<usize> {
        self.context.dim(0)
    }
}

/// SDXL's size and crop conditioning (pixels), as diffusers' `_get_add_time_ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroConditioning {
    /// `(height, width)` of the source image before any resize.
    pub original: (usize, usize),
    /// `(top, left)` of the crop.
    pub crop: (usize, usize),
    /// `(height, width)` rendered or trained at.
    pub target: (usize, usize),
}

impl MicroConditioning {
    /// diffusers' default: original = target = the render size, no crop.
    pub fn for_size(height: usize, width: usize) -> Self {
        Self {
            original: (height, width),
            crop: (0, 0),
            target: (height, width),
        }
    }

    /// `[b, 6]` f32 time ids.
    pub fn time_ids(&self, b: usize, device: &Device) -> Result<Tensor> {
        let row = [
            self.original.0,
            self.original.1,
            self.crop.0,
            self.crop.1,
            self.target.0,
            self.target.1,
        ]
        .map(|v| v as f32);
        Tensor::new(&row, device)?.unsqueeze(0)?.repeat((b, 1))
    }
}

/// diffusers' `text_time` addition: sinusoidal features of each time id,
/// concatenated after the pooled text, through a two-layer MLP, added to the
/// timestep embedding.
#[derive(Debug, Clone)]
struct TextTimeEmbedding {
    time_dim: usize,
    pooled_dim: usize,
    linear_1: Linear,
    linear_2: Linear,
}

#[derive(Debug, Clone)]
pub struct UNet {
    time_linear_1: Linear,
    time_linear_2: Linear,
    add_embedding: Option<TextTimeEmbedding>,
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid: Option<Arc<MidBlock>>,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    pub config: UNetConfig,
    /// Cross-attention width of each level (the context the text side must give).
    context_dims: Vec<usize>,
    time_proj_dim: usize,
    /// Every linear layer, where LoRA adapters can attach.
    linear_sites: Vec<LinearSite>,
    dtype: DType,
    device: Device,
}

fn unsupported(path: &Path, message: String) -> LoadError {
    LoadError::UnsupportedLayout {
        path: path.to_path_buf(),
        message,
    }
}

impl UNet {
    /// `config_path` is only used to name the config in errors.
    pub fn load(w: &Weights, cfg: &UNetConfig, config_path: &Path) -> LoadResult<Self> {
        let n = cfg.block_out_channels.len();
        if n == 0 || cfg.down_block_types.len() != n || cfg.up_block_types.len() != n {
            return Err(LoadError::BadConfig {
                path: config_path.to_path_buf(),
                message: format!(
                    "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) must have the same length",
                    cfg.down_block_types.len(),
                    cfg.up_block_types.len()
                ),
            });
        }
        let add_embed = match cfg.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                let missing = |key: &str| LoadError::BadConfig {
                    path: config_path.to_path_buf(),
                    message: format!("addition_embed_type `text_time` needs `{key}`"),
                };
                let time_dim = cfg
                    .addition_time_embed_dim
                    .ok_or_else(|| missing("addition_time_embed_dim"))?;
                let input = cfg
                    .projection_class_embeddings_input_dim
                    .ok_or_else(|| missing("projection_class_embeddings_input_dim"))?;
                if input <= 6 * time_dim {
                    return Err(LoadError::BadConfig {
                        path: config_path.to_path_buf(),
                        message: format!(
                            "projection_class_embeddings_input_dim {input} leaves no room for the pooled text \
                             after 6 time ids × addition_time_embed_dim {time_dim}"
                        ),
                    });
                }
                Some((time_dim, input))
            }
            Some(t) => {
                return Err(unsupported(
                    config_path,
                    format!("addition_embed_type `{t}` (supported: text_time, SDXL)"),
                ))
            }
        };
        if cfg.class_embed_type.is_some() || cfg.num_class_embeds.is_some() {
            return Err(unsupported(
                config_path,
                "class-conditioned UNets (upscalers) are not supported".into(),
            ));
        }
        if cfg.time_cond_proj_dim.is_some() {
            return Err(unsupported(
                config_path,
                "time_cond_proj_dim (LCM distilled UNets) is not supported".into(),
            ));
        }
        if cfg.resnet_time_scale_shift != "default" {
            return Err(unsupported(
                config_path,
                format!("resnet_time_scale_shift `{}`", cfg.resnet_time_scale_shift),
            ));
        }
        if cfg.time_embedding_type != "positional" {
            return Err(unsupported(
                config_path,
                format!("time_embedding_type `{}`", cfg.time_embedding_type),
            ));
        }
        if cfg.only_cross_attention.any() || cfg.dual_cross_attention {
            return Err(unsupported(
                config_path,
                "only/dual cross-attention blocks".into(),
            ));
        }
        if cfg.encoder_hid_dim.is_some() {
            return Err(unsupported(
                config_path,
                "encoder_hid_dim projections".into(),
            ));
        }
        let boc = &cfg.block_out_channels;
        // diffusers' historic naming: `attention_head_dim` is the number of heads
        // unless `num_attention_heads` is given.
        let heads = match &cfg.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads", config_path)?,
            None => cfg
                .attention_head_dim
                .expand(n, "attention_head_dim", config_path)?,
        };
        let layers = cfg
            .layers_per_block
            .expand(n, "layers_per_block", config_path)?;
        let ctx_dims = cfg
            .cross_attention_dim
            .expand(n, "cross_attention_dim", config_path)?;
        let tlayers = cfg.transformer_layers_per_block.expand(
            n,
            "transformer_layers_per_block",
            config_path,
        )?;
        let groups = cfg.norm_num_groups;
        let eps = cfg.norm_eps;
        let time_proj_dim = boc[0];
        let temb = cfg.time_embedding_dim.unwrap_or(boc[0] * 4);

        let time_linear_1 =
            Linear::load(&w.pp("time_embedding.linear_1"), time_proj_dim, temb, true)?;
        let time_linear_2 = Linear::load(&w.pp("time_embedding.linear_2"), temb, temb, true)?;
        let add_embedding = match add_embed {
            None => None,
            Some((time_dim, input)) => Some(TextTimeEmbedding {
                time_dim,
                pooled_dim: input - 6 * time_dim,
                linear_1: Linear::load(&w.pp("add_embedding.linear_1"), input, temb, true)?,
                linear_2: Linear::load(&w.pp("add_embedding.linear_2"), temb, temb, true)?,
            }),
        };
        let k_in = cfg.conv_in_kernel;
        let conv_in = Conv2d::load(
            &w.pp("conv_in"),
            cfg.in_channels,
            boc[0],
            k_in,
            1,
            (k_in - 1) / 2,
        )?;

        let transformer = |w: &Weights, ch: usize, i: usize| {
            SpatialTransformer::load(
                w,
                &TransformerSpec {
                    channels: ch,
                    heads: heads[i],
                    layers: tlayers[i],
                    context_dim: ctx_dims[i],
                    groups,
                    linear_projection: cfg.use_linear_projection,
                    upcast: cfg.upcast_attention,
                },
            )
        };
        let resnet = |w: &Weights, in_ch: usize, out_ch: usize, scale: f64| {
            ResnetBlock::load(
                w,
                &ResnetSpec {
                    in_ch,
                    out_ch,
                    temb_ch: Some(temb),
                    groups,
                    eps,
                    output_scale: scale,
                },
            )
        };

        let mut down = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = boc[i];
            let cross = match kind.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => {
                    return Err(unsupported(
                        config_path,
                        format!("down block type `{other}`"),
                    ))
                }
            };
            let bw = w.pp(format!("down_blocks.{i}"));
            let mut pairs = Vec::new();
            for j in 0..layers[i] {
                let rin = if j == 0 { in_ch } else { out_ch };
                pairs.push(Arc::new(Pair {
                    resnet: resnet(&bw.pp(format!("resnets.{j}")), rin, out_ch, 1.0)?,
                    attention: if cross {
                        Some(transformer(&bw.pp(format!("attentions.{j}")), out_ch, i)?)
                    } else {
                        None
                    },
                }));
            }
            let downsample = if i + 1 < n {
                Some(Downsample::load(
                    &bw.pp("downsamplers.0"),
                    out_ch,
                    cfg.downsample_padding,
                )?)
            } else {
                None
            };
            down.push(DownBlock { pairs, downsample });
        }

        let last = boc[n - 1];
        let mid = match cfg.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => {
                let mw = w.pp("mid_block");
                let scale = cfg.mid_block_scale_factor;
                let resnet_in = resnet(&mw.pp("resnets.0"), last, last, scale)?;
                // diffusers' mid block has one transformer layer set (num_layers=1).
                let attentions = vec![(
                    transformer(&mw.pp("attentions.0"), last, n - 1)?,
                    resnet(&mw.pp("resnets.1"), last, last, scale)?,
                )];
                Some(Arc::new(MidBlock {
                    resnet_in,
                    attentions,
                }))
            }
            Some(other) => {
                return Err(unsupported(
                    config_path,
                    format!("mid block type `{other}`"),
                ))
            }
        };

        let rev_boc: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out_ch = rev_boc[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev_out = out_ch;
            out_ch = rev_boc[i];
            let in_ch = rev_boc[(i + 1).min(n - 1)];
            let bi = n - 1 - i; // per-block settings are given in down order
            let cross = match kind.as_str() {
                "CrossAttnUpBlock2D" => true,
                "UpBlock2D" => false,
                other => return Err(unsupported(config_path, format!("up block type `{other}`"))),
            };
            let bw = w.pp(format!("up_blocks.{i}"));
            let num = layers[bi] + 1;
            let mut pairs = Vec::new();
            for j in 0..num {
                let skip = if j == num - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                pairs.push(Arc::new(Pair {
                    resnet: resnet(&bw.pp(format!("resnets.{j}")), rin + skip, out_ch, 1.0)?,
                    attention: if cross {
                        Some(transformer(&bw.pp(format!("attentions.{j}")), out_ch, bi)?)
                    } else {
                        None
                    },
                }));
            }
            let upsample = if i + 1 < n {
                Some(Upsample::load(&bw.pp("upsamplers.0"), out_ch)?)
            } else {
                None
            };
            up.push(UpBlock { pairs, upsample });
        }

        let k_out = cfg.conv_out_kernel;
        let norm_out = GroupNorm::load(&w.pp("conv_norm_out"), groups, boc[0], eps)?;
        let conv_out = Conv2d::load(
            &w.pp("conv_out"),
            boc[0],
            cfg.out_channels,
            k_out,
            1,
            (k_out - 1) / 2,
        )?;
        Ok(Self {
            time_linear_1,
            time_linear_2,
            add_embedding,
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            config: cfg.clone(),
            context_dims: ctx_dims.clone(),
            time_proj_dim,
            linear_sites: w.linear_sites(),
            dtype: w.dtype(),
            device: w.device().clone(),
        })
    }

    /// The UNet's linear layers (diffusers paths and widths).
    pub fn linear_sites(&self) -> &[LinearSite] {
        &self.linear_sites
    }

    pub fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The context width every level's cross-attention takes (`None` when the
    /// levels disagree).
    pub fn context_width(&self) -> Option<usize> {
        let first = *self.context_dims.first()?;
        self.context_dims
            .iter()
            .all(|d| *d == first)
            .then_some(first)
    }

    /// Whether the UNet takes SDXL's pooled text + time ids.
    pub fn takes_added_cond(&self) -> bool {
        self.add_embedding.is_some()
    }

    /// The pooled text width the added embedding expects (SDXL).
    pub fn pooled_width(&self) -> Option<usize> {
        self.add_embedding.as_ref().map(|a| a.pooled_dim)
    }

    /// Sinusoidal features (diffusers' `get_timestep_embedding`, in f32) of
    /// each value, `dim` per value.
    fn sinusoids(&self, values: &[f32], dim: usize) -> Result<Tensor> {
        let half = dim / 2;
        let shift = self.config.freq_shift as f32;
        let neg_log = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| ((neg_log * i as f32) / (half as f32 - shift)).exp())
            .collect();
        let mut data = Vec::with_capacity(values.len() * dim);
        for &t in values {
            let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
            let sin = args.iter().map(|a| a.sin());
            let cos = args.iter().map(|a| a.cos());
            let mut row: Vec<f32> = if self.config.flip_sin_to_cos {
                cos.chain(sin).collect()
            } else {
                sin.chain(cos).collect()
            };
            row.resize(dim, 0.0);
            data.extend(row);
        }
        Tensor::from_vec(data, (values.len(), dim), &self.device)
    }

    /// SDXL's added embedding for a batch of `b`.
    fn added_embedding(
        &self,
        add: &TextTimeEmbedding,
        cond: Option<&AddedCond>,
        b: usize,
    ) -> Result<Tensor> {
        let Some(cond) = cond else {
            candle_core::bail!(
                "this UNet (addition_embed_type text_time, SDXL) needs the pooled text embedding and time ids"
            );
        };
        let (tb, tw) = cond.text_embeds.dims2()?;
        let (ib, iw) = cond.time_ids.dims2()?;
        if tb != b || ib != b || tw != add.pooled_dim || iw != 6 {
            candle_core::bail!(
                "added conditioning text_embeds {:?} / time_ids {:?} for a batch of {b}; expected [{b}, {}] and [{b}, 6]",
                cond.text_embeds.dims(),
                cond.time_ids.dims(),
                add.pooled_dim
            );
        }
        let ids: Vec<f32> = cond
            .time_ids
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let time = self
            .sinusoids(&ids, add.time_dim)?
            .reshape((b, 6 * add.time_dim))?;
        // diffusers concatenates in f32 and casts to the model dtype; casting
        // each part first is the same (the text part is in the model dtype).
        let input = Tensor::cat(
            &[
                &cond.text_embeds.to_dtype(self.dtype)?,
                &time.to_dtype(self.dtype)?,
            ],
            1,
        )?;
        add.linear_2.forward(&add.linear_1.forward(&input)?.silu()?)
    }

    /// [`UNet::forward`] with a [`Conditioning`].
    pub fn forward_cond(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self.forward(latents, timesteps, &cond.context, cond.added.as_ref())
    }

    /// [`UNet::forward_cond`], with activation recompute when `recompute`
    /// (see [`UNet::forward_with`]).
    pub fn forward_cond_with(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        cond: &Conditioning,
        recompute: bool,
    ) -> Result<Tensor> {
        self.forward_with(
            latents,
            timesteps,
            &cond.context,
            cond.added.as_ref(),
            recompute,
        )
    }

    /// Predicts noise (or v) for `latents [B, C, H, W]` at one timestep per
    /// sample, conditioned on `context [B, T, D]` and, for SDXL, the pooled
    /// text and time ids.
    pub fn forward(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        self.forward_with(latents, timesteps, context, added, false)
    }

    /// [`UNet::forward`]; with `recompute`, every ResNet + transformer pair
    /// and the mid block keep no activations for backward and run again
    /// when their gradient is needed ([`super::checkpoint`]): training holds
    /// one pair's activations at a time instead of the whole UNet's, for
    /// one more UNet forward per step. Values are the same bits either way;
    /// gradients the same up to the order of a few sums (see there).
    /// Without gradients (sampling) it makes no difference.
    pub fn forward_with(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
        added: Option<&AddedCond>,
        recompute: bool,
    ) -> Result<Tensor> {
        let b = latents.dim(0)?;
        if timesteps.len() != b && timesteps.len() != 1 {
            candle_core::bail!("{} timesteps for a batch of {b}", timesteps.len());
        }
        let ts: Vec<f32> = if timesteps.len() == b {
            timesteps.iter().map(|t| *t as f32).collect()
        } else {
            vec![timesteps[0] as f32; b]
        };
        let temb = self
            .sinusoids(&ts, self.time_proj_dim)?
            .to_dtype(self.dtype)?;
        let mut temb = self
            .time_linear_2
            .forward(&self.time_linear_1.forward(&temb)?.silu()?)?;
        if let Some(add) = &self.add_embedding {
            temb = (temb + self.added_embedding(add, added, b)?)?;
        }

        let mut x = if self.config.center_input_sample {
            ((latents * 2.0)? - 1.0)?
        } else {
            latents.clone()
        };
        let run = |segment: Arc<dyn Segment>, x: &Tensor| -> Result<Tensor> {
            if recompute {
                checkpoint(segment, x, context, &temb)
            } else {
                segment.run(x, context, &temb)
            }
        };
        x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down {
            for pair in &block.pairs {
                x = run(pair.clone(), &x)?;
                skips.push(x.clone());
            }
            if let Some(ds) = &block.downsample {
                x = ds.forward(&x)?;
                skips.push(x.clone());
            }
        }
        if let Some(mid) = &self.mid {
            x = run(mid.clone(), &x)?;
        }
        for block in &self.up {
            for pair in &block.pairs {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("UNet skip stack underflow".into()))?;
                x = Tensor::cat(&[&x, &skip], 1)?;
                x = run(pair.clone(), &x)?;
            }
            if let Some(us) = &block.upsample {
                let size = match skips.last() {
                    Some(s) => {
                        let (_, _, h, w) = s.dims4()?;
                        Some((h, w))
                    }
                    None => None,
                };
                x = us.forward(&x, size)?;
            }
        }
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::{LoadOptions, StableDiffusion};
    use candle_core::Var;

    fn dot(a: &Tensor, b: &Tensor) -> f64 {
        (a * b)
            .and_then(|p| p.sum_all())
            .and_then(|s| s.to_scalar::<f64>())
            .expect("f64 dot")
    }

    /// One checkpointed ResNet + transformer pair of the tiny SD 1.x UNet in
    /// f64, all three inputs tracking: the gradient its recomputing backward
    /// returns for `x`, `context` and `temb` matches central finite
    /// differences along random directions (relative to ‖grad‖). The second
    /// level's first pair: 64 channels in 32 norm groups, so `temb` (a
    /// per-channel shift before `norm2`) is not normalised away as it is with
    /// one channel per group, and has a real gradient.
    #[test]
    fn checkpointed_pair_gradient_matches_finite_differences() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1/model");
        let sd = StableDiffusion::load_folder(
            &dir,
            &LoadOptions {
                dtype: DType::F64,
                device: Device::Cpu,
            },
        )
        .expect("fixture loads");
        let pair = sd.unet.down[1].pairs[0].clone();
        assert!(pair.attention.is_some(), "a pair with cross-attention");
        let dev = Device::Cpu;
        let boc = &sd.unet.config.block_out_channels;
        let (in_ch, out_ch) = (boc[0], boc[1]);
        let temb_dim = boc[0] * 4;
        let ctx_dim = sd.unet.context_dims[1];
        let x0 = Tensor::randn(0f64, 1.0, (2, in_ch, 4, 4), &dev).unwrap();
        let c0 = Tensor::randn(0f64, 1.0, (2, 7, ctx_dim), &dev).unwrap();
        let t0 = Tensor::randn(0f64, 1.0, (2, temb_dim), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (2, out_ch, 4, 4), &dev).unwrap();
        let (x, c, t) = (
            Var::from_tensor(&x0).unwrap(),
            Var::from_tensor(&c0).unwrap(),
            Var::from_tensor(&t0).unwrap(),
        );
        let out = checkpoint(pair.clone(), x.as_tensor(), c.as_tensor(), t.as_tensor()).unwrap();
        let grads = (out * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let loss = |x: &Tensor, c: &Tensor, t: &Tensor| dot(&pair.run(x, c, t).unwrap(), &w);
        let eps = 1e-5;
        for (i, (var, base)) in [(&x, &x0), (&c, &c0), (&t, &t0)].into_iter().enumerate() {
            let g = grads
                .get(var.as_tensor())
                .expect("gradient for every input");
            let scale = dot(g, g).sqrt();
            assert!(scale > 0.0);
            for _ in 0..2 {
                let u = Tensor::randn(0f64, 1.0, base.dims(), &dev).unwrap();
                let at = |s: f64| {
                    let moved = (base + (&u * s).unwrap()).unwrap();
                    let mut args = [x0.clone(), c0.clone(), t0.clone()];
                    args[i] = moved;
                    loss(&args[0], &args[1], &args[2])
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                let error = (dot(g, &u) - numeric).abs() / scale;
                assert!(error < 1e-6, "input {i}: error {error:e} of ‖grad‖ {scale}");
            }
        }
    }
}
