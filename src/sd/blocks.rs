//! The UNet/VAE building blocks of diffusers: ResNet blocks, spatial
//! transformers, attention, up/down samplers.

use candle_core::{Result, Tensor};

use super::error::LoadError;
use super::nn::{attention, merge_heads, split_heads, Conv2d, GroupNorm, LayerNorm, Linear};
use super::weights::Weights;

type LoadResult<T> = std::result::Result<T, LoadError>;

/// diffusers `ResnetBlock2D` (time-conditioned in the UNet, plain in the VAE).
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    output_scale: f64,
}

pub struct ResnetSpec {
    pub in_ch: usize,
    pub out_ch: usize,
    pub temb_ch: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale: f64,
}

impl ResnetBlock {
    pub fn load(w: &Weights, s: &ResnetSpec) -> LoadResult<Self> {
        Ok(Self {
            norm1: GroupNorm::load(&w.pp("norm1"), s.groups, s.in_ch, s.eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), s.in_ch, s.out_ch, 3, 1, 1)?,
            time_emb_proj: match s.temb_ch {
                Some(t) => Some(Linear::load(&w.pp("time_emb_proj"), t, s.out_ch, true)?),
                None => None,
            },
            norm2: GroupNorm::load(&w.pp("norm2"), s.groups, s.out_ch, s.eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), s.out_ch, s.out_ch, 3, 1, 1)?,
            shortcut: if s.in_ch != s.out_ch {
                Some(Conv2d::load(
                    &w.pp("conv_shortcut"),
                    s.in_ch,
                    s.out_ch,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            output_scale: s.output_scale,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&t.silu()?)?;
            let (b, c) = t.dims2()?;
            h = h.broadcast_add(&t.reshape((b, c, 1, 1))?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let out = (skip + h)?;
        if self.output_scale == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale
        }
    }
}

/// diffusers `Attention` as used inside transformer blocks (no q/k/v bias).
#[derive(Debug, Clone)]
pub struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
    upcast: bool,
}

impl CrossAttention {
    pub fn load(
        w: &Weights,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        upcast: bool,
    ) -> LoadResult<Self> {
        let head_dim = query_dim / heads;
        Ok(Self {
            to_q: Linear::load(&w.pp("to_q"), query_dim, query_dim, false)?,
            to_k: Linear::load(&w.pp("to_k"), context_dim, query_dim, false)?,
            to_v: Linear::load(&w.pp("to_v"), context_dim, query_dim, false)?,
            to_out: Linear::load(&w.pp("to_out.0"), query_dim, query_dim, true)?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
            upcast,
        })
    }

    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = split_heads(&self.to_q.forward(x)?, self.heads)?;
        let k = split_heads(&self.to_k.forward(ctx)?, self.heads)?;
        let v = split_heads(&self.to_v.forward(ctx)?, self.heads)?;
        let o = attention(&q, &k, &v, self.scale, self.upcast, None)?;
        self.to_out.forward(&merge_heads(&o)?)
    }
}

/// diffusers `BasicTransformerBlock`: self-attention, cross-attention, GEGLU MLP.
#[derive(Debug, Clone)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn load(
        w: &Weights,
        dim: usize,
        ctx_dim: usize,
        heads: usize,
        upcast: bool,
    ) -> LoadResult<Self> {
        let inner = dim * 4;
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-5)?,
            attn1: CrossAttention::load(&w.pp("attn1"), dim, dim, heads, upcast)?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, 1e-5)?,
            attn2: CrossAttention::load(&w.pp("attn2"), dim, ctx_dim, heads, upcast)?,
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff_proj: Linear::load(&w.pp("ff.net.0.proj"), dim, inner * 2, true)?,
            ff_out: Linear::load(&w.pp("ff.net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + &x)?;
        let h = self.ff_proj.forward(&self.norm3.forward(&x)?)?;
        let geglu = if super::fused::applies(&h) {
            super::fused::geglu(&h)?
        } else {
            let half = h.dim(2)? / 2;
            (h.narrow(2, 0, half)? * h.narrow(2, half, half)?.gelu_erf()?)?
        };
        self.ff_out.forward(&geglu)? + x
    }
}

/// Input/output projection of a spatial transformer: 1x1 conv (SD 1.x) or linear (SD 2.x).
#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` (the "spatial transformer").
#[derive(Debug, Clone)]
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
    pub upcast: bool,
}

impl SpatialTransformer {
    pub fn load(w: &Weights, s: &TransformerSpec) -> LoadResult<Self> {
        let c = s.channels;
        if s.heads == 0 || c % s.heads != 0 {
            return Err(LoadError::BadConfig {
                path: "unet/config.json".into(),
                message: format!(
                    "{c} channels cannot be split into {} attention heads",
                    s.heads
                ),
            });
        }
        let (proj_in, proj_out) = if s.linear_projection {
            (
                Projection::Linear(Linear::load(&w.pp("proj_in"), c, c, true)?),
                Projection::Linear(Linear::load(&w.pp("proj_out"), c, c, true)?),
            )
        } else {
            (
                Projection::Conv(Conv2d::load(&w.pp("proj_in"), c, c, 1, 1, 0)?),
                Projection::Conv(Conv2d::load(&w.pp("proj_out"), c, c, 1, 1, 0)?),
            )
        };
        let blocks = (0..s.layers)
            .map(|i| {
                TransformerBlock::load(
                    &w.pp(format!("transformer_blocks.{i}")),
                    c,
                    s.context_dim,
                    s.heads,
                    s.upcast,
                )
            })
            .collect::<LoadResult<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(&w.pp("norm"), s.groups, c, 1e-6)?,
            proj_in,
            blocks,
            proj_out,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let residual = x;
        let x = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(1)?;
            t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
        };
        let mut x = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&x)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&x)?)?,
        };
        for block in &self.blocks {
            x = block.forward(&x, context)?;
        }
        let to_image =
            |t: &Tensor| -> Result<Tensor> { t.reshape((b, h, w, c))?.permute((0, 3, 1, 2)) };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&x)?.contiguous()?)?,
            Projection::Linear(lin) => to_image(&lin.forward(&x)?)?,
        };
        out + residual
    }
}

/// Single-head self-attention over pixels, as in the VAE's mid block.
#[derive(Debug, Clone)]
pub struct VaeAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl VaeAttention {
    pub fn load(w: &Weights, channels: usize, groups: usize, eps: f64) -> LoadResult<Self> {
        Ok(Self {
            norm: GroupNorm::load(&w.pp("group_norm"), groups, channels, eps)?,
            q: Linear::load(&w.pp("to_q"), channels, channels, true)?,
            k: Linear::load(&w.pp("to_k"), channels, channels, true)?,
            v: Linear::load(&w.pp("to_v"), channels, channels, true)?,
            out: Linear::load(&w.pp("to_out.0"), channels, channels, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.q.forward(&t)?.unsqueeze(1)?;
        let k = self.k.forward(&t)?.unsqueeze(1)?;
        let v = self.v.forward(&t)?.unsqueeze(1)?;
        let o = attention(&q, &k, &v, (c as f64).powf(-0.5), false, None)?.squeeze(1)?;
        let o = self.out.forward(&o)?;
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        o + x
    }
}

/// Strided 3x3 convolution. The VAE's encoder pads asymmetrically (right and
/// bottom by one) and convolves unpadded, as diffusers does with `padding=0`.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
    asymmetric: bool,
}

impl Downsample {
    pub fn load(w: &Weights, channels: usize, padding: usize) -> LoadResult<Self> {
        Ok(Self {
            conv: Conv2d::load(&w.pp("conv"), channels, channels, 3, 2, padding)?,
            asymmetric: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour upsampling followed by a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn load(w: &Weights, channels: usize) -> LoadResult<Self> {
        Ok(Self {
            conv: Conv2d::load(&w.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// Upsamples to `size` (the matching skip connection's size in the UNet) or 2x.
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((h * 2, w * 2));
        self.conv.forward(&upsample_nearest(x, th, tw)?)
    }
}

/// Nearest-neighbour upsampling. An exact 2× upsampling that tracks gradients
/// is a broadcast (its backward is one sum): candle's `upsample_nearest2d`
/// backward is a grouped convolution, run as one convolution per channel,
/// and does not exist at all for other factors — which a UNet meets when a
/// side (e.g. 48 px on a model with three levels) does not halve evenly down
/// to the bottom level; then the rows and columns are gathered (its backward
/// is a scatter-add), with candle's source-index rule.
pub(crate) fn upsample_nearest(x: &Tensor, th: usize, tw: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if !x.track_op() {
        return x.upsample_nearest2d(th, tw);
    }
    if (th, tw) == (2 * h, 2 * w) {
        return x
            .reshape((b, c, h, 1, w, 1))?
            .broadcast_as((b, c, h, 2, w, 2))?
            .contiguous()?
            .reshape((b, c, th, tw));
    }
    let source = |len: usize, to: usize| -> Result<Tensor> {
        let scale = len as f64 / to as f64;
        let idx: Vec<u32> = (0..to)
            .map(|i| ((i as f64 * scale) as usize).min(len - 1) as u32)
            .collect();
        Tensor::new(idx.as_slice(), x.device())
    };
    x.index_select(&source(h, th)?, 2)?
        .index_select(&source(w, tw)?, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::testutil::assert_same_value_and_gradients as check;
    use candle_core::{Device, Var};

    #[test]
    fn tracked_uneven_upsampling_matches_candles_values_and_has_a_gradient() {
        let x0 = Tensor::randn(0f64, 1.0, (1, 2, 2, 3), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x0).unwrap();
        let ours = upsample_nearest(v.as_tensor(), 3, 4).unwrap();
        let candle = x0.upsample_nearest2d(3, 4).unwrap();
        let diff = (&ours - &candle)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0);
        // d(sum)/dx counts how often each source pixel was copied.
        let g = ours.sum_all().unwrap().backward().unwrap();
        let g = g.get(v.as_tensor()).unwrap();
        let total = g.sum_all().unwrap().to_scalar::<f64>().unwrap();
        assert_eq!(total, 2.0 * 3.0 * 4.0);
    }

    #[test]
    fn tracked_2x_upsampling_matches_candles_in_value_and_gradient() {
        let x0 = Tensor::randn(0f64, 1.0, (2, 3, 4, 5), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x0).unwrap();
        let ours = upsample_nearest(v.as_tensor(), 8, 10).unwrap();
        let candle = v.as_tensor().upsample_nearest2d(8, 10).unwrap();
        check(&[&v], &ours, &candle, 1e-15, 1e-12);
    }
}
