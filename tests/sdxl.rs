//! SDXL end to end on the tiny SDXL fixture: prompt conditioning over both
//! text encoders (chunks, emphasis, pooled output), generation in every mode,
//! the trainer through the binary (clip_l + clip_g files, both encoders'
//! columns trained, exact resume), and the refusals.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{bin, copy_dir, f32_bits, fixtures, run_ok, workspace_with_concept};
use dreamartist::generate::conditioning::{encode, prepare, PromptError};
use dreamartist::generate::{generate, GenerateError, GenerateRequest, StepControl, WordBank};
use dreamartist::sd::{Family, LoadOptions, SamplerKind, StableDiffusion};

fn model_dir() -> PathBuf {
    fixtures().join("tiny-sdxl/model")
}

fn model() -> StableDiffusion {
    StableDiffusion::load_folder(&model_dir(), &LoadOptions::default()).unwrap()
}

/// `[n, 32 + 48]`: a word of the tiny SDXL model (clip_l 32, clip_g 48).
fn word(n: usize, seed: u64) -> Tensor {
    let mut rng = dreamartist::rng::Rng::seed(seed);
    (rng.randn((n, 80), &Device::Cpu).unwrap() * 0.5).unwrap()
}

fn bank() -> WordBank {
    let mut b = WordBank::new();
    b.insert("cat", word(3, 1), "test");
    b.insert("cat-neg", word(3, 2), "test");
    b
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn the_fixture_loads_as_sdxl_with_both_encoders() {
    let sd = model();
    assert_eq!(sd.family, Family::Sdxl);
    assert_eq!(sd.text_widths(), vec![32, 48]);
    assert_eq!(sd.word_width(), 80);
    assert_eq!(sd.text.pooled_width(), Some(24));
    assert_eq!(sd.native_size(), 64);
}

#[test]
fn conditioning_chunks_both_tokenizers_and_pools_the_first_chunk() {
    let sd = model();
    let b = bank();
    // A short prompt is the plain encoding of both towers.
    let p = prepare(&sd, "a photo of <cat> on a beach", &b).unwrap();
    assert_eq!(p.towers.len(), 2);
    let enc = encode(&sd, &p).unwrap();
    let plain = sd
        .text
        .encode(
            &[sd.tokenize("a photo of <cat> on a beach", &p.words)],
            p.vectors.as_ref(),
        )
        .unwrap();
    assert_eq!(enc.hidden.dims(), &[1, 77, 80]);
    assert_eq!(f32_bits(&enc.hidden), f32_bits(&plain.hidden));
    let pooled = enc.pooled.clone().expect("SDXL has a pooled output");
    assert_eq!(pooled.dims(), &[1, 24]);
    assert_eq!(f32_bits(&pooled), f32_bits(plain.pooled.as_ref().unwrap()));

    // A long prompt: two chunks side by side; the pooled output is the first
    // chunk's (A1111 / ComfyUI), so appending text does not change it.
    let head = "a photo of <cat> on a beach";
    let long = format!("{head}, {}", "sunny ".repeat(80));
    let enc_long = encode(&sd, &prepare(&sd, &long, &b).unwrap()).unwrap();
    assert_eq!(enc_long.hidden.dims(), &[1, 154, 80]);
    let first_chunk = encode(
        &sd,
        &prepare(&sd, &format!("{head}, {}", "sunny ".repeat(65)), &b).unwrap(),
    )
    .unwrap();
    assert_eq!(
        f32_bits(enc_long.pooled.as_ref().unwrap()),
        f32_bits(first_chunk.pooled.as_ref().unwrap())
    );

    // Emphasis reweights the hidden states of both encoders, never the pooled output.
    let plain = encode(&sd, &prepare(&sd, "a cat on a beach", &b).unwrap()).unwrap();
    let strong = encode(&sd, &prepare(&sd, "a (cat:1.5) on a beach", &b).unwrap()).unwrap();
    assert_eq!(
        f32_bits(plain.pooled.as_ref().unwrap()),
        f32_bits(strong.pooled.as_ref().unwrap())
    );
    for (off, width) in [(0, 32), (32, 48)] {
        let a = plain.hidden.narrow(2, off, width).unwrap();
        let s = strong.hidden.narrow(2, off, width).unwrap();
        assert!(
            max_abs_diff(&a, &s) > 1e-4,
            "encoder at {off} not emphasised"
        );
        // A1111's rescale keeps each encoder's mean.
        let (ma, ms) = (
            a.mean_all().unwrap().to_scalar::<f32>().unwrap(),
            s.mean_all().unwrap().to_scalar::<f32>().unwrap(),
        );
        assert!((ma - ms).abs() <= 1e-5 * ma.abs().max(1.0), "{ma} vs {ms}");
    }

    // `!` is SDXL's second tokenizer's pad token, so it splits text there
    // differently: the shorter tower is padded with empty chunks.
    let bangs = "wow!! ".repeat(60);
    let p = prepare(&sd, &bangs, &b).unwrap();
    let counts: Vec<usize> = p.towers.iter().map(Vec::len).collect();
    assert_eq!(counts[0], counts[1], "towers have {counts:?} chunks");
    // Tokenizer 1 reads `!!` as one token, tokenizer 2 as two pad tokens: the
    // first tower needs fewer chunks and its last one is an empty padding chunk.
    let empty = sd.text.towers()[0].tokenizer.frame(&[]);
    assert_eq!(p.towers[0].last().unwrap().pieces, empty);
    assert_ne!(p.towers[1].last().unwrap().pieces, empty);
    let enc = encode(&sd, &p).unwrap();
    assert_eq!(enc.hidden.dims()[1], 77 * counts[0]);
}

fn req(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        seed: 7,
        steps: 6,
        sampler: SamplerKind::Euler,
        ..Default::default()
    }
}

fn run(sd: &StableDiffusion, b: &WordBank, r: &GenerateRequest) -> Vec<image::RgbImage> {
    generate(sd, b, r, |_| StepControl::Continue)
        .unwrap()
        .into_iter()
        .map(|g| g.image)
        .collect()
}

#[test]
fn generation_runs_every_mode_and_is_reproducible() {
    let sd = model();
    let b = bank();
    // txt2img at the native size, twice the same; the negative word is added.
    let r = req("a photo of <cat>");
    let g = generate(&sd, &b, &r, |_| StepControl::Continue).unwrap();
    assert_eq!(g[0].negative, "<cat-neg>");
    assert_eq!((g[0].width, g[0].height), (64, 64));
    let again = run(&sd, &b, &r);
    assert_eq!(g[0].image.as_raw(), again[0].as_raw());
    // The size feeds the time ids: a wide image renders (and differs).
    let mut wide = req("a photo of <cat>");
    wide.width = 128;
    let w = run(&sd, &b, &wide);
    assert_eq!(w[0].dimensions(), (128, 64));
    // img2img and (latent-blend) inpainting.
    let reference = fixtures().join("references/chelsea.png");
    let mut i2i = req("a watercolor of <cat>");
    i2i.init_image = Some(reference.clone());
    i2i.strength = 0.5;
    let low = run(&sd, &b, &i2i);
    assert_eq!(low[0].dimensions(), (64, 64));
    let tmp = tempfile::tempdir().unwrap();
    let mask = tmp.path().join("mask.png");
    // The mask is drawn at the reference's size (451×300): top half repainted.
    let m = image::GrayImage::from_fn(451, 300, |_, y| {
        image::Luma([if y < 150 { 255 } else { 0 }])
    });
    m.save(&mask).unwrap();
    let mut inpaint = i2i.clone();
    inpaint.mask = Some(mask);
    inpaint.strength = 1.0;
    let out = run(&sd, &b, &inpaint);
    assert_eq!(out[0].dimensions(), (64, 64));
}

#[test]
fn a_word_of_another_family_is_refused_naming_both_widths() {
    let sd = model();
    let mut b = WordBank::new();
    let mut rng = dreamartist::rng::Rng::seed(1);
    b.insert("sd1", rng.randn((2, 32), &Device::Cpu).unwrap(), "sd1.pt");
    let err = generate(&sd, &b, &req("a <sd1>"), |_| StepControl::Continue).unwrap_err();
    assert!(
        matches!(err, GenerateError::Prompt(PromptError::Width { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("sd1.pt") && msg.contains("32") && msg.contains("clip_l 32 + clip_g 48"),
        "{msg}"
    );
}

/// The SDXL layout of one of our files: `clip_l` and `clip_g`, f32.
fn file_layout(path: &Path) -> Vec<(String, Vec<usize>, String)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, String)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), format!("{:?}", v.dtype())))
        .collect();
    out.sort();
    out
}

fn train(ws: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    common::train_events(ws, "cat", extra)
}

fn finished_pair(events: &[serde_json::Value]) -> (PathBuf, PathBuf) {
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished");
    (
        PathBuf::from(last["positive"].as_str().unwrap()),
        PathBuf::from(last["negative"].as_str().unwrap()),
    )
}

fn sdxl_workspace() -> tempfile::TempDir {
    workspace_with_concept(
        &model_dir(),
        "cat",
        &fixtures().join("references/chelsea.png"),
        &["--neg-vectors", "4"],
    )
}

#[test]
fn training_writes_sdxl_pairs_moves_both_encoders_and_resumes_bitwise() {
    let a = sdxl_workspace();
    let b = sdxl_workspace();
    let c = sdxl_workspace();
    let (wa, wb, wc) = (
        a.path().join("ws"),
        b.path().join("ws"),
        c.path().join("ws"),
    );
    let straight = train(&wa, &["--steps", "50", "--seed", "5"]);
    let (pos, neg) = finished_pair(&straight);
    assert_eq!(
        file_layout(&pos),
        vec![
            ("clip_g".into(), vec![3, 48], "F32".into()),
            ("clip_l".into(), vec![3, 32], "F32".into())
        ]
    );
    assert_eq!(
        file_layout(&neg),
        vec![
            ("clip_g".into(), vec![4, 48], "F32".into()),
            ("clip_l".into(), vec![4, 32], "F32".into())
        ]
    );
    let (p50, meta) = dreamartist::concept::load_embedding(&pos).unwrap();
    assert_eq!(meta.widths, vec![32, 48]);
    let (n50, _) = dreamartist::concept::load_embedding(&neg).unwrap();

    // Zero learning rate, one step: the initial vectors of the same seed.
    let (p0, n0) = finished_pair(&train(&wc, &["--steps", "1", "--seed", "5", "--lr", "0"]));
    let (p0, _) = dreamartist::concept::load_embedding(&p0).unwrap();
    let (n0, _) = dreamartist::concept::load_embedding(&n0).unwrap();
    for (after, before, what) in [(&p50, &p0, "positive"), (&n50, &n0, "negative")] {
        for (off, width, enc) in [(0, 32, "clip_l"), (32, 48, "clip_g")] {
            let d = max_abs_diff(
                &after.narrow(1, off, width).unwrap(),
                &before.narrow(1, off, width).unwrap(),
            );
            assert!(d > 1e-3, "{what} {enc} did not move ({d})");
        }
    }

    // 25 steps, then resume to 50: the same bits as 50 straight.
    train(&wb, &["--steps", "25", "--seed", "5"]);
    let resumed = train(&wb, &["--steps", "50", "--resume", "latest"]);
    let (rp, rn) = finished_pair(&resumed);
    for (x, y, what) in [(&pos, &rp, "positive"), (&neg, &rn, "negative")] {
        let (x, _) = dreamartist::concept::load_embedding(x).unwrap();
        let (y, _) = dreamartist::concept::load_embedding(y).unwrap();
        assert_eq!(f32_bits(&x), f32_bits(&y), "{what} differs after resume");
    }
}

#[test]
fn the_binary_generates_with_a_trained_sdxl_pair() {
    let tmp = sdxl_workspace();
    let ws = tmp.path().join("ws");
    train(&ws, &["--steps", "3"]);
    let out = run_ok(bin().args([
        "generate",
        "-w",
        ws.to_str().unwrap(),
        "--prompt",
        "a photo of <cat> on a beach",
        "--seed",
        "3",
        "--steps",
        "4",
        "--json",
    ]));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["negative"], "<cat-neg>");
    let png = PathBuf::from(line["path"].as_str().unwrap());
    let png = if png.is_absolute() { png } else { ws.join(png) };
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
}

#[test]
fn f16_sdxl_runs_close_to_f32() {
    let f32_model = model();
    let f16_model = StableDiffusion::load_folder(
        &model_dir(),
        &LoadOptions {
            dtype: DType::F16,
            device: Device::Cpu,
        },
    )
    .unwrap();
    let b = bank();
    let a = generate(&f32_model, &b, &req("a photo of <cat>"), |_| {
        StepControl::Continue
    })
    .unwrap();
    let h = generate(&f16_model, &b, &req("a photo of <cat>"), |_| {
        StepControl::Continue
    })
    .unwrap();
    let d = max_abs_diff(&a[0].latents, &h[0].latents);
    let scale = a[0]
        .latents
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d / scale < 5e-2, "f16 latents off by {d} of {scale}");
}

/// An SDXL inpainting UNet (9 input channels) whose extra input weights are
/// zero behaves exactly as the base model: so 9-channel inpainting at
/// strength 1 must give txt2img's latents — which holds only if the noisy
/// latents go into the first four channels and the extras after them.
#[test]
fn nine_channel_sdxl_inpainting_puts_latents_first() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    copy_dir(&model_dir(), &m);
    let cfg_path = m.join("unet/config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"in_channels\": 4", "\"in_channels\": 9");
    std::fs::write(&cfg_path, cfg).unwrap();
    let wfile = m.join("unet/diffusion_pytorch_model.safetensors");
    let mut t = candle_core::safetensors::load(&wfile, &Device::Cpu).unwrap();
    let w = t["conv_in.weight"].clone();
    let zeros = Tensor::zeros((w.dim(0).unwrap(), 5, 3, 3), DType::F32, &Device::Cpu).unwrap();
    t.insert(
        "conv_in.weight".into(),
        Tensor::cat(&[&w, &zeros], 1).unwrap(),
    );
    candle_core::safetensors::save(&t, &wfile).unwrap();
    let inpaint_model = StableDiffusion::load_folder(&m, &LoadOptions::default()).unwrap();
    assert_eq!(inpaint_model.unet.in_channels(), 9);

    let b = bank();
    let base = generate(&model(), &b, &req("a photo of <cat>"), |_| {
        StepControl::Continue
    })
    .unwrap();
    let mask = tmp.path().join("mask.png");
    image::GrayImage::from_fn(451, 300, |x, _| {
        image::Luma([if x >= 225 { 255 } else { 0 }])
    })
    .save(&mask)
    .unwrap();
    let mut r = req("a photo of <cat>");
    r.init_image = Some(fixtures().join("references/chelsea.png"));
    r.mask = Some(mask);
    r.strength = 1.0;
    let inpainted = generate(&inpaint_model, &b, &r, |_| StepControl::Continue).unwrap();
    let d = max_abs_diff(&base[0].latents, &inpainted[0].latents);
    assert!(
        d < 1e-4,
        "9-channel latents differ from the base model's by {d}"
    );
}
