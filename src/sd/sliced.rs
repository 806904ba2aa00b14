//! Training-time attention that never holds a full `[B, H, q, k]` map.
//!
//! At 512 px SD's first self-attention has 4096 queries and keys: one score map
//! per head is 16.7M elements, and backward normally keeps both the scores and
//! the probabilities of every such layer alive until the gradients are done.
//! Here the forward is computed in query slices without recording a graph, and
//! the backward recomputes each slice's probabilities from `q`, `k`, `v`
//! (the memory-efficient attention trade: one more `q·kᵀ` per slice for never
//! storing a map).

use std::sync::Mutex;

use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use super::bmm::batched_matmul;
use super::frozen::{cpu_output, cuda_output, take_value};

/// `softmax(q kᵀ · scale) v` over `[B, H, N, d]` tensors, `rows` queries at a
/// time, with gradients for `q`, `k` and `v`. `upcast` computes scores and
/// softmax in f32 for half-precision inputs.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    rows: usize,
) -> Result<Tensor> {
    let op = SlicedAttention {
        value: Mutex::new(None),
        scale,
        upcast,
        rows: rows.max(1),
    };
    let value = op.forward(&q.detach(), &k.detach(), &v.detach())?;
    *op.value
        .lock()
        .map_err(|_| candle_core::Error::Msg("sliced attention: poisoned".into()))? = Some(value);
    q.apply_op3(k, v, op)
}

struct SlicedAttention {
    value: Mutex<Option<Tensor>>,
    scale: f64,
    upcast: bool,
    rows: usize,
}

impl SlicedAttention {
    /// The compute dtype of scores and probabilities.
    fn work(&self, x: &Tensor) -> Result<Tensor> {
        if self.upcast && super::device::is_half(x.dtype()) {
            x.to_dtype(DType::F32)
        } else {
            Ok(x.clone())
        }
    }

    /// Probabilities of the queries `q_s` against all keys.
    fn probs(&self, q_s: &Tensor, k: &Tensor) -> Result<Tensor> {
        let scores = (batched_matmul(&self.work(q_s)?, &self.work(k)?.t()?)? * self.scale)?;
        candle_nn::ops::softmax_last_dim(&scores.contiguous()?)
    }

    fn slices(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n)
            .step_by(self.rows)
            .map(move |start| (start, self.rows.min(n - start)))
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let n = q.dim(2)?;
        let mut outs = Vec::new();
        for (start, len) in self.slices(n) {
            let p = self
                .probs(&q.narrow(2, start, len)?, k)?
                .to_dtype(v.dtype())?;
            outs.push(batched_matmul(&p, v)?);
        }
        Tensor::cat(&outs, 2)?.contiguous()
    }
}

impl CustomOp3 for SlicedAttention {
    fn name(&self) -> &'static str {
        "sliced-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_output(&take_value(&self.value)?)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        cuda_output(&take_value(&self.value)?)
    }

    /// Per query slice `s`, with `P_s = softmax(q_s kᵀ · scale)`:
    /// `dv += P_sᵀ dO_s`, `dS = P_s ⊙ (dO_s vᵀ − rowsum(P_s ⊙ dO_s vᵀ)) · scale`,
    /// `dq_s = dS k`, `dk += dSᵀ q_s`.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k, v, grad) = (q.detach(), k.detach(), v.detach(), grad.detach());
        let n = q.dim(2)?;
        let (kw, vw) = (self.work(&k)?, self.work(&v)?);
        let mut dq = Vec::new();
        let mut dk: Option<Tensor> = None;
        let mut dv: Option<Tensor> = None;
        for (start, len) in self.slices(n) {
            let q_s = self.work(&q.narrow(2, start, len)?)?;
            let d_out = self.work(&grad.narrow(2, start, len)?)?;
            let p = self.probs(&q_s, &k)?;
            let dv_s = batched_matmul(&p.t()?, &d_out)?;
            let dp = batched_matmul(&d_out, &vw.t()?)?;
            let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
            let ds = ((p * dp.broadcast_sub(&dot)?)? * self.scale)?;
            dq.push(batched_matmul(&ds, &kw)?);
            let dk_s = batched_matmul(&ds.t()?, &q_s)?;
            dk = Some(match dk {
                Some(acc) => (acc + dk_s)?,
                None => dk_s,
            });
            dv = Some(match dv {
                Some(acc) => (acc + dv_s)?,
                None => dv_s,
            });
        }
        let dq = Tensor::cat(&dq, 2)?.to_dtype(q.dtype())?;
        let dk = dk.map(|t| t.to_dtype(k.dtype())).transpose()?;
        let dv = dv.map(|t| t.to_dtype(v.dtype())).transpose()?;
        Ok((Some(dq), dk, dv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::testutil::assert_same_value_and_gradients;
    use candle_core::{Device, Var};

    /// Value and all three gradients equal full attention's (f64), with
    /// slices that do not divide the query count.
    #[test]
    fn sliced_attention_matches_full_attention_in_value_and_gradients() {
        let d = Device::Cpu;
        let q = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 10, 4), &d).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 7, 4), &d).unwrap()).unwrap();
        let v = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 7, 4), &d).unwrap()).unwrap();
        let scale = 0.5;
        let sliced =
            attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale, false, 3).unwrap();
        let scores = (q.as_tensor().matmul(&k.as_tensor().t().unwrap()).unwrap() * scale).unwrap();
        let e = scores.exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        let full = p.matmul(v.as_tensor()).unwrap();
        assert_same_value_and_gradients(&[&q, &k, &v], &sliced, &full, 1e-12, 1e-12);
    }
}
