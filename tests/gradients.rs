//! Gradient proof: back-propagation through our text encoder + UNet (to the
//! spliced pseudo-word vectors) and through the VAE decoder (to the latents)
//! agrees with central finite differences along random directions. Runs in f64
//! so the finite differences themselves are accurate.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use dreamartist::sd::{LoadOptions, MicroConditioning, PseudoWord, StableDiffusion};

fn load(name: &str) -> StableDiffusion {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("model");
    StableDiffusion::load_folder(
        &dir,
        &LoadOptions {
            dtype: DType::F64,
            device: Device::Cpu,
        },
    )
    .expect("fixture model loads")
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a * b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Checks `<grad, u>` against `(L(x+εu) − L(x−εu)) / 2ε` for a few random `u`.
///
/// The error is measured against `‖grad‖`, the typical size of `<grad, u>` for a
/// standard-normal `u`, not against the one sample: a direction that happens to
/// be nearly orthogonal to the gradient makes a ratio meaningless. In f64 the
/// two agree to ~1e-5 of `‖grad‖`; a stray f32 step in the forward pass
/// (rounding noise divided by 2ε) shows up at ~1e-4 and fails.
fn check_directional(x0: &Tensor, grad: &Tensor, eps: f64, loss_at: impl Fn(&Tensor) -> f64) {
    let scale = dot(grad, grad).sqrt();
    for _ in 0..3 {
        let u = Tensor::randn(0f64, 1.0, x0.dims(), &Device::Cpu).unwrap();
        let analytic = dot(grad, &u);
        let plus = loss_at(&(x0 + (&u * eps).unwrap()).unwrap());
        let minus = loss_at(&(x0 - (&u * eps).unwrap()).unwrap());
        let numeric = (plus - minus) / (2.0 * eps);
        let error = (analytic - numeric).abs() / scale;
        assert!(
            error < 5e-5,
            "directional derivative mismatch: analytic {analytic}, numeric {numeric}, \
             error {error:e} of ‖grad‖ {scale}"
        );
    }
}

fn text_unet_gradient(fixture: &str, recompute: bool) {
    let sd = load(fixture);
    let d = sd.word_width();
    let words = vec![
        PseudoWord {
            name: "<da>".into(),
            vectors: 3,
        },
        PseudoWord {
            name: "<da-neg>".into(),
            vectors: 2,
        },
    ];
    let pos = sd.tokenize("a photo of <da>", &words);
    let neg = sd.tokenize("a photo of <da-neg>", &words);
    let v0 = (Tensor::randn(0f64, 1.0, (5, d), &Device::Cpu).unwrap() * 0.02).unwrap();
    let latents = Tensor::randn(0f64, 1.0, (2, 4, 8, 8), &Device::Cpu).unwrap();
    let weights = Tensor::randn(0f64, 1.0, (2, 4, 8, 8), &Device::Cpu).unwrap();
    let loss = |v: &Tensor| -> Tensor {
        let enc = sd
            .text
            .encode(&[neg.clone(), pos.clone()], Some(v))
            .unwrap();
        // SDXL: the pooled projection carries gradient to the vectors too.
        let cond = sd
            .conditioning(&enc, &MicroConditioning::for_size(64, 64))
            .unwrap();
        let out = sd
            .unet
            .forward_cond_with(&latents, &[500.0, 500.0], &cond, recompute)
            .unwrap();
        (out * &weights).unwrap().sum_all().unwrap()
    };
    let var = Var::from_tensor(&v0).unwrap();
    let l = loss(var.as_tensor());
    let grads = l.backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("gradient reaches the vectors");
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            > 0.0
    );
    check_directional(&v0, g, 1e-4, |v| loss(v).to_scalar::<f64>().unwrap());
}

#[test]
fn vectors_gradient_through_text_encoder_and_unet_sd1() {
    text_unet_gradient("tiny-sd1", false);
}

#[test]
fn vectors_gradient_through_text_encoder_and_unet_sd2v() {
    text_unet_gradient("tiny-sd2v", false);
}

#[test]
fn vectors_gradient_through_both_text_encoders_pooled_and_unet_sdxl() {
    text_unet_gradient("tiny-sdxl", false);
}

/// Activation recompute: every ResNet + transformer pair and the mid block
/// are checkpointed ops whose backward re-runs them; the gradient still
/// matches finite differences (SDXL: through the pooled text into `temb` too).
#[test]
fn vectors_gradient_with_recompute_sd1() {
    text_unet_gradient("tiny-sd1", true);
}

#[test]
fn vectors_gradient_with_recompute_sdxl() {
    text_unet_gradient("tiny-sdxl", true);
}

#[test]
fn latents_gradient_through_vae_decoder() {
    let sd = load("tiny-sd1");
    let z0 = Tensor::randn(0f64, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let w = Tensor::randn(0f64, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let loss = |z: &Tensor| (sd.vae.decode(z).unwrap() * &w).unwrap().sum_all().unwrap();
    let var = Var::from_tensor(&z0).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("gradient reaches the latents");
    check_directional(&z0, g, 1e-4, |z| loss(z).to_scalar::<f64>().unwrap());
}

#[test]
fn layer_norm_and_softmax_gradients_are_not_dropped() {
    // The fused candle kernels would return no gradient here; the composite path must.
    let sd = load("tiny-sd1");
    let d = sd.word_width();
    let words = vec![PseudoWord {
        name: "<x>".into(),
        vectors: 1,
    }];
    let ids = sd.tokenize("<x>", &words);
    let v0 = (Tensor::randn(0f64, 1.0, (1, d), &Device::Cpu).unwrap() * 0.02).unwrap();
    let w = Tensor::randn(0f64, 1.0, (1, 77, d), &Device::Cpu).unwrap();
    let loss = |v: &Tensor| {
        let h = sd
            .text
            .encode(std::slice::from_ref(&ids), Some(v))
            .unwrap()
            .hidden;
        (h * &w).unwrap().sum_all().unwrap()
    };
    let var = Var::from_tensor(&v0).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("gradient reaches the vector");
    check_directional(&v0, g, 1e-4, |v| loss(v).to_scalar::<f64>().unwrap());
}
