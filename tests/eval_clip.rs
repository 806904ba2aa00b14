//! CLIP parity with the reference (transformers) on the tiny random CLIP:
//! token ids, `pixel_values` (CLIPImageProcessor), projected text and image
//! features, and the cosine matrices; plus clear errors for broken folders.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use dreamartist::eval::metrics::{cosine_matrix, normalized_rows};
use dreamartist::eval::{ClipError, ClipModel};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip")
}

fn goldens() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("goldens.safetensors"), &Device::Cpu).unwrap()
}

fn meta() -> (Vec<String>, Vec<String>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("goldens.json")).unwrap())
            .unwrap();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    (list("texts"), list("images"))
}

fn model() -> ClipModel {
    ClipModel::load_folder(&fixture(), &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

fn images() -> Vec<image::RgbImage> {
    meta()
        .1
        .iter()
        .map(|f| ClipModel::open_image(&fixture().join(f)).unwrap())
        .collect()
}

#[test]
fn token_ids_match_exactly() {
    let m = model();
    let g = goldens();
    let expected = g["text_ids"].to_vec2::<i64>().unwrap();
    for (text, want) in meta().0.iter().zip(expected) {
        let got: Vec<i64> = m.text_ids(text).into_iter().map(i64::from).collect();
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn pixel_values_match_clip_image_processor() {
    let m = model();
    let imgs = images();
    let refs: Vec<&image::RgbImage> = imgs.iter().collect();
    let got = m.preprocessor.batch(&refs, &Device::Cpu).unwrap();
    let err = max_abs(&got, &goldens()["pixel_values"]);
    eprintln!("pixel_values max |err| = {err:e}");
    // Pillow's resampling is ported exactly; only f32 rounding may differ.
    assert!(err < 1e-5, "pixel_values differ by {err}");
}

#[test]
fn text_and_image_embeddings_match() {
    let m = model();
    let g = goldens();
    let (texts, _) = meta();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text = m.embed_texts(&refs).unwrap();
    let t_err = max_abs(&text, &g["text_embeds"]);
    // The vision tower alone, on the reference's own pixel values…
    let from_pixels = m.embed_pixels(&g["pixel_values"]).unwrap();
    let p_err = max_abs(&from_pixels, &g["image_embeds"]);
    // …and end to end from the PNG files.
    let imgs = images();
    let image = m.embed_images(&imgs.iter().collect::<Vec<_>>()).unwrap();
    let i_err = max_abs(&image, &g["image_embeds"]);
    eprintln!("text_embeds max |err| = {t_err:e}; image_embeds from pixel_values {p_err:e}, from PNGs {i_err:e}");
    assert!(t_err < 1e-4, "text_embeds differ by {t_err}");
    assert!(
        p_err < 1e-4,
        "image_embeds (pixel_values) differ by {p_err}"
    );
    assert!(i_err < 1e-4, "image_embeds (PNG) differ by {i_err}");

    let t = normalized_rows(&text).unwrap();
    let i = normalized_rows(&image).unwrap();
    let check = |name: &str, got: Vec<Vec<f64>>| {
        let want = g[name].to_vec2::<f32>().unwrap();
        let mut worst = 0f64;
        for (gr, wr) in got.iter().zip(&want) {
            for (a, b) in gr.iter().zip(wr) {
                worst = worst.max((a - *b as f64).abs());
            }
        }
        eprintln!("{name} max |err| = {worst:e}");
        assert!(worst < 1e-4, "{name} differs by {worst}");
    };
    check("cosine_image_image", cosine_matrix(&i, &i));
    check("cosine_text_image", cosine_matrix(&t, &i));
    // The matrices are not symmetric or trivial: a transposed or constant
    // answer would fail.
    let ti = cosine_matrix(&t, &i);
    assert!((ti[0][1] - ti[1][0]).abs() > 1e-3);
}

#[test]
fn long_prompts_are_truncated_to_the_context_with_eos_last() {
    let m = model();
    let ids = m.text_ids(&"cat ".repeat(200));
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[76], m.tokenizer.eos);
    let e = m.embed_texts(&[&"cat ".repeat(200), "a cat"]).unwrap();
    assert_eq!(e.dims(), &[2, 24]);
}

/// A copy of the fixture in a temp folder, to break.
fn broken_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> String {
    match ClipModel::load_folder(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_or_malformed_files_are_named() {
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "vocab.json",
        "merges.txt",
    ] {
        let tmp = broken_copy();
        std::fs::remove_file(tmp.path().join(file)).unwrap();
        let e = load_err(tmp.path());
        assert!(e.contains(file) && e.contains("missing"), "{file}: {e}");
    }
    for (file, content) in [
        ("config.json", "{ not json"),
        ("preprocessor_config.json", "{\"size\": \"big\"}"),
        ("model.safetensors", "truncated"),
    ] {
        let tmp = broken_copy();
        std::fs::write(tmp.path().join(file), content).unwrap();
        let e = load_err(tmp.path());
        assert!(e.contains(file) && e.contains("invalid"), "{file}: {e}");
    }
    // Weights that do not fit the config name the file and the tensor.
    let tmp = broken_copy();
    let cfg = std::fs::read_to_string(tmp.path().join("config.json"))
        .unwrap()
        .replace("\"projection_dim\": 24", "\"projection_dim\": 16");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("projection"),
        "{e}"
    );
    // A gelu CLIP is refused by name, not run wrongly.
    let tmp = broken_copy();
    let cfg = std::fs::read_to_string(tmp.path().join("config.json"))
        .unwrap()
        .replacen("quick_gelu", "gelu", 1);
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("gelu"), "{e}");
}

#[test]
fn specs_resolve_folders_and_the_offline_hf_cache() {
    // A folder that does not exist.
    let e = ClipModel::load("/nonexistent/clip", &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, ClipError::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/clip"));
    // hf: specs come from the cache layout (models--org--name/snapshots/<rev>/).
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--openai--clip-tiny");
    let snap = repo.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
    let hf = hf_hub::Cache::new(cache.path().to_path_buf());
    let dir = dreamartist::eval::resolve_clip("hf:openai/clip-tiny", &hf).unwrap();
    assert_eq!(dir, snap);
    assert!(ClipModel::load_folder(&dir, &Device::Cpu).is_ok());
    let e = dreamartist::eval::resolve_clip("hf:openai/clip-vit-large-patch14", &hf)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not in the Hugging Face cache"), "{e}");
}
