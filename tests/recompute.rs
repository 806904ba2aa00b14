//! Activation recompute changes memory, not results: with `recompute` the
//! UNet's forward is bitwise the same and the gradient reaching the
//! pseudo-word vectors equals the plain one up to the association of a few
//! sums at checkpoint inputs (see `src/sd/checkpoint.rs`), in f32 on the
//! tiny SD 1.x and SDXL fixtures.

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
            dtype: DType::F32,
            device: Device::Cpu,
        },
    )
    .expect("fixture model loads")
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// `(output, loss, gradient of the vectors)` of a DreamArtist-shaped step:
/// both prompts through the text encoder, `[z; z]` through the UNet.
fn step(sd: &StableDiffusion, side: usize, recompute: bool) -> (Tensor, Tensor, Tensor) {
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
    // Fixed inputs: the same on both calls.
    let seeded = |seed: u64, shape: &[usize], scale: f64| {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0 * scale) as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let v0 = seeded(1, &[5, d], 0.05);
    let latents = seeded(2, &[2, 4, side, side], 1.0);
    let weights = seeded(3, &[2, 4, side, side], 1.0);
    let var = Var::from_tensor(&v0).unwrap();
    let enc = sd.text.encode(&[neg, pos], Some(var.as_tensor())).unwrap();
    let cond = sd
        .conditioning(&enc, &MicroConditioning::for_size(8 * side, 8 * side))
        .unwrap();
    let out = sd
        .unet
        .forward_cond_with(&latents, &[500.0, 500.0], &cond, recompute)
        .unwrap();
    let loss = (&out * &weights).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(var.as_tensor()).expect("gradient").clone();
    (out.detach(), loss.detach(), g)
}

fn same_results(fixture: &str, side: usize) {
    let sd = load(fixture);
    let (out_a, loss_a, g_a) = step(&sd, side, false);
    let (out_b, loss_b, g_b) = step(&sd, side, true);
    assert_eq!(bits(&out_a), bits(&out_b), "UNet output differs");
    assert_eq!(bits(&loss_a), bits(&loss_b), "loss differs");
    let a = g_a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = g_b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "no gradient");
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    eprintln!(
        "{fixture} at {side}×{side} latents: {differing}/{} gradient elements differ, worst by {worst:e} (max |g| {scale:e})",
        a.len()
    );
    // Re-associated sums: a few ε of the largest gradient, far below any
    // real difference (a dropped or doubled block would be O(1) of it).
    assert!(
        worst <= 1e-5 * scale,
        "gradient with recompute differs by {worst:e} (max |g| {scale:e})"
    );
}

#[test]
fn recompute_gives_the_same_output_and_gradient_sd1() {
    same_results("tiny-sd1", 8);
}

#[test]
fn recompute_gives_the_same_output_and_gradient_sdxl() {
    same_results("tiny-sdxl", 8);
}

/// At 40×40 latents the first level's self-attention (2 × 8 heads × 1600²
/// scores) is past the slicing threshold: the sliced attention op (itself a
/// recompute in backward) runs inside the checkpointed pairs.
#[test]
fn recompute_with_sliced_attention_inside_sd1() {
    same_results("tiny-sd1", 40);
}
