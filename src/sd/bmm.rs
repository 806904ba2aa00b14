//! Batched matmul for attention on the CPU: one single-threaded gemm per
//! (image, head), the batch spread over the thread pool.
//!
//! candle runs a batched matmul as a loop over the batch, each gemm split
//! over all threads. Attention's gemms are many and thin (SD's heads are 40 to
//! 160 wide): split that way, thread hand-offs and packing dominate, and
//! `q·kᵀ` for 16 heads of 1024 tokens ran at ~36 GFLOP/s on two cores where
//! one whole gemm per thread takes 1.5–2.9× less time. Each output element is
//! accumulated in the same order either way, so the result is bitwise
//! candle's.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `a · b` over `[.., m, k]` and `[.., k, n]` with the same leading dims.
/// Contiguous or transposed f32/f64 CPU operands with more than one matrix
/// take the batch-parallel kernel; anything else is candle's matmul.
pub fn batched_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if applies(a, b) {
        return a.apply_op2(b, BatchMatmul);
    }
    a.matmul(b)
}

/// Below this many multiply-adds a matrix (a tiny model's heads) candle's
/// loop is as fast: its gemms stay on one thread and nothing is handed off.
/// Measured on the tiny fixture: batch-parallel there cost its training step
/// a tenth.
const MIN_MACS_PER_MATRIX: usize = 1 << 20;

fn applies(a: &Tensor, b: &Tensor) -> bool {
    let rank = a.rank();
    rank >= 3
        && b.rank() == rank
        && a.device().is_cpu()
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && a.dtype() == b.dtype()
        && a.dims()[..rank - 2] == b.dims()[..rank - 2]
        && a.dims()[rank - 1] == b.dims()[rank - 2]
        && a.dims()[..rank - 2].iter().product::<usize>() > 1
        && a.dims()[rank - 2] * a.dims()[rank - 1] * b.dims()[rank - 1] >= MIN_MACS_PER_MATRIX
        && rayon::current_num_threads() > 1
        && Operand::of(a.layout()).is_some()
        && Operand::of(b.layout()).is_some()
}

/// One operand's matrices as gemm sees them: the offset of the first, the
/// distance between consecutive matrices, and row/column strides.
#[derive(Clone, Copy)]
struct Operand {
    start: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Operand {
    /// `None` when the leading dims do not step through memory uniformly
    /// (a broadcast or a permuted batch): those go to candle.
    fn of(l: &Layout) -> Option<Self> {
        let (dims, strides) = (l.dims(), l.stride());
        let rank = dims.len();
        // Size-1 batch dims take no steps, whatever their stride; the others
        // must nest like a contiguous array's for matrix i to sit at i·stride.
        let steps: Vec<(usize, usize)> = (0..rank - 2)
            .filter(|&i| dims[i] > 1)
            .map(|i| (dims[i], strides[i]))
            .collect();
        let nested = steps.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0);
        let batch_stride = steps.last().map_or(0, |&(_, stride)| stride);
        if !nested || batch_stride == 0 {
            return None;
        }
        Some(Self {
            start: l.start_offset(),
            batch_stride,
            row_stride: strides[rank - 2],
            col_stride: strides[rank - 1],
        })
    }
}

struct BatchMatmul;

impl BatchMatmul {
    fn run<T: candle_core::WithDType>(
        a: &[T],
        la: &Layout,
        b: &[T],
        lb: &Layout,
    ) -> Result<(Vec<T>, Shape)> {
        let (Some(oa), Some(ob)) = (Operand::of(la), Operand::of(lb)) else {
            candle_core::bail!("batched matmul: operands not in batch order");
        };
        let dims = la.dims();
        let rank = dims.len();
        let (m, k, n) = (dims[rank - 2], dims[rank - 1], lb.dims()[rank - 1]);
        let batch: usize = dims[..rank - 2].iter().product();
        let last = |o: &Operand, rows: usize, cols: usize| {
            o.start
                + (batch - 1) * o.batch_stride
                + rows.saturating_sub(1) * o.row_stride
                + cols.saturating_sub(1) * o.col_stride
        };
        if m * n * k > 0 && (last(&oa, m, k) >= a.len() || last(&ob, k, n) >= b.len()) {
            candle_core::bail!("batched matmul: layout outside its storage");
        }
        let mut out = vec![T::zero(); batch * m * n];
        if m * n > 0 {
            out.par_chunks_mut(m * n).enumerate().for_each(|(i, dst)| {
                let lhs = &a[oa.start + i * oa.batch_stride..];
                let rhs = &b[ob.start + i * ob.batch_stride..];
                // SAFETY: every element read lies inside `a` and `b` (the last
                // one of the last matrix was bounds-checked above), and `dst`
                // is this matrix's own m×n row-major chunk.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        dst.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        lhs.as_ptr(),
                        oa.col_stride as isize,
                        oa.row_stride as isize,
                        rhs.as_ptr(),
                        ob.col_stride as isize,
                        ob.row_stride as isize,
                        T::zero(),
                        T::one(),
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            });
        }
        let mut shape = dims.to_vec();
        shape[rank - 1] = n;
        Ok((out, Shape::from(shape)))
    }
}

impl CustomOp2 for BatchMatmul {
    fn name(&self) -> &'static str {
        "batch-parallel-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let (out, shape) = Self::run(a, l1, b, l2)?;
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let (out, shape) = Self::run(a, l1, b, l2)?;
                Ok((CpuStorage::F64(out), shape))
            }
            _ => candle_core::bail!("batched matmul: only f32/f64 on CPU"),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let da = batched_matmul(grad, &b.t()?)?;
        let db = batched_matmul(&a.t()?, grad)?;
        Ok((Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::testutil::assert_same_value_and_gradients as check;
    use candle_core::{Device, Var};

    /// Bitwise candle's matmul on contiguous, transposed and narrowed
    /// operands, and the same gradients (f64); sizes above the threshold.
    #[test]
    fn equals_candle_matmul_in_value_and_gradients() {
        // Two threads whatever the machine, so the batch-parallel kernel runs.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let d = Device::Cpu;
            let a0 = Tensor::randn(0f64, 1.0, (2, 2, 128, 64), &d).unwrap();
            let b0 = Tensor::randn(0f64, 1.0, (2, 2, 128, 64), &d).unwrap();
            let (a, b) = (
                Var::from_tensor(&a0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let bt = b.as_tensor().t().unwrap();
            assert!(applies(a.as_tensor(), &bt));
            let ours = batched_matmul(a.as_tensor(), &bt).unwrap();
            let theirs = a.as_tensor().matmul(&bt).unwrap();
            check(&[&a, &b], &ours, &theirs, f64::MIN_POSITIVE, 1e-12);
            // A query slice (narrowed, so offset) against transposed keys, in f32.
            let q = Tensor::randn(0f32, 1.0, (4, 300, 40), &d).unwrap();
            let k = Tensor::randn(0f32, 1.0, (4, 300, 40), &d).unwrap();
            let qs = q.narrow(1, 50, 100).unwrap();
            assert!(applies(&qs, &k.t().unwrap()));
            let ours = batched_matmul(&qs, &k.t().unwrap()).unwrap();
            let theirs = qs.matmul(&k.t().unwrap()).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            assert_eq!(bits(&ours), bits(&theirs));
        });
    }

    /// Broadcast or permuted batches are not batch-ordered, and one matrix has
    /// no batch to spread: candle takes those.
    #[test]
    fn falls_back_where_the_batch_does_not_step_uniformly() {
        let d = Device::Cpu;
        let a = Tensor::randn(0f64, 1.0, (2, 3, 5, 7), &d).unwrap();
        let permuted = a.transpose(0, 1).unwrap();
        assert!(Operand::of(permuted.layout()).is_none());
        let b = Tensor::randn(0f64, 1.0, (1, 3, 7, 4), &d).unwrap();
        let broadcast = b.broadcast_as((2, 3, 7, 4)).unwrap();
        assert!(Operand::of(broadcast.layout()).is_none());
        let a = a
            .narrow(0, 0, 1)
            .unwrap()
            .broadcast_as((2, 3, 5, 7))
            .unwrap();
        assert!(Operand::of(a.layout()).is_none());
        // A single matrix (no batch to spread) is candle's too.
        let (x, y) = (
            Tensor::randn(0f64, 1.0, (1, 5, 7), &d).unwrap(),
            Tensor::randn(0f64, 1.0, (1, 7, 4), &d).unwrap(),
        );
        assert!(!applies(&x, &y));
        // The fallback's product, checked against a plain triple loop (comparing
        // it with candle's matmul would compare candle with itself).
        let got: Vec<Vec<f64>> = batched_matmul(&x, &y)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let xs: Vec<Vec<f64>> = x.squeeze(0).unwrap().to_vec2().unwrap();
        let ys: Vec<Vec<f64>> = y.squeeze(0).unwrap().to_vec2().unwrap();
        for (i, row) in got.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want: f64 = (0..7).map(|k| xs[i][k] * ys[k][j]).sum();
                assert!((v - want).abs() < 1e-12, "[{i}, {j}]: {v} vs {want}");
            }
        }
    }
}
