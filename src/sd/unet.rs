//! diffusers `UNet2DConditionModel` for SD 1.x / 2.x (and inpainting variants
//! with more input channels). Every size comes from `unet/config.json`.

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};

use super::blocks::{
    Downsample, ResnetBlock, ResnetSpec, SpatialTransformer, TransformerSpec, Upsample,
};
use super::config::UNetConfig;
use super::error::LoadError;
use super::nn::{Conv2d, GroupNorm, Linear};
use super::weights::Weights;

type LoadResult<T> = std::result::Result<T, LoadError>;

#[derive(Debug, Clone)]
struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    downsample: Option<Downsample>,
}

#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    upsample: Option<Upsample>,
}

#[derive(Debug, Clone)]
struct MidBlock {
    resnet_in: ResnetBlock,
    attentions: Vec<(SpatialTransformer, ResnetBlock)>,
}

#[derive(Debug, Clone)]
pub struct UNet {
    time_linear_1: Linear,
    time_linear_2: Linear,
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid: Option<MidBlock>,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    pub config: UNetConfig,
    time_proj_dim: usize,
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
        if let Some(t) = &cfg.addition_embed_type {
            return Err(unsupported(
                config_path,
                format!("addition_embed_type `{t}` (SDXL-style UNets are not supported yet)"),
            ));
        }
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
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers[i] {
                let rin = if j == 0 { in_ch } else { out_ch };
                resnets.push(resnet(&bw.pp(format!("resnets.{j}")), rin, out_ch, 1.0)?);
                if cross {
                    attentions.push(transformer(&bw.pp(format!("attentions.{j}")), out_ch, i)?);
                }
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
            down.push(DownBlock {
                resnets,
                attentions,
                downsample,
            });
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
                Some(MidBlock {
                    resnet_in,
                    attentions,
                })
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
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..num {
                let skip = if j == num - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev_out } else { out_ch };
                resnets.push(resnet(
                    &bw.pp(format!("resnets.{j}")),
                    rin + skip,
                    out_ch,
                    1.0,
                )?);
                if cross {
                    attentions.push(transformer(&bw.pp(format!("attentions.{j}")), out_ch, bi)?);
                }
            }
            let upsample = if i + 1 < n {
                Some(Upsample::load(&bw.pp("upsamplers.0"), out_ch)?)
            } else {
                None
            };
            up.push(UpBlock {
                resnets,
                attentions,
                upsample,
            });
        }

        let k_out = cfg.conv_out_kernel;
        Ok(Self {
            time_linear_1,
            time_linear_2,
            conv_in,
            down,
            mid,
            up,
            norm_out: GroupNorm::load(&w.pp("conv_norm_out"), groups, boc[0], eps)?,
            conv_out: Conv2d::load(
                &w.pp("conv_out"),
                boc[0],
                cfg.out_channels,
                k_out,
                1,
                (k_out - 1) / 2,
            )?,
            config: cfg.clone(),
            time_proj_dim,
            dtype: w.dtype(),
            device: w.device().clone(),
        })
    }

    pub fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Sinusoidal timestep features, computed in f32 the way diffusers does.
    fn time_features(&self, timesteps: &[f64]) -> Result<Tensor> {
        let half = self.time_proj_dim / 2;
        let shift = self.config.freq_shift as f32;
        let neg_log = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| ((neg_log * i as f32) / (half as f32 - shift)).exp())
            .collect();
        let mut data = Vec::with_capacity(timesteps.len() * self.time_proj_dim);
        for &t in timesteps {
            let t = t as f32;
            let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
            let sin = args.iter().map(|a| a.sin());
            let cos = args.iter().map(|a| a.cos());
            let mut row: Vec<f32> = if self.config.flip_sin_to_cos {
                cos.chain(sin).collect()
            } else {
                sin.chain(cos).collect()
            };
            row.resize(self.time_proj_dim, 0.0);
            data.extend(row);
        }
        Tensor::from_vec(data, (timesteps.len(), self.time_proj_dim), &self.device)?
            .to_dtype(self.dtype)
    }

    /// Predicts noise (or v) for `latents [B, C, H, W]` at one timestep per
    /// sample, conditioned on `context [B, T, D]`.
    pub fn forward(&self, latents: &Tensor, timesteps: &[f64], context: &Tensor) -> Result<Tensor> {
        let b = latents.dim(0)?;
        if timesteps.len() != b && timesteps.len() != 1 {
            candle_core::bail!("{} timesteps for a batch of {b}", timesteps.len());
        }
        let ts: Vec<f64> = if timesteps.len() == b {
            timesteps.to_vec()
        } else {
            vec![timesteps[0]; b]
        };
        let temb = self.time_features(&ts)?;
        let temb = self
            .time_linear_2
            .forward(&self.time_linear_1.forward(&temb)?.silu()?)?;

        let mut x = if self.config.center_input_sample {
            ((latents * 2.0)? - 1.0)?
        } else {
            latents.clone()
        };
        x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down {
            for (j, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(&x, Some(&temb))?;
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(&x, context)?;
                }
                skips.push(x.clone());
            }
            if let Some(ds) = &block.downsample {
                x = ds.forward(&x)?;
                skips.push(x.clone());
            }
        }
        if let Some(mid) = &self.mid {
            x = mid.resnet_in.forward(&x, Some(&temb))?;
            for (attn, resnet) in &mid.attentions {
                x = attn.forward(&x, context)?;
                x = resnet.forward(&x, Some(&temb))?;
            }
        }
        for block in &self.up {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("UNet skip stack underflow".into()))?;
                x = Tensor::cat(&[&x, &skip], 1)?;
                x = resnet.forward(&x, Some(&temb))?;
                if let Some(attn) = block.attentions.get(j) {
                    x = attn.forward(&x, context)?;
                }
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
