//! MinSNR-γ weighting of the DreamArtist loss on tiny-sd1: each sample's
//! squared error is weighted by `min(SNR, γ) / SNR` (ε-prediction), so a γ
//! above the sample's SNR leaves the loss as it is and a lower γ scales it by
//! exactly that weight, gradients included.

mod common;

use candle_core::{Device, Tensor, Var};
use dreamartist::sd::{LoadOptions, StableDiffusion};
use dreamartist::train::loss::min_snr_weights;
use dreamartist::train::{cpt_loss, CfgSpec, CptBatch};

#[test]
fn min_snr_gamma_weights_each_sample_by_its_snr() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let g =
        candle_core::safetensors::load(dir.join("lora_goldens.safetensors"), &Device::Cpu).unwrap();
    let sd = StableDiffusion::load_folder(&dir.join("model"), &LoadOptions::default()).unwrap();
    let prompts = common::cpt_static_prompts(&sd);
    // Two samples: a noisy timestep (SNR < 1) and a clean one (SNR > 100).
    let z0 = Tensor::cat(&[&g["z0"], &g["z0"]], 0).unwrap();
    let noise = Tensor::cat(&[&g["noise"], &(&g["noise"] * -1.0).unwrap()], 0).unwrap();
    let timesteps = [700usize, 10];
    // The loss and the positive word's gradient for some samples of the batch.
    let loss_of = |z0: &Tensor, noise: &Tensor, ts: &[usize], gamma: Option<f64>| {
        let pos = Var::from_tensor(&g["pos_vectors"]).unwrap();
        let neg = Var::from_tensor(&g["neg_vectors"]).unwrap();
        let batch = CptBatch {
            z0,
            noise,
            timesteps: ts,
            image: None,
            mask: None,
            recompute: false,
            min_snr_gamma: gamma,
        };
        let loss = cpt_loss(
            &sd,
            std::slice::from_ref(&prompts),
            pos.as_tensor(),
            neg.as_tensor(),
            &"3".parse::<CfgSpec>().unwrap(),
            0.0,
            &batch,
        )
        .unwrap();
        let grads = loss.total.backward().unwrap();
        (
            loss.total.to_scalar::<f32>().unwrap() as f64,
            grads.get(pos.as_tensor()).unwrap().clone(),
        )
    };
    let run = |gamma: Option<f64>| loss_of(&z0, &noise, &timesteps, gamma);
    let w = min_snr_weights(&sd.schedule, &timesteps, 5.0, sd.prediction());
    assert!(
        (w[0] - 1.0).abs() < 1e-12,
        "noisy timestep keeps weight 1: {w:?}"
    );
    assert!(w[1] < 0.1, "clean timestep weighs little: {w:?}");
    let (plain, gp) = run(None);
    let (huge, gh) = run(Some(1e12));
    assert!((plain - huge).abs() <= 1e-6 * plain, "{plain} vs {huge}");
    let d = common::max_abs(&(&gp - &gh).unwrap());
    assert!(d < 1e-6, "gradients differ by {d}");
    // The per-sample losses, recovered from two weightings, recombine into γ = 5's loss.
    let (weighted, _) = run(Some(5.0));
    let one = |i: usize| -> f64 {
        let (z, n) = (z0.narrow(0, i, 1).unwrap(), noise.narrow(0, i, 1).unwrap());
        loss_of(&z, &n, &timesteps[i..i + 1], None).0
    };
    let expected = (w[0] * one(0) + w[1] * one(1)) / 2.0;
    assert!(
        (weighted - expected).abs() <= 1e-5 * expected,
        "{weighted} vs {expected}"
    );
}
