//! Fused CPU kernels for group norm, layer norm and softmax, with backward.
//!
//! candle's fused norm/softmax kernels have no backward, so training used to
//! build these from a dozen elementwise ops each; backward doubled that. On a
//! small model per-op overhead (allocation, strided iteration, thread wake-ups)
//! dominates, and these three layers were a large share of the step. Here each
//! is one op forward and one op backward, with statistics accumulated in f64.
//!
//! Only contiguous f32/f64 CPU tensors take these kernels (callers check with
//! [`applies`]); half precision and CUDA keep the composite path.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Whether the fused kernels handle this tensor.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// The contiguous slice of one CPU storage.
fn slice<'a, T: WithDType>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{what}: input is not contiguous"),
    }
}

/// Runs a kernel generic over the element type on the contiguous f32 or f64
/// data of one CPU storage: `on_f32_f64!(storage, layout, WHAT, |x| kernel(x))`.
macro_rules! on_f32_f64 {
    ($s:expr, $l:expr, $what:expr, |$x:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(v) => {
                let $x = slice(v, $l, $what)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(v) => {
                let $x = slice(v, $l, $what)?;
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: only f32/f64 on CPU", $what),
        }
    };
}

/// As [`on_f32_f64`] for two storages of the same dtype (a backward kernel's
/// input and output gradient).
macro_rules! on_f32_f64_pair {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $what:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(va), CpuStorage::F32(vb)) => {
                let ($a, $b) = (slice(va, $l1, $what)?, slice(vb, $l2, $what)?);
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(va), CpuStorage::F64(vb)) => {
                let ($a, $b) = (slice(va, $l1, $what)?, slice(vb, $l2, $what)?);
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: only f32/f64 on CPU, both the same", $what),
        }
    };
}

/// Above this many elements rows are spread over the thread pool.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Fills `out` row by row with `row(index, out_row)`, in parallel when large.
fn for_rows<T: Send>(out: &mut [T], row_len: usize, row: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() >= PARALLEL_ELEMENTS {
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, o)| row(r, o));
    } else {
        out.chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, o)| row(r, o));
    }
}

fn f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// `Σ f(i)` for `i < n` in f64 with eight independent partial sums: a single
/// accumulator chains every add on the previous one (float adds cannot be
/// reordered by the compiler), which made these reductions the kernels' bottleneck.
#[inline(always)]
fn lane_sum(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = n / 8 * 8;
    for base in (0..full).step_by(8) {
        for (lane, a) in acc.iter_mut().enumerate() {
            *a += f(base + lane);
        }
    }
    let mut total: f64 = acc.iter().sum();
    for i in full..n {
        total += f(i);
    }
    total
}

/// Normalisation over rows of `row_len` elements; the affine parameter of the
/// element at flat index `i` is `params[i / param_stride % params.len()]`.
#[derive(Clone)]
struct NormGeometry {
    row_len: usize,
    param_stride: usize,
    eps: f64,
    /// Apply SiLU to the normalised output (group norm → SiLU in every
    /// resnet block: one op instead of two, forward and backward).
    silu: bool,
}

#[inline(always)]
fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

impl NormGeometry {
    /// Mean and reciprocal standard deviation of one row (two passes, f64).
    fn stats<T: WithDType>(&self, row: &[T]) -> (f64, f64) {
        let n = row.len() as f64;
        let mean = lane_sum(row.len(), |i| row[i].to_f64()) / n;
        let var = lane_sum(row.len(), |i| {
            let d = row[i].to_f64() - mean;
            d * d
        }) / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }

    /// Calls `f(j, p)` for each element `j` of the row starting at flat index
    /// `base`, with `p` the index of its affine parameter (no division per element).
    #[inline(always)]
    fn for_each_param(&self, base: usize, params: usize, mut f: impl FnMut(usize, usize)) {
        let stride = self.param_stride;
        let mut p = (base / stride) % params;
        let mut left = stride - base % stride;
        for j in 0..self.row_len {
            f(j, p);
            left -= 1;
            if left == 0 {
                left = stride;
                p += 1;
                if p == params {
                    p = 0;
                }
            }
        }
    }

    fn forward<T: WithDType>(&self, x: &[T], weight: &[f64], bias: &[f64]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        for_rows(&mut out, self.row_len, |r, out_row| {
            let base = r * self.row_len;
            let xr = &x[base..base + self.row_len];
            let (mean, rstd) = self.stats(xr);
            let silu = self.silu;
            self.for_each_param(base, weight.len(), |j, p| {
                let scale = weight[p] * rstd;
                let n = xr[j].to_f64() * scale + (bias[p] - mean * scale);
                out_row[j] = T::from_f64(if silu { n * sigmoid(n) } else { n });
            });
        });
        out
    }

    /// `dx = rstd · (g − mean(g) − x̂ · mean(g · x̂))` with `g = dy · weight`
    /// (`dy` first taken through SiLU's derivative when the op applies it).
    fn backward<T: WithDType>(&self, x: &[T], dy: &[T], weight: &[f64], bias: &[f64]) -> Vec<T> {
        let n = self.row_len as f64;
        let mut out = vec![T::zero(); x.len()];
        for_rows(&mut out, self.row_len, |r, out_row| {
            let base = r * self.row_len;
            let range = base..base + self.row_len;
            let (xr, dyr) = (&x[range.clone()], &dy[range]);
            let (mean, rstd) = self.stats(xr);
            let silu = self.silu;
            // Gradient at the affine output, through SiLU if applied.
            let upstream = |j: usize, p: usize| {
                let d = dyr[j].to_f64();
                if !silu {
                    return d;
                }
                let n = (xr[j].to_f64() - mean) * rstd * weight[p] + bias[p];
                let s = sigmoid(n);
                d * s * (1.0 + n * (1.0 - s))
            };
            // Pass 1 keeps g in the output row (one SiLU derivative per element).
            let (mut sum_g, mut sum_gx) = (0.0, 0.0);
            self.for_each_param(base, weight.len(), |j, p| {
                let g = upstream(j, p) * weight[p];
                sum_g += g;
                sum_gx += g * (xr[j].to_f64() - mean) * rstd;
                out_row[j] = T::from_f64(g);
            });
            let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
            for (o, v) in out_row.iter_mut().zip(xr) {
                let hat = (v.to_f64() - mean) * rstd;
                *o = T::from_f64(rstd * (o.to_f64() - mean_g - hat * mean_gx));
            }
        });
        out
    }
}

/// A norm's affine parameters as f64, converted once per layer rather than
/// on every forward and backward call.
#[derive(Debug, Clone)]
pub struct Affine {
    weight: Arc<[f64]>,
    bias: Arc<[f64]>,
}

impl Affine {
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        Ok(Self {
            weight: f64_vec(weight)?.into(),
            bias: f64_vec(bias)?.into(),
        })
    }
}

/// An [`Affine`] made on first use, so a layer that never runs on the CPU
/// never converts its parameters.
#[derive(Debug, Clone, Default)]
pub struct LazyAffine(OnceLock<Affine>);

impl LazyAffine {
    pub fn get(&self, weight: &Tensor, bias: &Tensor) -> Result<&Affine> {
        if let Some(a) = self.0.get() {
            return Ok(a);
        }
        let a = Affine::new(weight, bias)?;
        Ok(self.0.get_or_init(|| a))
    }
}

struct NormOp {
    geometry: NormGeometry,
    affine: Affine,
}

impl CustomOp1 for NormOp {
    fn name(&self) -> &'static str {
        "fused-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused norm";
        let (w, b) = (&self.affine.weight, &self.affine.bias);
        let g = &self.geometry;
        let out = on_f32_f64!(s, l, WHAT, |x| g.forward(x, w, b));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(
            &grad,
            &NormBackward {
                geometry: self.geometry.clone(),
                affine: self.affine.clone(),
            },
        )?))
    }
}

struct NormBackward {
    geometry: NormGeometry,
    affine: Affine,
}

fn same_len(l1: &Layout, l2: &Layout, what: &str) -> Result<()> {
    if l1.shape().elem_count() != l2.shape().elem_count() {
        candle_core::bail!("{what}: {:?} vs {:?}", l1.shape(), l2.shape());
    }
    Ok(())
}

impl CustomOp2 for NormBackward {
    fn name(&self) -> &'static str {
        "fused-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused norm backward";
        same_len(l1, l2, WHAT)?;
        let (g, w, b) = (&self.geometry, &self.affine.weight, &self.affine.bias);
        let out = on_f32_f64_pair!(s1, l1, s2, l2, WHAT, |x, dy| g.backward(x, dy, w, b));
        Ok((out, l1.shape().clone()))
    }
}

/// Group norm of a contiguous `[B, C, H, W]` f32/f64 CPU tensor, followed by
/// SiLU when `silu`.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    affine: &Affine,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    if x.elem_count() == 0 || groups == 0 {
        return Ok(x.clone());
    }
    x.contiguous()?.apply_op1(NormOp {
        geometry: NormGeometry {
            row_len: (c / groups) * h * w,
            param_stride: h * w,
            eps,
            silu,
        },
        affine: affine.clone(),
    })
}

/// Layer norm over the last dimension of a contiguous f32/f64 CPU tensor.
pub fn layer_norm(x: &Tensor, affine: &Affine, eps: f64) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(1);
    if x.elem_count() == 0 {
        return Ok(x.clone());
    }
    x.contiguous()?.apply_op1(NormOp {
        geometry: NormGeometry {
            row_len: d,
            param_stride: 1,
            eps,
            silu: false,
        },
        affine: affine.clone(),
    })
}

struct Softmax {
    row_len: usize,
    /// Applied to the input first (attention's 1/√d): saves a scaling op.
    scale: f64,
    /// Added after scaling, row `r` using mask row `r % rows` (CLIP's causal
    /// mask, `[q, k]`, broadcast over batch and heads).
    mask: Option<Arc<Vec<f64>>>,
}

/// `e^x` for the `x ≤ 0` a softmax exponentiates (`x − max`), in the
/// element's own precision.
trait ExpNonPositive: WithDType {
    fn exp_nonpositive(self) -> Self;
}

impl ExpNonPositive for f32 {
    /// Cephes' `expf` polynomial with round-by-adding range reduction, and no
    /// libm call or branch, so the softmax row loop vectorises: the scalar
    /// `expf` call was the largest single cost of attention on CPU. Accurate to
    /// a couple of ulp (tested against `f32::exp`); `-inf` (a masked score) gives
    /// exactly 0 and NaN stays NaN.
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        // 1.5 · 2^23: adding it leaves round(v) in the low mantissa bits.
        const SHIFT: f32 = 12_582_912.0;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const LOWEST: f32 = -87.0;
        let x = self.clamp(LOWEST, 0.0);
        let t = x * std::f32::consts::LOG2_E + SHIFT;
        let n = t - SHIFT;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        let mantissa = p * (r * r) + r + 1.0;
        // `t`'s bits are 0x4B40_0000 + n; 2^n is n + 127 in the exponent field.
        let exponent = t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23;
        let y = mantissa * f32::from_bits(exponent);
        if self.is_nan() {
            self
        } else if self < LOWEST {
            0.0
        } else {
            y
        }
    }
}

impl ExpNonPositive for f64 {
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        self.exp()
    }
}

/// Max and sum over a row with eight independent lanes (a single running
/// max or sum chains every step on the previous one and does not vectorise).
#[inline(always)]
fn lanes<T: WithDType>(row: &[T], init: T, step: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = step(*a, *v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, v| step(a, *v));
    acc.iter().fold(tail, |a, v| step(a, *v))
}

fn softmax_rows<T: ExpNonPositive>(
    x: &[T],
    row_len: usize,
    scale: f64,
    mask: Option<&[f64]>,
) -> Vec<T> {
    let scale = T::from_f64(scale);
    let mask_rows = mask.map_or(1, |m| (m.len() / row_len).max(1));
    let mut out = vec![T::zero(); x.len()];
    for_rows(&mut out, row_len, |r, row| {
        let xr = &x[r * row_len..(r + 1) * row_len];
        match mask {
            Some(m) => {
                let mr = &m[(r % mask_rows) * row_len..][..row_len];
                for ((o, v), mv) in row.iter_mut().zip(xr).zip(mr) {
                    *o = *v * scale + T::from_f64(*mv);
                }
            }
            None => {
                for (o, v) in row.iter_mut().zip(xr) {
                    *o = *v * scale;
                }
            }
        }
        let max = lanes(row, row[0], |a, b| if b > a { b } else { a });
        for o in row.iter_mut() {
            *o = (*o - max).exp_nonpositive();
        }
        // The sum in the element type, in lanes: rows are short enough.
        let sum = lanes(row, T::zero(), |a, b| a + b);
        let inv = T::from_f64(1.0 / sum.to_f64());
        for o in row.iter_mut() {
            *o *= inv;
        }
    });
    out
}

/// `dx = scale · y · (dy − Σ dy·y)` per row.
fn softmax_backward_rows<T: WithDType>(y: &[T], dy: &[T], row_len: usize, scale: f64) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    for_rows(&mut out, row_len, |r, row| {
        let range = r * row_len..(r + 1) * row_len;
        let (yr, dyr) = (&y[range.clone()], &dy[range]);
        let dot = lane_sum(row_len, |i| yr[i].to_f64() * dyr[i].to_f64());
        for (o, (a, b)) in row.iter_mut().zip(yr.iter().zip(dyr)) {
            *o = T::from_f64(scale * a.to_f64() * (b.to_f64() - dot));
        }
    });
    out
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused softmax";
        let mask = self.mask.as_ref().map(|m| m.as_slice());
        let out = on_f32_f64!(s, l, WHAT, |x| softmax_rows(
            x,
            self.row_len,
            self.scale,
            mask
        ));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(
            &grad,
            &SoftmaxBackward {
                row_len: self.row_len,
                scale: self.scale,
            },
        )?))
    }
}

struct SoftmaxBackward {
    row_len: usize,
    scale: f64,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused softmax backward";
        same_len(l1, l2, WHAT)?;
        let (n, scale) = (self.row_len, self.scale);
        let out = on_f32_f64_pair!(s1, l1, s2, l2, WHAT, |y, dy| {
            softmax_backward_rows(y, dy, n, scale)
        });
        Ok((out, l1.shape().clone()))
    }
}

/// `softmax(scale · x + mask)` over the last dimension of a contiguous f32/f64
/// CPU tensor (`scale` > 0). `mask`, if given, is `[rows, k]` with `k` the last
/// dimension of `x`, and is repeated over the leading dimensions (an attention
/// mask `[q, k]` over batch and heads).
pub fn softmax_last_dim(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(1);
    if x.elem_count() == 0 {
        return Ok(x.clone());
    }
    let mask = match mask {
        Some(m) => {
            let (_, k) = m.dims2()?;
            if k != d {
                candle_core::bail!("softmax mask {:?} for rows of {d}", m.dims());
            }
            Some(Arc::new(f64_vec(m)?))
        }
        None => None,
    };
    x.contiguous()?.apply_op1(Softmax {
        row_len: d,
        scale,
        mask,
    })
}

/// `gelu(x) = x · Φ(x)` (erf form) and its derivative `Φ(x) + x · φ(x)`.
#[inline(always)]
fn gelu_and_grad(v: f64) -> (f64, f64) {
    let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(v * std::f64::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (v * cdf, cdf + v * pdf)
}

/// GEGLU: the last dimension is `[a, b]`; the output is `a · gelu(b)`.
struct Geglu {
    half: usize,
}

fn geglu_rows<T: WithDType>(h: &[T], half: usize) -> Vec<T> {
    let mut out = vec![T::zero(); h.len() / 2];
    for_rows(&mut out, half, |r, row| {
        let (a, b) = h[2 * r * half..2 * (r + 1) * half].split_at(half);
        for ((o, a), b) in row.iter_mut().zip(a).zip(b) {
            *o = T::from_f64(a.to_f64() * gelu_and_grad(b.to_f64()).0);
        }
    });
    out
}

fn geglu_backward_rows<T: WithDType>(h: &[T], dy: &[T], half: usize) -> Vec<T> {
    let mut out = vec![T::zero(); h.len()];
    for_rows(&mut out, 2 * half, |r, row| {
        let (a, b) = h[2 * r * half..2 * (r + 1) * half].split_at(half);
        let d = &dy[r * half..(r + 1) * half];
        let (da, db) = row.split_at_mut(half);
        for j in 0..half {
            let (g, dg) = gelu_and_grad(b[j].to_f64());
            da[j] = T::from_f64(d[j].to_f64() * g);
            db[j] = T::from_f64(d[j].to_f64() * a[j].to_f64() * dg);
        }
    });
    out
}

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "fused-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused geglu";
        let out = on_f32_f64!(s, l, WHAT, |h| geglu_rows(h, self.half));
        let mut dims = l.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.half;
        }
        Ok((out, Shape::from(dims)))
    }

    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(h.apply_op2_no_bwd(
            &grad,
            &GegluBackward { half: self.half },
        )?))
    }
}

struct GegluBackward {
    half: usize,
}

impl CustomOp2 for GegluBackward {
    fn name(&self) -> &'static str {
        "fused-geglu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused geglu backward";
        if l1.shape().elem_count() != 2 * l2.shape().elem_count() {
            candle_core::bail!("{WHAT}: {:?} vs {:?}", l1.shape(), l2.shape());
        }
        let half = self.half;
        let out = on_f32_f64_pair!(s1, l1, s2, l2, WHAT, |h, dy| geglu_backward_rows(
            h, dy, half
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// `a · gelu_erf(b)` where the last dimension of `h` is `[a, b]` (even length).
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let d = h.dims().last().copied().unwrap_or(0);
    if d % 2 != 0 {
        candle_core::bail!("geglu: odd last dimension {d}");
    }
    if h.elem_count() == 0 {
        return h.narrow(h.rank() - 1, 0, d / 2);
    }
    h.contiguous()?.apply_op1(Geglu { half: d / 2 })
}

/// CLIP's `quick_gelu`, `x · σ(1.702 x)`, with derivative `σ + 1.702 x σ (1 − σ)`.
struct QuickGelu;

const QUICK_GELU_K: f64 = 1.702;

fn quick_gelu_rows<T: WithDType>(x: &[T]) -> Vec<T> {
    x.iter()
        .map(|v| {
            let v = v.to_f64();
            T::from_f64(v * sigmoid(QUICK_GELU_K * v))
        })
        .collect()
}

fn quick_gelu_backward_rows<T: WithDType>(x: &[T], dy: &[T]) -> Vec<T> {
    x.iter()
        .zip(dy)
        .map(|(v, d)| {
            let v = v.to_f64();
            let s = sigmoid(QUICK_GELU_K * v);
            T::from_f64(d.to_f64() * (s + QUICK_GELU_K * v * s * (1.0 - s)))
        })
        .collect()
}

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "fused-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused quick_gelu";
        let out = on_f32_f64!(s, l, WHAT, |x| quick_gelu_rows(x));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &QuickGeluBackward,
        )?))
    }
}

struct QuickGeluBackward;

impl CustomOp2 for QuickGeluBackward {
    fn name(&self) -> &'static str {
        "fused-quick-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "fused quick_gelu backward";
        same_len(l1, l2, WHAT)?;
        let out = on_f32_f64_pair!(s1, l1, s2, l2, WHAT, |x, dy| quick_gelu_backward_rows(
            x, dy
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// `x · σ(1.702 x)` of a contiguous f32/f64 CPU tensor.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(QuickGelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::testutil::{assert_same_value_and_gradients as check, max_diff};
    use candle_core::{Device, Var, D};

    fn composite_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let c = x.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        c.broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(w)
            .unwrap()
            .broadcast_add(b)
            .unwrap()
    }

    /// Value and input gradient equal the composite formulation (f64).
    #[test]
    fn layer_norm_matches_composite() {
        let d = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 5, 7), &d).unwrap()).unwrap();
        let w = Tensor::randn(1f64, 0.5, 7, &d).unwrap();
        let b = Tensor::randn(0f64, 0.5, 7, &d).unwrap();
        let fused = layer_norm(x.as_tensor(), &Affine::new(&w, &b).unwrap(), 1e-5).unwrap();
        let slow = composite_norm(x.as_tensor(), &w, &b, 1e-5);
        check(&[&x], &fused, &slow, 1e-12, 1e-12);
    }

    #[test]
    fn group_norm_matches_composite() {
        let d = Device::Cpu;
        let (bs, c, h, wd, groups) = (2, 8, 3, 4, 4);
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (bs, c, h, wd), &d).unwrap()).unwrap();
        let w = Tensor::randn(1f64, 0.5, c, &d).unwrap();
        let b = Tensor::randn(0f64, 0.5, c, &d).unwrap();
        let fused = group_norm(
            x.as_tensor(),
            groups,
            &Affine::new(&w, &b).unwrap(),
            1e-5,
            false,
        )
        .unwrap();
        let grouped = x
            .as_tensor()
            .reshape((bs, groups, c / groups * h * wd))
            .unwrap();
        let ones = Tensor::ones(1, DType::F64, &d).unwrap();
        let zeros = Tensor::zeros(1, DType::F64, &d).unwrap();
        let slow = composite_norm(&grouped, &ones, &zeros, 1e-5)
            .reshape((bs, c, h, wd))
            .unwrap()
            .broadcast_mul(&w.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        check(&[&x], &fused, &slow, 1e-12, 1e-12);
    }

    #[test]
    fn softmax_matches_composite() {
        let d = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 3.0, (2, 3, 6), &d).unwrap()).unwrap();
        let fused = softmax_last_dim(x.as_tensor(), 1.0, None).unwrap();
        let e = x.as_tensor().exp().unwrap();
        let slow = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        check(&[&x], &fused, &slow, 1e-12, 1e-12);
    }

    /// The SiLU-fused group norm and the scaled softmax against the plain ops.
    #[test]
    fn fused_silu_and_softmax_scale_match_composite() {
        let d = Device::Cpu;
        let (bs, c, h, wd) = (2, 4, 3, 3);
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (bs, c, h, wd), &d).unwrap()).unwrap();
        let w = Tensor::randn(1f64, 0.5, c, &d).unwrap();
        let b = Tensor::randn(0f64, 0.5, c, &d).unwrap();
        let fused =
            group_norm(x.as_tensor(), 2, &Affine::new(&w, &b).unwrap(), 1e-5, true).unwrap();
        let slow = group_norm(x.as_tensor(), 2, &Affine::new(&w, &b).unwrap(), 1e-5, false)
            .unwrap()
            .silu()
            .unwrap();
        check(&[&x], &fused, &slow, 1e-12, 1e-12);

        let y = Var::from_tensor(&Tensor::randn(0f64, 3.0, (2, 5), &d).unwrap()).unwrap();
        let fused = softmax_last_dim(y.as_tensor(), 0.35, None).unwrap();
        let slow = softmax_last_dim(&(y.as_tensor() * 0.35).unwrap(), 1.0, None).unwrap();
        check(&[&y], &fused, &slow, 1e-12, 1e-12);
    }

    #[test]
    fn geglu_matches_composite() {
        let d = Device::Cpu;
        let h = Var::from_tensor(&Tensor::randn(0f64, 2.0, (2, 3, 8), &d).unwrap()).unwrap();
        let fused = geglu(h.as_tensor()).unwrap();
        let t = h.as_tensor();
        let slow =
            (t.narrow(2, 0, 4).unwrap() * t.narrow(2, 4, 4).unwrap().gelu_erf().unwrap()).unwrap();
        // candle's gelu_erf backward rounds 1/√(2π) to 0.398942; ours is exact.
        check(&[&h], &fused, &slow, 1e-12, 1e-5);
    }

    /// CLIP's pieces: the causal-masked scaled softmax and quick_gelu.
    #[test]
    fn masked_softmax_and_quick_gelu_match_composite() {
        let d = Device::Cpu;
        let t = 5;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (2, 3, t, t), &d).unwrap()).unwrap();
        let mask: Vec<f64> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &d).unwrap();
        let fused = softmax_last_dim(x.as_tensor(), 0.5, Some(&mask)).unwrap();
        let scores = (x.as_tensor() * 0.5).unwrap().broadcast_add(&mask).unwrap();
        let e = scores.exp().unwrap();
        let slow = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        check(&[&x], &fused, &slow, 1e-12, 1e-12);

        let y = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 7), &d).unwrap()).unwrap();
        let fused = quick_gelu(y.as_tensor()).unwrap();
        let yt = y.as_tensor();
        let slow = (yt * candle_nn::ops::sigmoid(&(yt * 1.702).unwrap()).unwrap()).unwrap();
        check(&[&y], &fused, &slow, 1e-12, 1e-12);
    }

    /// f32 in, f32 out, same values as f64 to f32 precision.
    #[test]
    fn vectorisable_exp_matches_libm() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let want = x.exp() as f64;
            let got = x.exp_nonpositive() as f64;
            if want > 1e-37 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert!(got.abs() <= 2e-37, "exp({x}) = {got}, want {want}");
            }
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "worst relative error {worst}"
        );
        assert_eq!(f32::NEG_INFINITY.exp_nonpositive(), 0.0);
        assert!(f32::NAN.exp_nonpositive().is_nan());
        assert_eq!(0.0f32.exp_nonpositive(), 1.0);
    }

    #[test]
    fn f32_keeps_its_dtype() {
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 4, 2, 2), &d).unwrap();
        let w = Tensor::ones(4, DType::F32, &d).unwrap();
        let b = Tensor::zeros(4, DType::F32, &d).unwrap();
        let y = group_norm(&x, 2, &Affine::new(&w, &b).unwrap(), 1e-5, false).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let y64 = group_norm(
            &x.to_dtype(DType::F64).unwrap(),
            2,
            &Affine::new(&w, &b).unwrap(),
            1e-5,
            false,
        )
        .unwrap();
        assert!(max_diff(&y.to_dtype(DType::F64).unwrap(), &y64) < 1e-6);
    }
}
