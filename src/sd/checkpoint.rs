//! Activation recompute (gradient checkpointing) for UNet segments.
//!
//! Training back-propagates from the loss to the pseudo-word vectors through
//! every cross-attention block of the UNet, so a plain backward keeps every
//! activation of the whole UNet alive until it is done (at 512 px on SD 1.5,
//! most of the step's memory). A checkpointed segment (a ResNet + transformer
//! pair, or the mid block) is one [`CustomOp3`] over its inputs `x`,
//! `context` and `temb`: its forward runs the segment and keeps only the
//! output (the segment's own graph is dropped, so its activations are freed
//! at once), and its backward runs the segment again from the same inputs,
//! this time keeping the graph, back-propagates the output gradient through
//! it and returns the inputs' gradients. The trade: one more forward of the
//! UNet per step, for holding one segment's activations at a time.
//!
//! Both runs see the inputs exactly as the un-checkpointed graph would:
//! an input that tracks gradients becomes a fresh [`Var`] (a leaf that
//! tracks), one that does not stays untracked. Our norms, softmax, linear and
//! convolution layers pick their kernel by whether their input tracks
//! gradients, so the recomputed segment runs the very same kernels as the
//! plain forward: values are bitwise the same, and so is every gradient
//! inside the segment. What can differ is the last rounding of a gradient at
//! a segment's *input*: without recompute the input's gradient is summed over
//! all its consumers in one running sum; with it, the consumers inside the
//! segment are summed first and added to the outside ones as one term.
//! Floating-point addition is not associative, so the two sums can differ in
//! their last bits (a relative error of a few ε per input, then carried
//! linearly by the rest of the backward).
//!
//! LoRA adapters ([`super::lora`]) inside a segment are weights that train:
//! the recompute runs under the scope of the forward, and their gradients,
//! which candle cannot take back from a custom op, go to that scope's side
//! store for the trainer to merge.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};

use super::frozen::{cpu_output, cuda_output, take_value};

/// A piece of the network run under recompute: a pure function of its three
/// inputs (and frozen weights).
pub(crate) trait Segment: Send + Sync {
    fn run(&self, x: &Tensor, context: &Tensor, temb: &Tensor) -> Result<Tensor>;
}

/// Runs `segment` on `(x, context, temb)`, keeping none of its activations
/// for backward: they are recomputed when the gradient arrives. Without any
/// input that tracks gradients (sampling) this is a plain call.
pub(crate) fn checkpoint(
    segment: Arc<dyn Segment>,
    x: &Tensor,
    context: &Tensor,
    temb: &Tensor,
) -> Result<Tensor> {
    let tracks = [x.track_op(), context.track_op(), temb.track_op()];
    if !tracks.iter().any(|t| *t) {
        return segment.run(x, context, temb);
    }
    let op = Checkpoint {
        segment,
        tracks,
        value: Mutex::new(None),
        scope: super::lora::current(),
    };
    // Run with tracking inputs (the kernels the plain graph would use), then
    // keep only the value: the segment's graph is dropped here.
    let (_, out) = op.run_fresh(x, context, temb)?;
    *op.value
        .lock()
        .map_err(|_| candle_core::Error::Msg("checkpoint: poisoned".into()))? = Some(out.detach());
    drop(out);
    x.apply_op3(context, temb, op)
}

struct Checkpoint {
    segment: Arc<dyn Segment>,
    /// Which of `x`, `context`, `temb` track gradients in the outer graph.
    tracks: [bool; 3],
    /// The forward's value, handed to candle by `cpu_fwd`/`cuda_fwd`.
    value: Mutex<Option<Tensor>>,
    /// The LoRA adapters in force at the forward, in force again for the
    /// recompute; it keeps the gradients of its trainable adapters.
    scope: Option<Arc<super::lora::Scope>>,
}

impl Checkpoint {
    /// Runs the segment on fresh leaves of the inputs: a [`Var`] for each
    /// input that tracks gradients, the detached tensor for the others.
    fn run_fresh(
        &self,
        x: &Tensor,
        context: &Tensor,
        temb: &Tensor,
    ) -> Result<([Option<Var>; 3], Tensor)> {
        let leaf = |t: &Tensor, tracks: bool| -> Result<(Option<Var>, Tensor)> {
            let t = t.detach();
            if tracks {
                let v = Var::from_tensor(&t)?;
                let tensor = v.as_tensor().clone();
                Ok((Some(v), tensor))
            } else {
                Ok((None, t))
            }
        };
        let (vx, x) = leaf(x, self.tracks[0])?;
        let (vc, context) = leaf(context, self.tracks[1])?;
        let (vt, temb) = leaf(temb, self.tracks[2])?;
        let out = self.segment.run(&x, &context, &temb)?;
        Ok(([vx, vc, vt], out))
    }
}

impl CustomOp3 for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpoint"
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

    /// Recomputes the segment with its graph and back-propagates `grad`
    /// through it. `out ⊙ grad` seeds `out`'s gradient with exactly `grad`
    /// (candle starts from ones, and `1 · g = g`).
    fn bwd(
        &self,
        x: &Tensor,
        context: &Tensor,
        temb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _adapters = super::lora::enter(self.scope.clone());
        let (vars, out) = self.run_fresh(x, context, temb)?;
        let grads = (out * grad.detach())?.backward()?;
        if let Some(scope) = &self.scope {
            scope.add_side_grads(&grads)?;
        }
        let [gx, gc, gt] = vars.map(|v| v.and_then(|v| grads.get(v.as_tensor()).cloned()));
        Ok((gx, gc, gt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A small function with a nonlinearity and every input used twice, so
    /// gradients into each input are sums over several consumers.
    struct Toy;

    impl Segment for Toy {
        fn run(&self, x: &Tensor, context: &Tensor, temb: &Tensor) -> Result<Tensor> {
            let h = x.matmul(&context.t()?)?.tanh()?;
            let h = h.matmul(context)?;
            (h + x)?.broadcast_mul(&temb.exp()?)? + x.sqr()?
        }
    }

    fn inputs() -> (Var, Var, Var) {
        let d = Device::Cpu;
        let v = |shape: (usize, usize)| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &d).unwrap()).unwrap()
        };
        (v((5, 4)), v((3, 4)), v((1, 4)))
    }

    /// The checkpointed op has the value and the gradients of the plain graph,
    /// with all or only some inputs tracking.
    #[test]
    fn checkpointed_segment_matches_the_plain_graph() {
        let (x, c, t) = inputs();
        let seg: Arc<dyn Segment> = Arc::new(Toy);
        let plain = Toy
            .run(x.as_tensor(), c.as_tensor(), t.as_tensor())
            .unwrap();
        let ck = checkpoint(seg.clone(), x.as_tensor(), c.as_tensor(), t.as_tensor()).unwrap();
        assert!(ck.track_op(), "recorded in the graph");
        crate::sd::testutil::assert_same_value_and_gradients(
            &[&x, &c, &t],
            &ck,
            &plain,
            1e-15,
            1e-12,
        );

        // Only the context tracks: the others get no gradient, the context the right one.
        let (xd, td) = (x.as_tensor().detach(), t.as_tensor().detach());
        let ck = checkpoint(seg.clone(), &xd, c.as_tensor(), &td).unwrap();
        let plain = Toy.run(&xd, c.as_tensor(), &td).unwrap();
        let g1 = ck.sum_all().unwrap().backward().unwrap();
        let g2 = plain.sum_all().unwrap().backward().unwrap();
        let diff = crate::sd::testutil::max_diff(
            g1.get(c.as_tensor()).unwrap(),
            g2.get(c.as_tensor()).unwrap(),
        );
        assert!(diff < 1e-12, "context gradient differs by {diff}");

        // Nothing tracks: a plain call, no op recorded.
        let cd = c.as_tensor().detach();
        let out = checkpoint(seg, &xd, &cd, &td).unwrap();
        assert!(!out.track_op());
        let plain = Toy.run(&xd, &cd, &td).unwrap();
        assert_eq!(crate::sd::testutil::max_diff(&out, &plain), 0.0);
    }

    /// Adapters trained inside a checkpointed segment get the gradients of
    /// the plain graph, through the scope's side store.
    #[test]
    fn adapter_gradients_survive_recompute() {
        use crate::sd::lora::{enter, Applied, LayerKey, LoraLayer, LoraNetwork, Net, Rows, Scope};
        use std::collections::BTreeMap;

        struct Adapted(LayerKey);
        impl Segment for Adapted {
            fn run(&self, x: &Tensor, context: &Tensor, temb: &Tensor) -> Result<Tensor> {
                let base = x.matmul(&context.t()?)?.tanh()?;
                let h = crate::sd::lora::adapt(&self.0, x, base)?;
                h.broadcast_mul(&temb.exp()?)
            }
        }
        let d = Device::Cpu;
        let key = LayerKey::new(Net::Unet, "a.transformer_blocks.0.attn1.to_q");
        let (x, c, t) = inputs();
        let t = Var::from_tensor(&t.as_tensor().narrow(1, 0, 1).unwrap()).unwrap();
        let down = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 4), &d).unwrap()).unwrap();
        let up = Var::from_tensor(&Tensor::randn(0f64, 1.0, (3, 2), &d).unwrap()).unwrap();
        let network = Arc::new(LoraNetwork::new(BTreeMap::from([(
            key.clone(),
            LoraLayer {
                down: down.as_tensor().clone(),
                up: up.as_tensor().clone(),
                alpha: 1.0,
            },
        )])));
        let applied = vec![Applied {
            network,
            strength: 0.8,
            rows: Rows::All,
        }];
        let probe = Tensor::randn(0f64, 1.0, (5, 3), &d).unwrap();
        let run = |recompute: bool| {
            let scope = Arc::new(Scope::training(
                applied.clone(),
                vec![down.as_tensor().clone(), up.as_tensor().clone()],
            ));
            let out = {
                let _g = enter(Some(scope.clone()));
                let seg: Arc<dyn Segment> = Arc::new(Adapted(key.clone()));
                if recompute {
                    checkpoint(seg, x.as_tensor(), c.as_tensor(), t.as_tensor()).unwrap()
                } else {
                    seg.run(x.as_tensor(), c.as_tensor(), t.as_tensor())
                        .unwrap()
                }
            };
            // Backward after the scope's guard is gone, as a trainer may do.
            let mut grads = (out * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            scope.merge_side_grads(&mut grads).unwrap();
            grads
        };
        let (plain, ck) = (run(false), run(true));
        for v in [&down, &up, &x, &c] {
            let diff = crate::sd::testutil::max_diff(
                plain.get(v.as_tensor()).unwrap(),
                ck.get(v.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-12, "gradient differs by {diff}");
        }
    }
}
