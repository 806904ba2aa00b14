//! Generation on the tiny SD1 model: prompt files and PNG metadata through the
//! binary; seeds, composition, img2img, inpainting (both kinds) through the library.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::copy_dir;
use dreamartist::concept::{save_embedding, EmbeddingMeta};
use dreamartist::generate::png::read_png_text;
use dreamartist::generate::{generate, GenerateRequest, StepControl, WordBank};
use dreamartist::sd::{LoadOptions, SamplerKind, StableDiffusion};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model() -> StableDiffusion {
    StableDiffusion::load_folder(&fixtures().join("tiny-sd1/model"), &LoadOptions::default())
        .unwrap()
}

fn random_vectors(n: usize, seed: u64) -> Tensor {
    let mut rng = dreamartist::rng::Rng::seed(seed);
    (rng.randn((n, 32), &Device::Cpu).unwrap() * 0.5).unwrap()
}

fn bank() -> WordBank {
    let mut b = WordBank::new();
    b.insert("cat", random_vectors(3, 1), "test");
    b.insert("cat-neg", random_vectors(3, 2), "test");
    b.insert("hat", random_vectors(2, 3), "test");
    b
}

fn req(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        seed: 42,
        steps: 8,
        sampler: SamplerKind::DpmPp2m,
        ..Default::default()
    }
}

fn run(
    sd: &StableDiffusion,
    b: &WordBank,
    r: &GenerateRequest,
) -> Vec<dreamartist::generate::Generated> {
    generate(sd, b, r, |_| StepControl::Continue).unwrap()
}

#[test]
fn same_seed_same_pixels_and_seeds_count_up() {
    let sd = model();
    let b = bank();
    let mut r = req("a photo of <cat>");
    r.count = 2;
    let a = run(&sd, &b, &r);
    let again = run(&sd, &b, &r);
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].seed, a[1].seed), (42, 43));
    assert_eq!(a[0].image.as_raw(), again[0].image.as_raw());
    assert_ne!(a[0].image.as_raw(), a[1].image.as_raw());
    // DreamArtist pairing: the negative word joined the negative prompt.
    assert_eq!(a[0].negative, "<cat-neg>");
    r.auto_negative = false;
    assert_eq!(run(&sd, &b, &r)[0].negative, "");
}

#[test]
fn composition_of_two_pseudo_words_and_unknown_words() {
    let sd = model();
    let b = bank();
    let both = run(&sd, &b, &req("a <cat> wearing a <hat>"));
    let one = run(&sd, &b, &req("a <cat> wearing a hat"));
    assert_ne!(both[0].image.as_raw(), one[0].image.as_raw());
    let err = generate(&sd, &b, &req("a <dog>"), |_| StepControl::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("<dog>") && err.contains("<cat>") && err.contains("<hat>"),
        "{err}"
    );
}

#[test]
fn long_prompts_are_chunked_and_emphasis_is_a1111s_rescale() {
    use dreamartist::generate::conditioning::{encode, prepare};
    let sd = model();
    let b = bank();
    // A long prompt: each 77-token chunk is the text encoder's output for
    // that chunk's own tokens, side by side.
    let long = format!("a <cat>, {}", "highly detailed, ".repeat(40));
    let p = prepare(&sd, &long, &b).unwrap();
    assert_eq!(p.chunks().len(), 2);
    let enc = encode(&sd, &p).unwrap();
    assert_eq!(enc.hidden.dims(), &[1, 154, 32]);
    for (c, chunk) in p.chunks().iter().enumerate() {
        let own = sd
            .text
            .encode(
                &[dreamartist::sd::Tokens(vec![chunk.pieces.clone()])],
                p.vectors.as_ref(),
            )
            .unwrap()
            .hidden;
        let part = enc.hidden.narrow(1, 77 * c, 77).unwrap();
        assert_eq!(mean_abs(&part, &own), 0.0, "chunk {c}");
    }
    let g = run(&sd, &b, &req(&long));
    assert_eq!(g.len(), 1);

    // Emphasis: the weighted tokens' states scaled by their weight, then the
    // whole rescaled to the unweighted mean (A1111).
    let plain = encode(&sd, &prepare(&sd, "a <cat> on a sofa", &b).unwrap()).unwrap();
    let p = prepare(&sd, "a (<cat>:1.3) on a sofa", &b).unwrap();
    let weights: Vec<f32> = p.chunks()[0].weights.iter().map(|w| *w as f32).collect();
    assert_eq!(&weights[..6], &[1.0, 1.0, 1.3, 1.3, 1.3, 1.0]);
    let weighted = encode(&sd, &p).unwrap();
    let w = Tensor::from_vec(weights, (1, 77, 1), &Device::Cpu).unwrap();
    let scaled = plain.hidden.broadcast_mul(&w).unwrap();
    let ratio = (plain.hidden.mean_all().unwrap() / scaled.mean_all().unwrap()).unwrap();
    let want = scaled.broadcast_mul(&ratio).unwrap();
    let err = mean_abs(&weighted.hidden, &want);
    assert!(err < 1e-6, "emphasis differs from A1111's by {err}");
    assert!(mean_abs(&weighted.hidden, &plain.hidden) > 1e-3);
}

#[test]
fn sizes_must_be_multiples_of_eight() {
    let sd = model();
    let mut r = req("x");
    r.width = 60;
    let err = generate(&sd, &WordBank::new(), &r, |_| StepControl::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("width 60") && err.contains("multiple of 8"),
        "{err}"
    );
}

fn write_test_image(dir: &Path) -> PathBuf {
    let p = dir.join("in.png");
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    });
    img.save(&p).unwrap();
    p
}

fn init_latents(sd: &StableDiffusion, path: &Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let data: Vec<f32> = img
        .as_raw()
        .iter()
        .map(|v| *v as f32 / 127.5 - 1.0)
        .collect();
    let t = Tensor::from_vec(data, (64, 64, 3), &Device::Cpu)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    sd.vae
        .scale_latents(&sd.vae.encode(&t.contiguous().unwrap()).unwrap().mean)
        .unwrap()
}

fn mean_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn img2img_stays_near_the_input_at_low_strength() {
    let sd = model();
    let tmp = tempfile::tempdir().unwrap();
    let input = write_test_image(tmp.path());
    let init = init_latents(&sd, &input);
    let mut r = req("a watercolor painting");
    r.init_image = Some(input);
    r.strength = 0.3;
    let low = run(&sd, &WordBank::new(), &r);
    r.strength = 1.0;
    let full = run(&sd, &WordBank::new(), &r);
    let (d_low, d_full) = (
        mean_abs(&low[0].latents, &init),
        mean_abs(&full[0].latents, &init),
    );
    assert!(
        d_low < d_full,
        "strength 0.3 moved {d_low}, strength 1 moved {d_full}"
    );
}

#[test]
fn inpainting_keeps_the_unmasked_region() {
    let sd = model();
    let tmp = tempfile::tempdir().unwrap();
    let input = write_test_image(tmp.path());
    // Repaint the right half.
    let mask_path = tmp.path().join("mask.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }]))
        .save(&mask_path)
        .unwrap();
    let init = init_latents(&sd, &input);
    let mut r = req("a red square");
    r.init_image = Some(input);
    r.mask = Some(mask_path);
    r.strength = 1.0;
    let g = run(&sd, &WordBank::new(), &r);
    let out = &g[0].latents;
    let kept = |t: &Tensor| t.narrow(3, 0, 4).unwrap();
    let painted = |t: &Tensor| t.narrow(3, 4, 4).unwrap();
    assert!(
        mean_abs(&kept(out), &kept(&init)) < 1e-5,
        "unmasked latents changed"
    );
    assert!(
        mean_abs(&painted(out), &painted(&init)) > 1e-2,
        "masked latents were not repainted"
    );
}

#[test]
fn nine_channel_inpainting_models_take_mask_and_masked_image() {
    // Turn the tiny UNet into an inpainting UNet: 9 input channels.
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    copy_dir(&fixtures().join("tiny-sd1/model"), &m);
    let cfg_path = m.join("unet/config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"in_channels\": 4", "\"in_channels\": 9");
    std::fs::write(&cfg_path, cfg).unwrap();
    let wfile = m.join("unet/diffusion_pytorch_model.safetensors");
    let mut t = candle_core::safetensors::load(&wfile, &Device::Cpu).unwrap();
    let w = t["conv_in.weight"].clone();
    let extra = (Tensor::randn(0f32, 1.0, (32, 5, 3, 3), &Device::Cpu).unwrap() * 0.05).unwrap();
    t.insert(
        "conv_in.weight".into(),
        Tensor::cat(&[&w, &extra], 1).unwrap(),
    );
    candle_core::safetensors::save(&t, &wfile).unwrap();
    let sd = StableDiffusion::load_folder(&m, &LoadOptions::default()).unwrap();
    assert_eq!(sd.unet.in_channels(), 9);
    let input = write_test_image(tmp.path());
    let mask_path = tmp.path().join("mask.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x >= 32 { 255 } else { 0 }]))
        .save(&mask_path)
        .unwrap();
    let mut r = req("a red square");
    r.init_image = Some(input.clone());
    r.mask = Some(mask_path);
    r.strength = 1.0;
    let g = run(&sd, &WordBank::new(), &r);
    assert_eq!(g[0].image.dimensions(), (64, 64));
    r.mask = None;
    let err = generate(&sd, &WordBank::new(), &r, |_| StepControl::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inpainting model"), "{err}");
}

#[test]
fn prompt_file_writes_png_with_parameters_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let bin = env!("CARGO_BIN_EXE_dreamartist");
    let model = fixtures().join("tiny-sd1/model");
    assert!(Command::new(bin)
        .args([
            "init",
            ws.to_str().unwrap(),
            "--model",
            model.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    // An imported pseudo-word (our emb_params layout) in embeddings/.
    std::fs::create_dir_all(ws.join("embeddings")).unwrap();
    let meta = EmbeddingMeta {
        name: "toy".into(),
        ..Default::default()
    };
    save_embedding(
        &ws.join("embeddings/toy.safetensors"),
        &random_vectors(2, 9),
        &meta,
    )
    .unwrap();
    let pf = ws.join("prompts/beach.toml");
    std::fs::write(
        &pf,
        "prompt = \"a photo of <toy> on a beach\"\nseed = 1234\nsteps = 6\nscheduler = \"euler\"\n",
    )
    .unwrap();
    for _ in 0..2 {
        let out = Command::new(bin)
            .args([
                "generate",
                pf.to_str().unwrap(),
                "-w",
                ws.to_str().unwrap(),
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = ws.join("outputs/beach");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].ends_with("00001-1234.png") && files[1].ends_with("00002-1234.png"));
    let text = read_png_text(&files[0]).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        params.starts_with("a photo of <toy> on a beach\n"),
        "{params}"
    );
    assert!(
        params.contains("Seed: 1234")
            && params.contains("Sampler: Euler")
            && params.contains("Steps: 6"),
        "{params}"
    );
    let a = image::open(&files[0]).unwrap().to_rgb8();
    let b = image::open(&files[1]).unwrap().to_rgb8();
    assert_eq!(a.as_raw(), b.as_raw(), "same seed, different pixels");

    // Unknown keys are refused with the key and its line.
    std::fs::write(&pf, "prompt = \"x\"\nsteps = 6\ncfg_scale = 7\n").unwrap();
    let out = Command::new(bin)
        .args(["generate", pf.to_str().unwrap(), "-w", ws.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cfg_scale") && err.contains("line 3") && err.contains("beach.toml"),
        "{err}"
    );
}

#[test]
fn chunking_follows_a1111() {
    use dreamartist::generate::conditioning::prepare;
    use dreamartist::sd::Piece;
    let sd = model();
    let b = bank();
    // A short prompt is exactly the plain tokenization (what the goldens use).
    let p = prepare(&sd, "a photo of <cat> on a beach", &b).unwrap();
    assert_eq!(p.chunks().len(), 1);
    assert_eq!(
        p.chunks()[0].pieces,
        sd.tokenize("a photo of <cat> on a beach", &p.words).0[0]
    );
    // 74 words then a 3-vector pseudo-word: the word moves whole to chunk two.
    let prompt = format!("{}<cat>", "word ".repeat(74));
    let p = prepare(&sd, &prompt, &b).unwrap();
    assert_eq!(p.chunks().len(), 2);
    assert!(p.chunks().iter().all(|c| c.pieces.len() == 77));
    assert!(!p.chunks()[0]
        .pieces
        .iter()
        .any(|x| matches!(x, Piece::Slot(_))));
    assert_eq!(
        &p.chunks()[1].pieces[1..4],
        &[Piece::Slot(0), Piece::Slot(1), Piece::Slot(2)]
    );
    // Emphasis weights follow the tokens.
    let p = prepare(&sd, "(cat:1.5) dog", &b).unwrap();
    assert_eq!(p.chunks()[0].weights[1], 1.5);
    assert_eq!(p.chunks()[0].weights[2], 1.0);
    // BREAK starts a new chunk.
    assert_eq!(
        prepare(&sd, "a cat BREAK a dog", &b)
            .unwrap()
            .chunks()
            .len(),
        2
    );
    // A weighted pseudo-word that does not fit moves whole, weight and all;
    // the chunk it left is padded with weight 1.
    let prompt = format!("{}(<cat>:1.4)", "word ".repeat(74));
    let p = prepare(&sd, &prompt, &b).unwrap();
    assert_eq!(p.chunks().len(), 2);
    assert!(p.chunks()[0].weights.iter().all(|w| *w == 1.0));
    assert_eq!(
        &p.chunks()[1].pieces[1..4],
        &[Piece::Slot(0), Piece::Slot(1), Piece::Slot(2)]
    );
    assert_eq!(&p.chunks()[1].weights[..5], &[1.0, 1.4, 1.4, 1.4, 1.0]);
    // Two BREAKs leave an empty chunk between them, as in A1111; a BREAK in
    // brackets still breaks, and the brackets weigh both sides.
    let p = prepare(&sd, "a BREAK BREAK b", &b).unwrap();
    assert_eq!(p.chunks().len(), 3);
    let bos_eos = sd.tokenize("", &[]).0[0].clone();
    assert_eq!(p.chunks()[1].pieces, bos_eos);
    let p = prepare(&sd, "(cat BREAK dog)", &b).unwrap();
    assert_eq!(p.chunks().len(), 2);
    for c in p.chunks() {
        assert_eq!(&c.weights[..3], &[1.0, 1.1, 1.0]);
    }
}

/// Each cause of a non-finite result is named for what it is, before sampling.
#[test]
fn broken_words_and_runaway_emphasis_are_named() {
    let sd = model();
    let mut b = bank();
    let nan = Tensor::new(&[[f32::NAN; 32]], &Device::Cpu).unwrap();
    b.insert("broken", nan, "embeddings/broken.safetensors");
    let err = generate(&sd, &b, &req("a <broken>"), |_| StepControl::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("<broken>") && err.contains("NaN") && err.contains("broken.safetensors"),
        "{err}"
    );
    let deep = format!("{}cat{}", "(".repeat(10_000), ")".repeat(10_000));
    let err = generate(&sd, &b, &req(&deep), |_| StepControl::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("emphasis weight"), "{err}");
}

/// Mask polarity of 9-channel inpainting, isolated: a UNet that sees only its
/// mask channel (the masked-image channels weigh zero) must get 1 where the
/// mask image is white (repaint), as diffusers' inpainting pipeline gives it.
/// The reference runs the same denoising loop with that mask built by hand.
#[test]
fn nine_channel_mask_channel_is_one_where_the_mask_is_white() {
    use dreamartist::generate::conditioning::{encode, pad_pair, prepare};
    use dreamartist::generate::{denoise_with, Extras, GuidedContext};
    use dreamartist::sd::{MicroConditioning, Sampler};
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    copy_dir(&fixtures().join("tiny-sd1/model"), &m);
    let cfg_path = m.join("unet/config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"in_channels\": 4", "\"in_channels\": 9");
    std::fs::write(&cfg_path, cfg).unwrap();
    let wfile = m.join("unet/diffusion_pytorch_model.safetensors");
    let mut t = candle_core::safetensors::load(&wfile, &Device::Cpu).unwrap();
    let w = t["conv_in.weight"].clone();
    let out_ch = w.dim(0).unwrap();
    let mask_w =
        (Tensor::randn(0f32, 1.0, (out_ch, 1, 3, 3), &Device::Cpu).unwrap() * 0.5).unwrap();
    let zeros = Tensor::zeros((out_ch, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    t.insert(
        "conv_in.weight".into(),
        Tensor::cat(&[&w, &mask_w, &zeros], 1).unwrap(),
    );
    candle_core::safetensors::save(&t, &wfile).unwrap();
    let sd = StableDiffusion::load_folder(&m, &LoadOptions::default()).unwrap();

    let white_left = tmp.path().join("left.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]))
        .save(&white_left)
        .unwrap();
    let white_right = tmp.path().join("right.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 0 } else { 255 }]))
        .save(&white_right)
        .unwrap();
    let mut r = req("a red square");
    r.init_image = Some(write_test_image(tmp.path()));
    r.strength = 1.0;
    r.mask = Some(white_left);
    let got = generate(&sd, &WordBank::new(), &r, |_| StepControl::Continue).unwrap();
    r.mask = Some(white_right);
    let flipped = generate(&sd, &WordBank::new(), &r, |_| StepControl::Continue).unwrap();

    // The reference: the mask channel 1 on the left half (8×8 latents).
    let bank = WordBank::new();
    let cond = encode(&sd, &prepare(&sd, &r.prompt, &bank).unwrap()).unwrap();
    let uncond = encode(&sd, &prepare(&sd, "", &bank).unwrap()).unwrap();
    let (cond, uncond) = pad_pair(&sd, cond, uncond).unwrap();
    let micro = MicroConditioning::for_size(64, 64);
    let (cond, uncond) = (
        sd.conditioning(&cond, &micro).unwrap(),
        sd.conditioning(&uncond, &micro).unwrap(),
    );
    let ctx = GuidedContext {
        cond: &cond,
        uncond: &uncond,
        cfg: r.cfg,
    };
    let lat_mask = Tensor::from_vec(
        (0..64)
            .map(|i| if i % 8 < 4 { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        (1, 1, 8, 8),
        &Device::Cpu,
    )
    .unwrap();
    let concat = Tensor::cat(
        &[
            &lat_mask,
            &Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap(),
        ],
        1,
    )
    .unwrap();
    let noise = dreamartist::rng::Rng::seed(r.seed as u64)
        .randn((1, 4, 8, 8), &Device::Cpu)
        .unwrap();
    let mut sampler = Sampler::new(&sd.schedule, r.sampler, r.steps).unwrap();
    let start = (&noise * sampler.init_noise_sigma()).unwrap();
    let want = denoise_with(
        &sd.unet,
        &mut sampler,
        start,
        0,
        &ctx,
        &Extras {
            blend: None,
            concat: Some(&concat),
        },
        |_, _| StepControl::Continue,
    )
    .unwrap()
    .unwrap();
    assert!(
        mean_abs(&got[0].latents, &want) < 1e-6,
        "white must mean repaint (1)"
    );
    assert!(
        mean_abs(&flipped[0].latents, &want) > 1e-3,
        "the mask channel has no effect: the test could not fail"
    );
}

/// A mask of another shape than its image would repaint somewhere else than
/// drawn: refused, naming both sizes.
#[test]
fn a_mask_of_another_shape_is_refused() {
    let sd = model();
    let tmp = tempfile::tempdir().unwrap();
    let input = write_test_image(tmp.path());
    let mask = tmp.path().join("mask.png");
    image::GrayImage::new(7, 13).save(&mask).unwrap();
    let mut r = req("a red square");
    r.init_image = Some(input);
    r.mask = Some(mask);
    let err = generate(&sd, &WordBank::new(), &r, |_| StepControl::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("7×13") && err.contains("64×64"), "{err}");
}
