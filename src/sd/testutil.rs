//! Checks shared by the unit tests of the custom ops: a fast op against the
//! composite formulation it replaces, in value and in gradients.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// Largest absolute elementwise difference (f64 tensors).
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("comparable f64 tensors")
}

/// `fast` and `slow` (both computed from `inputs`) agree within `value_tol`,
/// and so do the gradients of `Σ probe ⊙ output` with respect to every input
/// within `grad_tol`, for a random `probe`. Returns the fast side's gradients
/// (to check what else they hold).
pub fn assert_same_value_and_gradients(
    inputs: &[&Var],
    fast: &Tensor,
    slow: &Tensor,
    value_tol: f64,
    grad_tol: f64,
) -> GradStore {
    let diff = max_diff(fast, slow);
    assert!(diff < value_tol, "values differ by {diff}");
    let probe = Tensor::randn(0f64, 1.0, fast.dims(), fast.device()).expect("probe");
    let grads = |t: &Tensor| {
        (t * &probe)
            .and_then(|p| p.sum_all())
            .and_then(|s| s.backward())
            .expect("backward")
    };
    let (gf, gs) = (grads(fast), grads(slow));
    for (i, var) in inputs.iter().enumerate() {
        let (a, b) = (
            gf.get(var.as_tensor()).expect("fast gradient"),
            gs.get(var.as_tensor()).expect("composite gradient"),
        );
        let diff = max_diff(a, b);
        assert!(diff < grad_tol, "gradient of input {i} differs by {diff}");
    }
    gf
}
