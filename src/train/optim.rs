//! AdamW with torch semantics (decoupled weight decay, bias correction) and
//! gradient-norm clipping, for the pseudo-word matrices.

use candle_core::{Result, Tensor, Var};

/// Hyper-parameters shared by both matrices; each matrix has its own lr.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state of one parameter matrix.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// First and second moment estimates.
    pub m: Tensor,
    pub v: Tensor,
    /// Number of updates taken so far.
    pub step: u64,
}

impl AdamW {
    pub fn new(param: &Var, config: AdamWConfig) -> Result<Self> {
        Ok(Self {
            config,
            m: param.zeros_like()?,
            v: param.zeros_like()?,
            step: 0,
        })
    }

    /// One update of `param` with gradient `grad` at learning rate `lr`.
    pub fn update(&mut self, param: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let c = self.config;
        self.step += 1;
        let decayed = (param.as_tensor() * (1.0 - lr * c.weight_decay))?;
        self.m = ((&self.m * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
        self.v = ((&self.v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let denom = ((self.v.sqrt()? / bc2.sqrt())? + c.eps)?;
        let update = (self.m.div(&denom)? * (lr / bc1))?;
        param.set(&(decayed - update)?)
    }
}

/// Scales `grad` so its L2 norm is at most `max_norm` (torch's
/// `clip_grad_norm_`, with its 1e-6 guard). Returns the clipped gradient and the
/// norm before clipping.
pub fn clip_grad_norm(grad: &Tensor, max_norm: f64) -> Result<(Tensor, f64)> {
    let norm = grad
        .sqr()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        .sqrt();
    if max_norm <= 0.0 || !norm.is_finite() {
        return Ok((grad.clone(), norm));
    }
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    Ok(((grad * coef)?, norm))
}

/// [`clip_grad_norm`] on each column block of a word matrix on its own (SDXL:
/// the CLIP-L and OpenCLIP-G columns are separate matrices in every other tool,
/// clipped separately). `widths` sum to the matrix width; one block is plain
/// [`clip_grad_norm`]. Returns the clipped gradient and the norm of the whole
/// gradient before clipping.
pub fn clip_grad_norm_blocks(
    grad: &Tensor,
    widths: &[usize],
    max_norm: f64,
) -> Result<(Tensor, f64)> {
    if widths.len() <= 1 {
        return clip_grad_norm(grad, max_norm);
    }
    let last = grad.rank().saturating_sub(1);
    let mut blocks = Vec::with_capacity(widths.len());
    let mut sq = 0f64;
    let mut offset = 0;
    for &w in widths {
        let (g, n) = clip_grad_norm(&grad.narrow(last, offset, w)?, max_norm)?;
        blocks.push(g);
        sq += n * n;
        offset += w;
    }
    if offset != grad.dim(last)? {
        candle_core::bail!(
            "gradient is {} wide; the text encoders' blocks sum to {offset}",
            grad.dim(last)?
        );
    }
    Ok((Tensor::cat(&blocks, last)?, sq.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn norm(t: &Tensor) -> f64 {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64
    }

    #[test]
    fn blocks_are_clipped_each_on_its_own() {
        // Columns 0..2 have norm 5 (3, 4), column 2..5 norm 0.5: only the first block is clipped.
        let g = Tensor::new(
            &[[3f32, 0.0, 0.5, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let (c, total) = clip_grad_norm_blocks(&g, &[2, 3], 1.0).unwrap();
        assert!((total - (25.0f64 + 0.25).sqrt()).abs() < 1e-6, "{total}");
        let l = c.narrow(1, 0, 2).unwrap();
        let r = c.narrow(1, 2, 3).unwrap();
        assert!((norm(&l) - 1.0).abs() < 1e-5, "{}", norm(&l));
        let r_bits: Vec<u32> = r
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let g_bits: Vec<u32> = g
            .narrow(1, 2, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(r_bits, g_bits, "an unclipped block is untouched");
        // Clipped as one matrix, the small block would have shrunk too.
        let (whole, _) = clip_grad_norm(&g, 1.0).unwrap();
        assert!(norm(&whole.narrow(1, 2, 3).unwrap()) < 0.2);
        // One block is exactly plain clipping; widths that do not add up are refused.
        let (one, _) = clip_grad_norm_blocks(&g, &[5], 1.0).unwrap();
        assert_eq!(
            one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            whole.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(clip_grad_norm_blocks(&g, &[2, 2], 1.0).is_err());
    }
}
