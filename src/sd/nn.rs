//! Building blocks shared by the text encoder, UNet and VAE.
//!
//! Stock candle's fused `softmax_last_dim` and `layer_norm` kernels have no
//! backward pass: gradients through them are silently dropped. Every norm and
//! softmax here therefore checks whether its input tracks gradients
//! ([`Tensor::track_op`]) and takes a composite, differentiable path when it
//! does and the fused kernel when it does not (sampling, frozen prefixes).

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor, D};

use super::bmm::batched_matmul;
use super::device::is_half;
use super::error::LoadError;
use super::lora::{LayerKey, SiteKind};
use super::weights::Weights;

/// A dense layer `y = x Wᵀ + b` over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    weight: Tensor,
    bias: Option<Tensor>,
    /// Where the layer sits, for the LoRA adapters in force ([`super::lora`]).
    site: Option<Arc<LayerKey>>,
}

impl Linear {
    pub fn load(
        w: &Weights,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> std::result::Result<Self, LoadError> {
        let weight = w.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(w.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Ok(Self {
            inner: candle_nn::Linear::new(weight.clone(), bias.clone()),
            weight,
            bias,
            site: w
                .record_site(in_dim, out_dim, SiteKind::Linear)
                .map(Arc::new),
        })
    }

    /// When `x` tracks gradients, the frozen-weight op spares the backward
    /// pass the weight gradient (see [`super::frozen`]); adapters in force
    /// add their part.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let base = if x.track_op() {
            super::frozen::linear(x, &self.weight, self.bias.as_ref())?
        } else {
            self.inner.forward(x)?
        };
        match &self.site {
            Some(key) => super::lora::adapt(key, x, base),
            None => Ok(base),
        }
    }
}

/// A 2-D convolution with square kernel, stride and symmetric padding.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    /// A 1×1 convolution's place, for LoRA adapters over its channels.
    site: Option<Arc<LayerKey>>,
}

impl Conv2d {
    pub fn load(
        w: &Weights,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> std::result::Result<Self, LoadError> {
        let weight = w.get(&[out_ch, in_ch, kernel, kernel], "weight")?;
        let bias = Some(w.get(&[out_ch], "bias")?);
        let site = (kernel == 1 && stride == 1 && padding == 0)
            .then(|| w.record_site(in_ch, out_ch, SiteKind::Conv1x1))
            .flatten()
            .map(Arc::new);
        Ok(Self {
            weight,
            bias,
            padding,
            stride,
            site,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let base = if x.track_op() {
            super::frozen::conv2d(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.padding,
                self.stride,
            )?
        } else {
            super::frozen::conv2d_value(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.padding,
                self.stride,
            )?
        };
        match &self.site {
            Some(key) => super::lora::adapt_channels(key, x, base),
            None => Ok(base),
        }
    }
}

/// Normalisation statistics are computed in f32 for half-precision runs and
/// in the run dtype otherwise (f64 runs stay f64, which the gradient tests need).
fn stats_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// Group normalisation over `[B, C, H, W]` (statistics in f32 or wider).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    affine: super::fused::LazyAffine,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(
        w: &Weights,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> std::result::Result<Self, LoadError> {
        if groups == 0 || channels % groups != 0 {
            return Err(LoadError::UnsupportedLayout {
                path: "config.json".into(),
                message: format!("{channels} channels cannot be split into {groups} norm groups"),
            });
        }
        Ok(Self {
            weight: w.get(&[channels], "weight")?,
            bias: w.get(&[channels], "bias")?,
            affine: Default::default(),
            groups,
            eps,
        })
    }

    /// The fused CPU kernel, followed by SiLU when `silu`.
    fn fused(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let affine = self.affine.get(&self.weight, &self.bias)?;
        super::fused::group_norm(x, self.groups, affine, self.eps, silu)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if super::fused::applies(x) {
            return self.fused(x, false);
        }
        let dtype = x.dtype();
        let (b, c, h, w) = x.dims4()?;
        let xs =
            x.to_dtype(stats_dtype(dtype))?
                .reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centered = xs.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let normed = normed.reshape((b, c, h, w))?.to_dtype(dtype)?;
        normed
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

impl GroupNorm {
    /// `silu(group_norm(x))`, one fused op on CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if super::fused::applies(x) {
            return self.fused(x, true);
        }
        self.forward(x)?.silu()
    }
}

/// Layer normalisation over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    affine: super::fused::LazyAffine,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, dim: usize, eps: f64) -> std::result::Result<Self, LoadError> {
        Ok(Self {
            weight: w.get(&[dim], "weight")?,
            bias: w.get(&[dim], "bias")?,
            affine: Default::default(),
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.track_op() && x.dtype() == DType::F32 {
            let x = x.contiguous()?;
            return candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps as f32);
        }
        if super::fused::applies(x) {
            let affine = self.affine.get(&self.weight, &self.bias)?;
            return super::fused::layer_norm(x, affine, self.eps);
        }
        let dtype = x.dtype();
        let xs = x.to_dtype(stats_dtype(dtype))?;
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centered = xs.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension, differentiable when the input tracks gradients.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    if super::fused::applies(x) {
        return super::fused::softmax_last_dim(x, 1.0, None);
    }
    // The max is only a numerical shift; softmax is invariant to it, so no
    // gradient needs to flow through it.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

/// `x * sigmoid(1.702 x)`, CLIP's activation.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if x.track_op() && super::fused::applies(x) {
        return super::fused::quick_gelu(x);
    }
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

/// Largest score map (elements of `[B, H, q, k]`) computed in one piece;
/// bigger maps are computed in query chunks. At 512 px, SD's first
/// self-attention would otherwise hold 2×8×4096×4096 scores at once (1 GiB in
/// f32). A GPU takes bigger chunks (fewer launches): 128M scores, 256 MiB in f16.
fn max_scores(device: &candle_core::Device) -> usize {
    if device.is_cpu() {
        1 << 24
    } else {
        1 << 27
    }
}

/// Multi-head scaled dot-product attention on `[B, H, N, d]` tensors.
///
/// `upcast` computes the scores and softmax in f32 for half-precision runs
/// (diffusers' `upcast_attention`, needed by SD 2.x); training always does. `mask`, if given, is added
/// to the scores (broadcast over batch and heads). Large problems are sliced
/// over queries so memory stays bounded (the result is the same: each query
/// row's softmax is independent); with gradients, backward recomputes each
/// slice ([`super::sliced`]).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, h, nq, _) = q.dims4()?;
    let nk = k.dim(2)?;
    let tracked = q.track_op() || k.track_op() || v.track_op();
    // With gradients, half-precision scores and softmax are computed in f32 on
    // every device: the tracked softmax is composed of reductions that would
    // sum rows of up to 4096 (SDXL: 16384) probabilities in f16, and so would
    // the backward's `rowsum(P ⊙ dP)`. Inference uses the fused softmax, which
    // accumulates in f32 itself.
    let upcast = upcast || tracked;
    let total = b * h * nq * nk;
    let max_scores = max_scores(q.device());
    if total <= max_scores || mask.is_some() {
        return attention_full(q, k, v, scale, upcast, mask);
    }
    let rows = (max_scores / (b * h * nk)).max(1);
    if tracked {
        // Training: slices here too, with the probabilities recomputed in backward.
        return super::sliced::attention(q, k, v, scale, upcast, rows);
    }
    let mut outs = Vec::with_capacity(nq.div_ceil(rows));
    let mut start = 0;
    while start < nq {
        let len = rows.min(nq - start);
        outs.push(attention_full(
            &q.narrow(2, start, len)?,
            k,
            v,
            scale,
            upcast,
            None,
        )?);
        start += len;
    }
    Tensor::cat(&outs, 2)
}

fn attention_full(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let dtype = q.dtype();
    // Upcast means "raise half precision to f32"; an f64 run stays f64 (a
    // downcast would put f32 rounding into f64 gradient checks).
    let (q, k) = if upcast && is_half(dtype) {
        (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?)
    } else {
        (q.clone(), k.clone())
    };
    let nk = k.dim(2)?;
    let mask_fits = mask.is_none_or(|m| m.rank() == 2 && m.dim(1).ok() == Some(nk));
    let tracked = q.track_op() || k.track_op();
    let probs = if tracked && super::fused::applies(&q) && mask_fits {
        // Scale (and mask) folded into the fused softmax: fewer ops each way.
        super::fused::softmax_last_dim(&batched_matmul(&q, &k.t()?)?, scale, mask)?
    } else {
        // The scale on q (N×d), not on the N×N scores: one pass less over the map.
        let mut scores = batched_matmul(&(q * scale)?, &k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(&m.to_dtype(scores.dtype())?)?;
        }
        softmax_last_dim(&scores)?
    };
    let probs = probs.to_dtype(dtype)?;
    batched_matmul(&probs, v)
}

/// `[B, N, H*d]` → `[B, H, N, d]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    x.reshape((b, n, heads, c / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `[B, H, N, d]` → `[B, N, H*d]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, n, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, n, h * d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Training in f16 over long rows (4096 keys, SD 1.5's first attention at
    /// 512 px): the gradient is f64's to f16 rounding, because scores,
    /// softmax and the backward's row sums run in f32.
    #[test]
    fn half_precision_training_attention_sums_in_f32() {
        let d = Device::Cpu;
        let (nq, nk, dh) = (8, 4096, 8);
        let make =
            |shape: (usize, usize, usize, usize)| Tensor::randn(0f64, 1.0, shape, &d).unwrap();
        let (q, k, v) = (
            make((1, 1, nq, dh)),
            make((1, 1, nk, dh)),
            make((1, 1, nk, dh)),
        );
        let dout = make((1, 1, nq, dh));
        let grad_q = |dtype: DType| {
            let qv = candle_core::Var::from_tensor(&q.to_dtype(dtype).unwrap()).unwrap();
            let out = attention(
                qv.as_tensor(),
                &k.to_dtype(dtype).unwrap(),
                &v.to_dtype(dtype).unwrap(),
                0.35,
                false,
                None,
            )
            .unwrap();
            let loss = (out * dout.to_dtype(dtype).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let g = loss.backward().unwrap();
            g.get(qv.as_tensor()).unwrap().to_dtype(DType::F64).unwrap()
        };
        let want = grad_q(DType::F64);
        let got = grad_q(DType::F16);
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let err = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            err < 2e-2 * scale,
            "f16 gradient off by {err} (scale {scale})"
        );
    }

    #[test]
    fn sliced_attention_equals_full_attention() {
        let d = Device::Cpu;
        // 1×2×4100×4100 > the CPU's max_scores: the sliced path runs.
        let q = Tensor::randn(0f32, 1.0, (1, 2, 4100, 8), &d).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, 4100, 8), &d).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 4100, 8), &d).unwrap();
        let sliced = attention(&q, &k, &v, 0.35, false, None).unwrap();
        let full = attention_full(&q, &k, &v, 0.35, false, None).unwrap();
        let diff = (sliced - full)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn upcast_never_lowers_f64_precision() {
        // SD 2.x sets upcast_attention; an f64 run (the gradient checks) must
        // stay f64 through it, bit for bit the same as without the flag.
        let d = Device::Cpu;
        let q = Tensor::randn(0f64, 1.0, (1, 2, 16, 8), &d).unwrap();
        let k = Tensor::randn(0f64, 1.0, (1, 2, 16, 8), &d).unwrap();
        let v = Tensor::randn(0f64, 1.0, (1, 2, 16, 8), &d).unwrap();
        let with = attention(&q, &k, &v, 0.35, true, None).unwrap();
        let without = attention(&q, &k, &v, 0.35, false, None).unwrap();
        assert_eq!(with.dtype(), DType::F64);
        let with = with.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let without = without.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(with, without);
    }
}
