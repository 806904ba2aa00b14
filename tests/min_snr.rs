//! MinSNR-γ weighting of the DreamArtist loss on tiny-sd1: each sample's
//! squared error is weighted by `min(SNR, γ) / SNR` (ε-prediction), so a γ
//! above the sample's SNR leaves the loss as it is and a lower γ scales it by
//! exactly that weight, gradients included.

use candle_core::{Device, Tensor, Var};
use dreamartist::sd::{LoadOptions, PseudoWord, StableDiffusion};
use dreamartist::train::loss::min_snr_weights;
use dreamartist::train::{cpt_loss, CfgSpec, ConceptPrompts, CptBatch};

#[test]
fn min_snr_gamma_weights_each_sample_by_its_snr() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let g =
        candle_core::safetensors::load(dir.join("lora_goldens.safetensors"), &Device::Cpu).unwrap();
    let sd = StableDiffusion::load_folder(&dir.join("model"), &LoadOptions::default()).unwrap();
    let words = [
        PseudoWord {
            name: "<da>".into(),
            vectors: 3,
        },
        PseudoWord {
            name: "<da-neg>".into(),
            vectors: 6,
        },
    ];
    let prompts = ConceptPrompts {
        positive: sd.tokenize("a photo of <da>", &words),
        negative: sd.tokenize("a photo of <da-neg>", &words),
    };
    // Two samples: a noisy timestep (SNR < 1) and a clean one (SNR > 100).
    let z0 = Tensor::cat(&[&g["z0"], &g["z0"]], 0).unwrap();
    let noise = Tensor::cat(&[&g["noise"], &(&g["noise"] * -1.0).unwrap()], 0).unwrap();
    let timesteps = [700usize, 10];
    let run = |gamma: Option<f64>| -> (f64, Tensor) {
        let pos = Var::from_tensor(&g["pos_vectors"]).unwrap();
        let neg = Var::from_tensor(&g["neg_vectors"]).unwrap();
        let batch = CptBatch {
            z0: &z0,
            noise: &noise,
            timesteps: &timesteps,
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
    let w = min_snr_weights(&sd.schedule, &timesteps, 5.0, sd.prediction());
    assert!(
        (w[0] - 1.0).abs() < 1e-12,
        "noisy timestep keeps weight 1: {w:?}"
    );
    assert!(w[1] < 0.1, "clean timestep weighs little: {w:?}");
    let (plain, gp) = run(None);
    let (huge, gh) = run(Some(1e12));
    assert!((plain - huge).abs() <= 1e-6 * plain, "{plain} vs {huge}");
    let d = (&gp - &gh)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-6, "gradients differ by {d}");
    // The per-sample losses, recovered from two weightings, recombine into γ = 5's loss.
    let (weighted, _) = run(Some(5.0));
    let one = |t: usize| -> f64 {
        let batch_t = [t];
        let i = timesteps.iter().position(|x| *x == t).unwrap();
        let pos = Var::from_tensor(&g["pos_vectors"]).unwrap();
        let neg = Var::from_tensor(&g["neg_vectors"]).unwrap();
        let loss = cpt_loss(
            &sd,
            std::slice::from_ref(&prompts),
            pos.as_tensor(),
            neg.as_tensor(),
            &"3".parse::<CfgSpec>().unwrap(),
            0.0,
            &CptBatch {
                z0: &z0.narrow(0, i, 1).unwrap(),
                noise: &noise.narrow(0, i, 1).unwrap(),
                timesteps: &batch_t,
                image: None,
                mask: None,
                recompute: false,
                min_snr_gamma: None,
            },
        )
        .unwrap();
        loss.total.to_scalar::<f32>().unwrap() as f64
    };
    let expected = (w[0] * one(700) + w[1] * one(10)) / 2.0;
    assert!(
        (weighted - expected).abs() <= 1e-5 * expected,
        "{weighted} vs {expected}"
    );
}
