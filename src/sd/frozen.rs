//! Linear and convolution layers with frozen weights, for training through
//! them. candle's backward computes and stores a gradient for every argument of
//! a matmul or convolution, frozen weights included: about 3× the backward cost
//! and 2× the memory on an SD-sized UNet. These custom ops return only the
//! input's gradient.
//!
//! - Matmul: a `CustomOp2` over (x, Wᵀ) that calls the backend's matmul itself
//!   and whose backward yields `grad · W` for x and nothing for the weight.
//! - Convolution: candle keeps conv parameters private, so the forward value is
//!   computed by the ordinary kernel on a detached input and handed to a
//!   `CustomOp1` on x, which moves it out as its own output (the copy is a
//!   memcpy; the extra value is dropped at once); its backward is the
//!   transposed convolution, without the kernel gradient.

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
        if crate::sd::fused::applies(grad) && grad.dtype() == kernel.dtype() {
            return conv_input_grad_gemm(x.dims4()?, grad, kernel, padding, stride);
        }
        // As candle's own conv2d backward, minus the kernel gradient.
        let grad_h = grad.dim(2)?;
        let k_h = kernel.dim(2)?;
        let out_size = (grad_h - 1) * stride + (k_h - 1) + 1 - 2 * padding;
        let out_padding = x.dim(2)? - out_size;
        grad.conv_transpose2d(kernel, padding, out_padding, stride, 1)
    }
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
    cols.apply_op1_no_bwd(&Col2Im {
        x_dims,
        k: (k_h, k_w),
        out: (ho, wo),
        padding,
        stride,
    })
}

struct Col2Im {
    x_dims: (usize, usize, usize, usize),
    k: (usize, usize),
    out: (usize, usize),
    padding: usize,
    stride: usize,
}

impl Col2Im {
    fn run<T: candle_core::WithDType>(&self, cols: &[T]) -> Vec<T> {
        use rayon::prelude::*;
        let (b, c, h, w) = self.x_dims;
        let (k_h, k_w) = self.k;
        let (ho, wo) = self.out;
        let plane = h * w;
        let per_channel = k_h * k_w * ho * wo;
        let mut dx = vec![T::zero(); b * c * plane];
        let fill = |bc: usize, out: &mut [T]| {
            let (bi, ci) = (bc / c, bc % c);
            let base = (bi * c + ci) * per_channel;
            for kh in 0..k_h {
                for kw in 0..k_w {
                    let row = base + (kh * k_w + kw) * ho * wo;
                    for oy in 0..ho {
                        let iy = (oy * self.stride + kh) as isize - self.padding as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let dst = iy as usize * w;
                        for ox in 0..wo {
                            let ix = (ox * self.stride + kw) as isize - self.padding as isize;
                            if ix >= 0 && (ix as usize) < w {
                                let o = &mut out[dst + ix as usize];
                                *o += cols[row + oy * wo + ox];
                            }
                        }
                    }
                }
            }
        };
        if dx.len() >= 1 << 16 {
            dx.par_chunks_mut(plane)
                .enumerate()
                .for_each(|(bc, out)| fill(bc, out));
        } else {
            dx.chunks_mut(plane)
                .enumerate()
                .for_each(|(bc, out)| fill(bc, out));
        }
        dx
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("col2im: columns are not contiguous");
        };
        let (b, c, h, w) = self.x_dims;
        let need = b * c * self.k.0 * self.k.1 * self.out.0 * self.out.1;
        if end - start != need {
            candle_core::bail!("col2im: {} column entries, expected {need}", end - start);
        }
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.run(&v[start..end])),
            CpuStorage::F64(v) => CpuStorage::F64(self.run(&v[start..end])),
            _ => candle_core::bail!("col2im: only f32/f64 on CPU"),
        };
        Ok((out, Shape::from((b, c, h, w))))
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
    let mut value = x.detach().conv2d(kernel, padding, stride, 1, 1)?;
    if let Some(b) = bias {
        value = value.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
    }
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

    #[test]
    fn frozen_conv_matches_plain_conv_in_value_and_input_gradient() {
        let d = Device::Cpu;
        for (k, pad, stride, hw) in [
            (3usize, 1usize, 1usize, 8usize),
            (1, 0, 1, 8),
            (3, 1, 2, 8),
            (3, 0, 2, 9),
        ] {
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
}
