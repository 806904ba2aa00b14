//! diffusers `AutoencoderKL`: image ↔ latent distribution. The latent scaling
//! factor (and optional shift) is applied by the callers through
//! [`Vae::scale_latents`] / [`Vae::unscale_latents`], exactly once.

use std::path::Path;

use candle_core::{Result, Tensor};

use super::blocks::{Downsample, ResnetBlock, ResnetSpec, Upsample, VaeAttention};
use super::config::VaeConfig;
use super::error::LoadError;
use super::nn::{Conv2d, GroupNorm};
use super::weights::Weights;

type LoadResult<T> = std::result::Result<T, LoadError>;

const VAE_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
struct VaeMid {
    resnet_1: ResnetBlock,
    attn: Option<VaeAttention>,
    resnet_2: ResnetBlock,
}

impl VaeMid {
    fn load(w: &Weights, ch: usize, groups: usize, attention: bool) -> LoadResult<Self> {
        let spec = plain_resnet(ch, ch, groups);
        Ok(Self {
            resnet_1: ResnetBlock::load(&w.pp("resnets.0"), &spec)?,
            attn: if attention {
                Some(VaeAttention::load(
                    &w.pp("attentions.0"),
                    ch,
                    groups,
                    VAE_EPS,
                )?)
            } else {
                None
            },
            resnet_2: ResnetBlock::load(&w.pp("resnets.1"), &spec)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet_1.forward(x, None)?;
        if let Some(a) = &self.attn {
            x = a.forward(&x)?;
        }
        self.resnet_2.forward(&x, None)
    }
}

fn plain_resnet(in_ch: usize, out_ch: usize, groups: usize) -> ResnetSpec {
    ResnetSpec {
        in_ch,
        out_ch,
        temb_ch: None,
        groups,
        eps: VAE_EPS,
        output_scale: 1.0,
    }
}

#[derive(Debug, Clone)]
struct EncoderLevel {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

#[derive(Debug, Clone)]
struct DecoderLevel {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

/// The latent distribution of an image: `mean` and `std` (unscaled latents).
#[derive(Debug, Clone)]
pub struct LatentDist {
    pub mean: Tensor,
    pub std: Tensor,
}

#[derive(Debug, Clone)]
pub struct Vae {
    enc_conv_in: Conv2d,
    enc_levels: Vec<EncoderLevel>,
    enc_mid: VaeMid,
    enc_norm_out: GroupNorm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: VaeMid,
    dec_levels: Vec<DecoderLevel>,
    dec_norm_out: GroupNorm,
    dec_conv_out: Conv2d,
    pub config: VaeConfig,
}

impl Vae {
    pub fn load(w: &Weights, cfg: &VaeConfig, config_path: &Path) -> LoadResult<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        if n == 0 {
            return Err(LoadError::BadConfig {
                path: config_path.to_path_buf(),
                message: "block_out_channels is empty".into(),
            });
        }
        for t in &cfg.down_block_types {
            if t != "DownEncoderBlock2D" {
                return Err(LoadError::UnsupportedLayout {
                    path: config_path.to_path_buf(),
                    message: format!("VAE down block type `{t}`"),
                });
            }
        }
        for t in &cfg.up_block_types {
            if t != "UpDecoderBlock2D" {
                return Err(LoadError::UnsupportedLayout {
                    path: config_path.to_path_buf(),
                    message: format!("VAE up block type `{t}`"),
                });
            }
        }
        let g = cfg.norm_num_groups;
        let lc = cfg.latent_channels;
        let last = boc[n - 1];

        let e = w.pp("encoder");
        let enc_conv_in = Conv2d::load(&e.pp("conv_in"), cfg.in_channels, boc[0], 3, 1, 1)?;
        let mut enc_levels = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, &ch) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch;
            let lw = e.pp(format!("down_blocks.{i}"));
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let rin = if j == 0 { in_ch } else { out_ch };
                    ResnetBlock::load(
                        &lw.pp(format!("resnets.{j}")),
                        &plain_resnet(rin, out_ch, g),
                    )
                })
                .collect::<LoadResult<Vec<_>>>()?;
            let downsample = if i + 1 < n {
                Some(Downsample::load(&lw.pp("downsamplers.0"), out_ch, 0)?)
            } else {
                None
            };
            enc_levels.push(EncoderLevel {
                resnets,
                downsample,
            });
        }
        let enc_mid = VaeMid::load(&e.pp("mid_block"), last, g, cfg.mid_block_add_attention)?;
        let enc_norm_out = GroupNorm::load(&e.pp("conv_norm_out"), g, last, VAE_EPS)?;
        let enc_conv_out = Conv2d::load(&e.pp("conv_out"), last, 2 * lc, 3, 1, 1)?;
        let quant_conv = if cfg.use_quant_conv {
            Some(Conv2d::load(&w.pp("quant_conv"), 2 * lc, 2 * lc, 1, 1, 0)?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(Conv2d::load(&w.pp("post_quant_conv"), lc, lc, 1, 1, 0)?)
        } else {
            None
        };

        let d = w.pp("decoder");
        let dec_conv_in = Conv2d::load(&d.pp("conv_in"), lc, last, 3, 1, 1)?;
        let dec_mid = VaeMid::load(&d.pp("mid_block"), last, g, cfg.mid_block_add_attention)?;
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut dec_levels = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, &ch) in rev.iter().enumerate() {
            let prev = out_ch;
            out_ch = ch;
            let lw = d.pp(format!("up_blocks.{i}"));
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let rin = if j == 0 { prev } else { out_ch };
                    ResnetBlock::load(
                        &lw.pp(format!("resnets.{j}")),
                        &plain_resnet(rin, out_ch, g),
                    )
                })
                .collect::<LoadResult<Vec<_>>>()?;
            let upsample = if i + 1 < n {
                Some(Upsample::load(&lw.pp("upsamplers.0"), out_ch)?)
            } else {
                None
            };
            dec_levels.push(DecoderLevel { resnets, upsample });
        }
        let dec_norm_out = GroupNorm::load(&d.pp("conv_norm_out"), g, boc[0], VAE_EPS)?;
        let dec_conv_out = Conv2d::load(&d.pp("conv_out"), boc[0], cfg.out_channels, 3, 1, 1)?;
        Ok(Self {
            enc_conv_in,
            enc_levels,
            enc_mid,
            enc_norm_out,
            enc_conv_out,
            quant_conv,
            post_quant_conv,
            dec_conv_in,
            dec_mid,
            dec_levels,
            dec_norm_out,
            dec_conv_out,
            config: cfg.clone(),
        })
    }

    /// Spatial down-scaling from pixels to latents (8 for SD).
    pub fn downscale(&self) -> usize {
        1 << (self.config.block_out_channels.len().saturating_sub(1))
    }

    /// Encodes images in [-1, 1] (`[B, 3, H, W]`) to the latent distribution.
    pub fn encode(&self, image: &Tensor) -> Result<LatentDist> {
        let mut x = self.enc_conv_in.forward(image)?;
        for level in &self.enc_levels {
            for r in &level.resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(ds) = &level.downsample {
                x = ds.forward(&x)?;
            }
        }
        x = self.enc_mid.forward(&x)?;
        x = self
            .enc_conv_out
            .forward(&self.enc_norm_out.forward_silu(&x)?)?;
        if let Some(q) = &self.quant_conv {
            x = q.forward(&x)?;
        }
        let lc = self.config.latent_channels;
        let mean = x.narrow(1, 0, lc)?;
        let logvar = x.narrow(1, lc, lc)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentDist { mean, std })
    }

    /// Decodes unscaled latents to images (roughly in [-1, 1], not clamped).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut x = match &self.post_quant_conv {
            Some(p) => p.forward(latents)?,
            None => latents.clone(),
        };
        x = self.dec_conv_in.forward(&x)?;
        x = self.dec_mid.forward(&x)?;
        for level in &self.dec_levels {
            for r in &level.resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(us) = &level.upsample {
                x = us.forward(&x, None)?;
            }
        }
        self.dec_conv_out
            .forward(&self.dec_norm_out.forward_silu(&x)?)
    }

    /// Unscaled VAE latents → the scaled latents the UNet works on.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        (z - shift)? * self.config.scaling_factor
    }

    /// Scaled UNet latents → unscaled VAE latents.
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        (z / self.config.scaling_factor)? + shift
    }
}
