//! Linear and convolution layers with frozen weights, for training through
//! them. candle's backward computes and stores a gradient for every argument of
//! a matmul or convolution, frozen weights included: about 3× the backward cost
//! and 2× the memory on an SD-sized UNet. These custom ops return only the
//! input's gradient.
//!
//! - Matmul: a `CustomOp2` over (x, Wᵀ) that calls the backend's matmul itself
//!   and whose backward yields `grad · W` for x and nothing for the weight.
//! - Convolution: the forward value is computed on a detached input (on the
//!   CPU as im2col + one gemm, elsewhere by candle's kernel) and handed to a
//!   `CustomOp1` on x, which moves it out as its own output; its backward is
//!   the transposed convolution without the kernel gradient (on the CPU one
//!   gemm + col2im).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor,
};

struct FrozenMatmul;

fn matmul_dims(l1: &Layout, l2: &Layout) -> Result<((usize, usize, usize, usize), Shape)> {
    let (m, k) = l1.shape().dims2()?;
    let (k2, n) = l2.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("frozen matmul: {:?} × {:?}", l1.shape(), l2.shape());
    }
    Ok(((1, m, n, k), Shape::from((m, n))))
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (bmnk, shape) = matmul_dims(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, l1, l2)?, shape))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (bmnk, shape) = matmul_dims(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, l1, l2)?, shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&w_t.t()?)?), None))
    }
}

/// `x · Wᵀ (+ b)` over the last dimension of `x` (any leading dims), with a
/// gradient for `x` only. `weight` is `[out, in]`.
///
/// With a bias the value is computed on a detached input and handed out by a
/// [`Precomputed`] op: a separate bias add would cost an op forward and, in
/// candle's backward, a zero gradient allocated and summed for the bias.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if let Some(b) = bias {
        let value = x
            .detach()
            .broadcast_matmul(&weight.t()?)?
            .broadcast_add(b)?
            .contiguous()?;
        return x.apply_op1(Precomputed::new(
            value,
            InputGrad::Linear {
                weight: weight.clone(),
            },
        ));
    }
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let m = x.elem_count() / k.max(1);
    let x2 = x.contiguous()?.reshape((m, k))?;
    let y = x2.apply_op2(&weight.t()?, FrozenMatmul)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = weight.dim(0)?;
    }
    y.reshape(out)
}

/// How a [`Precomputed`] op maps the output gradient to the input's.
enum InputGrad {
    Conv {
        kernel: Tensor,
        padding: usize,
        stride: usize,
    },
    Linear {
        weight: Tensor,
    },
}

/// Hands a precomputed value out as the op's output (moved: the op keeps no
/// copy); its backward yields only the input gradient.
struct Precomputed {
    value: Mutex<Option<Tensor>>,
    grad: InputGrad,
}

impl Precomputed {
    fn new(value: Tensor, grad: InputGrad) -> Self {
        Self {
            value: Mutex::new(Some(value)),
            grad,
        }
    }

    fn take(&self) -> Result<Tensor> {
        take_value(&self.value)
    }
}

/// Moves a precomputed value out of its slot (a custom op's forward runs once).
pub(crate) fn take_value(slot: &Mutex<Option<Tensor>>) -> Result<Tensor> {
    slot.lock()
        .map_err(|_| candle_core::Error::Msg("precomputed value: poisoned".into()))?
        .take()
        .ok_or_else(|| candle_core::Error::Msg("precomputed value: forward ran twice".into()))
}

/// A precomputed CPU value as a custom op's output storage.
pub(crate) fn cpu_output(value: &Tensor) -> Result<(CpuStorage, Shape)> {
    let (storage, layout) = value.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
        _ => candle_core::bail!("precomputed value on another device"),
    }
}

/// A precomputed CUDA value as a custom op's output storage.
pub(crate) fn cuda_output(value: &Tensor) -> Result<(CudaStorage, Shape)> {
    let (storage, layout) = value.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
        _ => candle_core::bail!("precomputed value on another device"),
    }
}

impl CustomOp1 for Precomputed {
    fn name(&self) -> &'static str {
        "frozen-precomputed"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_output(&self.take()?)
    }

    fn cuda_fwd(&self, _s: &CudaStorage, _l: &Layout) -> Result<(CudaStorage, Shape)> {
        cuda_output(&self.take()?)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (kernel, padding, stride) = match &self.grad {
            InputGrad::Conv {
                kernel,
                padding,
                stride,
            } => (kernel, *padding, *stride),
            InputGrad::Linear { weight } => {
                let out = weight.dim(0)?;
                let m = grad.elem_count() / out.max(1);
                let dx = grad.contiguous()?.reshape((m, out))?.matmul(weight)?;
                return Ok(Some(dx.reshape(x.dims())?));
            }
        };
        self.conv_bwd(x, grad, kernel, padding, stride).map(Some)
    }
}

impl Precomputed {
    fn conv_bwd(
        &self,
        x: &Tensor,
        grad: &Tensor,
        kernel: &Tensor,
        padding: usize,
        stride: usize,
    ) -> Result<Tensor> {
        if gemm_conv_applies(grad, x.dims4()?, kernel, padding, stride)? {
            return conv_input_grad_gemm(x.dims4()?, grad, kernel, padding, stride);
        }
        conv_input_grad_by_convolution(x.dims4()?, grad, kernel, padding, stride)
    }
}

/// The input gradient of a convolution with the device's forward kernels
/// (CUDA): a 1×1 convolution's is one matmul `Wᵀ · dY`; a stride-1
/// convolution's is the convolution of `dY` with the kernel transposed
/// (in/out) and flipped, padded by `k − 1 − p` (im2col + cuBLAS, where candle's
/// CUDA transposed convolution is a naive per-output loop). Strided ones (SD's
/// three downsamplers) use the transposed convolution.
fn conv_input_grad_by_convolution(
    x_dims: (usize, usize, usize, usize),
    grad: &Tensor,
    kernel: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let (b, c_in, h, _) = x_dims;
    let (_, c_out, ho, wo) = grad.dims4()?;
    let (_, _, k_h, k_w) = kernel.dims4()?;
    if stride == 1 && k_h * k_w == 1 && padding == 0 {
        let w_t = kernel.reshape((c_out, c_in))?.t()?;
        let dy = grad.contiguous()?.reshape((b, c_out, ho * wo))?;
        return w_t.broadcast_left(b)?.matmul(&dy)?.reshape(x_dims);
    }
    if stride == 1 && k_h == k_w && padding < k_h {
        let flip = |t: &Tensor, dim: usize, n: usize| -> Result<Tensor> {
            let rev: Vec<u32> = (0..n as u32).rev().collect();
            t.index_select(&Tensor::new(rev.as_slice(), t.device())?, dim)
        };
        let flipped = flip(
            &flip(&kernel.transpose(0, 1)?.contiguous()?, 2, k_h)?,
            3,
            k_w,
        )?;
        let dx = grad.conv2d(&flipped.contiguous()?, k_h - 1 - padding, 1, 1, 1)?;
        if dx.dims4()? == x_dims {
            return Ok(dx);
        }
    }
    // As candle's own conv2d backward, minus the kernel gradient (candle takes
    // one output padding for both sides: the height's).
    let out_size = (ho - 1) * stride + (k_h - 1) + 1 - 2 * padding;
    let out_padding = h - out_size;
    grad.conv_transpose2d(kernel, padding, out_padding, stride, 1)
}

/// The input gradient of a convolution as one gemm and a col2im (CPU).
///
/// `cols = Wᵀ · dY` per image (`[C·k·k, Ho·Wo]`), then every column entry is
/// added back to the input pixel it was read from. candle's transposed
/// convolution computes each output element as its own dot product, with a
/// thread-pool dispatch per kernel tap: several times slower on SD's layers.
fn conv_input_grad_gemm(
    x_dims: (usize, usize, usize, usize),
    grad: &Tensor,
    kernel: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let (b, c_out, ho, wo) = grad.dims4()?;
    let (_, c_in, k_h, k_w) = kernel.dims4()?;
    let w_t = kernel.reshape((c_out, c_in * k_h * k_w))?.t()?;
    let dy = grad.reshape((b, c_out, ho * wo))?;
    let cols = w_t.broadcast_left(b)?.matmul(&dy)?;
    cols.apply_op1_no_bwd(&PatchOp(
        Patches {
            x_dims,
            k: (k_h, k_w),
            out: (ho, wo),
            padding,
            stride,
        },
        Direction::Col2Im,
    ))
}

/// A convolution's value on CPU as one im2col and one batched gemm,
/// `W [C_out, C·k·k] · cols [C·k·k, Ho·Wo]` per image, which lands in NCHW
/// order as it is (no output transpose). candle's tiled kernel gathers every
/// patch element with its own bounds checks and scatters the result back: it
/// was the largest single cost of the tiny model's forward.
fn conv_value_gemm(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (b, c_in, h, w) = x.dims4()?;
    let (c_out, _, k_h, k_w) = kernel.dims4()?;
    let (ho, wo) = (
        conv_out_len(h, k_h, padding, stride),
        conv_out_len(w, k_w, padding, stride),
    );
    let cols = if k_h * k_w == 1 && padding == 0 && stride == 1 {
        // A 1×1 convolution reads each pixel once: the input is its own cols.
        x.reshape((b, c_in, h * w))?
    } else {
        x.apply_op1_no_bwd(&PatchOp(
            Patches {
                x_dims: (b, c_in, h, w),
                k: (k_h, k_w),
                out: (ho, wo),
                padding,
                stride,
            },
            Direction::Im2Col,
        ))?
    };
    kernel
        .reshape((c_out, c_in * k_h * k_w))?
        .broadcast_left(b)?
        .matmul(&cols)?
        .reshape((b, c_out, ho, wo))
}

/// A convolution's output length along one dimension of `n` input pixels.
fn conv_out_len(n: usize, k: usize, padding: usize, stride: usize) -> usize {
    (n + 2 * padding - k) / stride + 1
}

/// Where a convolution reads its input: for every image and channel, the
/// `k_h·k_w` rows of `Ho·Wo` column entries (im2col's layout,
/// `[B, C·k_h·k_w, Ho·Wo]`). Im2col copies pixels into it, col2im adds it back.
struct Patches {
    x_dims: (usize, usize, usize, usize),
    k: (usize, usize),
    out: (usize, usize),
    padding: usize,
    stride: usize,
}

impl Patches {
    fn cols_len(&self) -> usize {
        let (b, c, _, _) = self.x_dims;
        b * c * self.k.0 * self.k.1 * self.out.0 * self.out.1
    }

    /// Calls `f(col_start, pixel_start, len)` for every run of column entries
    /// of one (image, channel) that read input pixels (`stride` apart) of one
    /// input row; entries that read padding are never visited.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (_, _, h, w) = self.x_dims;
        let (k_h, k_w) = self.k;
        let (ho, wo) = self.out;
        let (pad, s) = (self.padding, self.stride);
        for kh in 0..k_h {
            for kw in 0..k_w {
                // ix = ox·s + kw − pad must lie in [0, w).
                let ox_lo = pad.saturating_sub(kw).div_ceil(s);
                let ox_hi = match (w + pad).checked_sub(kw + 1) {
                    Some(last) => (last / s + 1).min(wo),
                    None => 0,
                };
                if ox_lo >= ox_hi {
                    continue;
                }
                let row = (kh * k_w + kw) * ho * wo;
                for oy in 0..ho {
                    let iy = oy * s + kh;
                    if iy < pad || iy - pad >= h {
                        continue;
                    }
                    let ix = ox_lo * s + kw - pad;
                    f(row + oy * wo + ox_lo, (iy - pad) * w + ix, ox_hi - ox_lo);
                }
            }
        }
    }

    /// Runs `per_channel(bc, out)` over `out` split into one chunk per
    /// (image, channel), on the thread pool when large.
    fn per_channel<T: Send>(
        out: &mut [T],
        chunk: usize,
        per_channel: impl Fn(usize, &mut [T]) + Sync,
    ) {
        use rayon::prelude::*;
        if out.len() >= 1 << 16 {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(bc, o)| per_channel(bc, o));
        } else {
            out.chunks_mut(chunk)
                .enumerate()
                .for_each(|(bc, o)| per_channel(bc, o));
        }
    }
}

/// Which way a [`PatchOp`] moves values between pixels and column entries.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// im2col: `[B, C, H, W]` → `[B, C·k_h·k_w, Ho·Wo]` (padding reads as 0).
    Im2Col,
    /// col2im, im2col's adjoint: every column entry is added to the pixel it reads.
    Col2Im,
}

struct PatchOp(Patches, Direction);

impl PatchOp {
    fn input_len(&self) -> usize {
        let (b, c, h, w) = self.0.x_dims;
        match self.1 {
            Direction::Im2Col => b * c * h * w,
            Direction::Col2Im => self.0.cols_len(),
        }
    }

    fn output_shape(&self) -> Shape {
        let p = &self.0;
        let (b, c, _, _) = p.x_dims;
        match self.1 {
            Direction::Im2Col => Shape::from((b, c * p.k.0 * p.k.1, p.out.0 * p.out.1)),
            Direction::Col2Im => Shape::from(p.x_dims),
        }
    }

    fn run<T: candle_core::WithDType>(&self, input: &[T]) -> Vec<T> {
        let p = &self.0;
        let plane = p.x_dims.2 * p.x_dims.3;
        let per_channel = p.k.0 * p.k.1 * p.out.0 * p.out.1;
        let s = p.stride;
        match self.1 {
            Direction::Im2Col => {
                let mut cols = vec![T::zero(); p.cols_len()];
                Patches::per_channel(&mut cols, per_channel, |bc, out| {
                    let src = &input[bc * plane..(bc + 1) * plane];
                    p.for_each_run(|col, pixel, len| {
                        let dst = &mut out[col..col + len];
                        if s == 1 {
                            dst.copy_from_slice(&src[pixel..pixel + len]);
                        } else {
                            for (j, d) in dst.iter_mut().enumerate() {
                                *d = src[pixel + j * s];
                            }
                        }
                    });
                });
                cols
            }
            Direction::Col2Im => {
                let mut dx = vec![T::zero(); self.output_shape().elem_count()];
                Patches::per_channel(&mut dx, plane, |bc, out| {
                    let src = &input[bc * per_channel..(bc + 1) * per_channel];
                    p.for_each_run(|col, pixel, len| {
                        let src = &src[col..col + len];
                        if s == 1 {
                            for (d, v) in out[pixel..pixel + len].iter_mut().zip(src) {
                                *d += *v;
                            }
                        } else {
                            for (j, v) in src.iter().enumerate() {
                                out[pixel + j * s] += *v;
                            }
                        }
                    });
                });
                dx
            }
        }
    }
}

impl CustomOp1 for PatchOp {
    fn name(&self) -> &'static str {
        match self.1 {
            Direction::Im2Col => "im2col",
            Direction::Col2Im => "col2im",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("{name}: input is not contiguous");
        };
        let need = self.input_len();
        if end - start != need {
            candle_core::bail!("{name}: {} input elements, expected {need}", end - start);
        }
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.run(&v[start..end])),
            CpuStorage::F64(v) => CpuStorage::F64(self.run(&v[start..end])),
            _ => candle_core::bail!("{name}: only f32/f64 on CPU"),
        };
        Ok((out, self.output_shape()))
    }
}

/// The largest im2col buffer the gemm path builds (64 Mi elements, 256 MiB in
/// f32). A VAE layer at 512 px would need over a GiB: its value is computed in
/// bands of output rows ([`conv_value_in_bands`]) of [`IM2COL_BAND_ELEMENTS`].
const IM2COL_MAX_ELEMENTS: usize = 1 << 26;

/// The column buffer of one band (16 Mi elements, 64 MiB in f32): the VAE
/// decoder's peak memory stays below training's, and a band is still hundreds
/// of output rows wide for the gemm.
const IM2COL_BAND_ELEMENTS: usize = 1 << 24;

fn im2col_len(
    (b, c_in, h, w): (usize, usize, usize, usize),
    (_, _, k_h, k_w): (usize, usize, usize, usize),
    padding: usize,
    stride: usize,
) -> usize {
    if k_h * k_w == 1 && padding == 0 && stride == 1 {
        return 0; // the input is used as it is
    }
    let ho = (h + 2 * padding).saturating_sub(k_h) / stride.max(1) + 1;
    let wo = (w + 2 * padding).saturating_sub(k_w) / stride.max(1) + 1;
    b * c_in * k_h * k_w * ho * wo
}

/// Whether a convolution computed on `t`'s device and dtype can use the
/// im2col/col2im gemm kernels (CPU, f32/f64, a kernel of the same dtype).
fn gemm_kernels_apply(t: &Tensor, kernel: &Tensor) -> bool {
    crate::sd::fused::applies(t) && t.dtype() == kernel.dtype()
}

/// As [`gemm_kernels_apply`], and the whole column buffer stays moderate (the
/// input gradient's col2im has no banded form).
fn gemm_conv_applies(
    t: &Tensor,
    x_dims: (usize, usize, usize, usize),
    kernel: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<bool> {
    Ok(gemm_kernels_apply(t, kernel)
        && im2col_len(x_dims, kernel.dims4()?, padding, stride) <= IM2COL_MAX_ELEMENTS)
}

/// A large convolution's value as im2col + gemm over bands of output rows,
/// each band's column buffer at most `max_cols` elements: the VAE's
/// full-resolution layers, where candle's tiled kernel took about twice as
/// long. The input is zero-padded once; each band reads the padded rows its
/// outputs need (`stride·rows + k − stride` of them).
fn conv_value_in_bands(
    x: &Tensor,
    kernel: &Tensor,
    padding: usize,
    stride: usize,
    max_cols: usize,
) -> Result<Tensor> {
    let (b, c_in, h, w) = x.dims4()?;
    let (_, _, k_h, k_w) = kernel.dims4()?;
    let (ho, wo) = (
        conv_out_len(h, k_h, padding, stride),
        conv_out_len(w, k_w, padding, stride),
    );
    let per_row = b * c_in * k_h * k_w * wo;
    let rows = (max_cols / per_row.max(1)).clamp(1, ho);
    let padded = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?;
    let mut bands = Vec::with_capacity(ho.div_ceil(rows));
    let mut first = 0;
    while first < ho {
        let n = rows.min(ho - first);
        let band = padded
            .narrow(2, first * stride, (n - 1) * stride + k_h)?
            .contiguous()?;
        bands.push(conv_value_gemm(&band, kernel, 0, stride)?);
        first += n;
    }
    Tensor::cat(&bands, 2)
}

/// A convolution's value (+ bias), frozen or not: im2col + gemm on CPU (in
/// bands of output rows when one column buffer would be too large), candle's
/// kernel elsewhere.
pub fn conv2d_value(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let value = if !gemm_kernels_apply(x, kernel) {
        x.conv2d(kernel, padding, stride, 1, 1)?
    } else if im2col_len(x.dims4()?, kernel.dims4()?, padding, stride) <= IM2COL_MAX_ELEMENTS {
        conv_value_gemm(&x.contiguous()?, kernel, padding, stride)?
    } else {
        conv_value_in_bands(x, kernel, padding, stride, IM2COL_BAND_ELEMENTS)?
    };
    match bias {
        Some(b) => value.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(value),
    }
}

/// 2-D convolution (+ bias) with a frozen kernel and a gradient for `x` only.
pub fn conv2d(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let value = conv2d_value(&x.detach(), kernel, bias, padding, stride)?;
    x.apply_op1(Precomputed::new(
        value.contiguous()?,
        InputGrad::Conv {
            kernel: kernel.clone(),
            padding,
            stride,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::testutil::assert_same_value_and_gradients as check;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_linear_matches_plain_matmul_in_value_and_input_gradient() {
        let d = Device::Cpu;
        let x0 = Tensor::randn(0f64, 1.0, (2, 5, 7), &d).unwrap();
        let w = Tensor::randn(0f64, 1.0, (3, 7), &d).unwrap();
        let b = Tensor::randn(0f64, 1.0, 3, &d).unwrap();
        for bias in [None, Some(&b)] {
            let v = Var::from_tensor(&x0).unwrap();
            let frozen = linear(v.as_tensor(), &w, bias).unwrap();
            let mut plain = v.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
            if let Some(b) = bias {
                plain = plain.broadcast_add(b).unwrap();
            }
            let g = check(&[&v], &frozen, &plain, 1e-12, 1e-12);
            // No gradient is produced for the frozen weight or bias.
            assert!(g.get(&w).is_none());
            assert!(g.get(&b).is_none());
        }
    }

    /// (kernel, padding, stride, input size): 1×1, same-size, unpadded,
    /// over-padded and strided convolutions.
    const CONV_CASES: [(usize, usize, usize, usize); 9] = [
        (3, 1, 1, 8),
        (1, 0, 1, 8),
        (3, 0, 1, 7),
        (5, 2, 1, 6),
        (3, 2, 1, 5),
        (3, 1, 2, 8),
        (3, 0, 2, 9),
        (5, 2, 2, 7),
        (3, 1, 3, 10),
    ];

    #[test]
    fn frozen_conv_matches_plain_conv_in_value_and_input_gradient() {
        let d = Device::Cpu;
        for (k, pad, stride, hw) in CONV_CASES {
            let x0 = Tensor::randn(0f64, 1.0, (2, 4, hw, hw), &d).unwrap();
            let w = Tensor::randn(0f64, 1.0, (6, 4, k, k), &d).unwrap();
            let v = Var::from_tensor(&x0).unwrap();
            let bias = Tensor::randn(0f64, 1.0, 6, &d).unwrap();
            let frozen = conv2d(v.as_tensor(), &w, Some(&bias), pad, stride).unwrap();
            let plain = v
                .as_tensor()
                .conv2d(&w, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 6, 1, 1)).unwrap())
                .unwrap();
            let g = check(&[&v], &frozen, &plain, 1e-12, 1e-10);
            assert!(g.get(&w).is_none());
        }
    }

    /// Convolutions too large for one column buffer are computed in bands of
    /// output rows (here forced to one to three rows a band) and equal candle's.
    #[test]
    fn banded_conv_value_matches_plain_conv() {
        let d = Device::Cpu;
        for (k, pad, stride, hw) in CONV_CASES {
            let x = Tensor::randn(0f64, 1.0, (2, 4, hw, hw), &d).unwrap();
            let w = Tensor::randn(0f64, 1.0, (6, 4, k, k), &d).unwrap();
            let want = x.conv2d(&w, pad, stride, 1, 1).unwrap();
            let wo = conv_out_len(hw, k, pad, stride);
            for rows in [1, 2, 3] {
                let per_row = 2 * 4 * k * k * wo;
                let got = conv_value_in_bands(&x, &w, pad, stride, per_row * rows).unwrap();
                let diff = crate::sd::testutil::max_diff(&got, &want);
                assert!(
                    diff < 1e-10,
                    "k {k} pad {pad} stride {stride} rows {rows}: {diff}"
                );
            }
        }
    }

    /// The device-kernel input gradient (what CUDA runs) equals the CPU
    /// gemm + col2im one, for 1×1, stride-1 and strided convolutions.
    #[test]
    fn input_gradient_by_convolution_matches_col2im() {
        let d = Device::Cpu;
        for (k, pad, stride, hw) in CONV_CASES {
            let w = Tensor::randn(0f64, 1.0, (6, 4, k, k), &d).unwrap();
            let ho = conv_out_len(hw, k, pad, stride);
            let dy = Tensor::randn(0f64, 1.0, (2, 6, ho, ho), &d).unwrap();
            let x_dims = (2, 4, hw, hw);
            let want = conv_input_grad_gemm(x_dims, &dy, &w, pad, stride).unwrap();
            let got = conv_input_grad_by_convolution(x_dims, &dy, &w, pad, stride).unwrap();
            let diff = crate::sd::testutil::max_diff(&got, &want);
            assert!(diff < 1e-10, "k {k} pad {pad} stride {stride}: {diff}");
        }
    }
}
