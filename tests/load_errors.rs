//! A broken model folder gives one clear error that names the file and says
//! what was expected, from the library and from the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use common::copy_dir;
use dreamartist::sd::{LoadError, LoadOptions, StableDiffusion};

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1/model")
}

/// A private copy of the tiny model that a test may break.
fn scratch_model() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&fixture_model(), &model);
    (tmp, model)
}

fn rewrite_unet(
    model: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) -> PathBuf {
    let file = model.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    file
}

fn load_err(model: &Path) -> LoadError {
    match StableDiffusion::load_folder(model, &LoadOptions::default()) {
        Ok(_) => panic!("broken model {} loaded", model.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let (_tmp, model) = scratch_model();
    let file = rewrite_unet(&model, |t| {
        t.remove("conv_in.weight");
    });
    let err = load_err(&model);
    assert!(matches!(err, LoadError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("conv_in.weight"), "{msg}");
    assert!(msg.contains("[32, 4, 3, 3]"), "{msg}");
}

#[test]
fn wrong_shape_names_both_shapes() {
    let (_tmp, model) = scratch_model();
    let file = rewrite_unet(&model, |t| {
        t.insert(
            "conv_out.bias".into(),
            Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&model);
    assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(
        msg.contains("conv_out.bias") && msg.contains("[5]") && msg.contains("[4]"),
        "{msg}"
    );
}

#[test]
fn malformed_config_names_the_config() {
    let (_tmp, model) = scratch_model();
    let cfg = model.join("unet/config.json");
    std::fs::write(&cfg, "{ \"block_out_channels\": [32, 64,").unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::BadConfig { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&cfg.display().to_string()),
        "{err}"
    );
}

#[test]
fn inconsistent_config_is_reported_against_the_config() {
    let (_tmp, model) = scratch_model();
    let cfg = model.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"norm_num_groups\": 32", "\"norm_num_groups\": 7"),
    )
    .unwrap();
    let err = load_err(&model);
    assert!(
        err.to_string().contains(&cfg.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("7 norm groups"), "{err}");
}

#[test]
fn a_broken_merges_file_is_named_as_itself() {
    let (_tmp, model) = scratch_model();
    let merges = model.join("tokenizer/merges.txt");
    std::fs::write(&merges, "#version: 0.2\nno-space-here\n").unwrap();
    let msg = load_err(&model).to_string();
    assert!(msg.contains(&merges.display().to_string()), "{msg}");
    std::fs::write(&merges, "#version: 0.2\nq r\n").unwrap();
    let msg = load_err(&model).to_string();
    assert!(
        msg.contains("merges.txt") && msg.contains("does not match vocab.json"),
        "{msg}"
    );
}

#[test]
fn missing_tokenizer_file_is_named() {
    let (_tmp, model) = scratch_model();
    let merges = model.join("tokenizer/merges.txt");
    std::fs::remove_file(&merges).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&merges.display().to_string()) && msg.contains("merges.txt"),
        "{msg}"
    );
}

#[test]
fn truncated_weights_file_is_reported() {
    let (_tmp, model) = scratch_model();
    let file = model.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::BadWeights { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn unknown_model_folder_and_hf_cache_miss() {
    let err = StableDiffusion::load("/nonexistent/model", &LoadOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let cache = hf_hub::Cache::new(tmp.path().to_path_buf());
    let spec = dreamartist::sd::ModelSpec::parse("hf:someone/missing-model");
    let err = spec.resolve_with_cache(&cache).err().unwrap();
    assert!(matches!(err, LoadError::NotInHfCache { .. }), "{err:?}");
    assert!(err.to_string().contains("someone/missing-model"), "{err}");
}

#[test]
fn hf_cache_snapshot_is_resolved_offline() {
    // Lay out a cache the way huggingface_hub does: refs/main → snapshots/<hash>/.
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--tiny--sd1");
    let snap = repo.join("snapshots/0123abcd");
    copy_dir(&fixture_model(), &snap);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let dir = dreamartist::sd::ModelSpec::HfCache {
        repo: "tiny/sd1".into(),
        revision: None,
    };
    let cache = hf_hub::Cache::new(tmp.path().to_path_buf());
    assert_eq!(dir.resolve_with_cache(&cache).unwrap(), snap);
}

#[test]
fn binary_reports_broken_fixture_model_and_exits_nonzero() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("fx");
    copy_dir(fixture_model().parent().unwrap(), &fixture);
    std::fs::remove_file(fixture.join("model/tokenizer/vocab.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dreamartist"))
        .args(["selftest", fixture.to_str().unwrap(), "--kinds", "tokenize"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vocab.json"), "{stderr}");
}

/// A private copy of the tiny SDXL model that a test may break.
fn scratch_sdxl() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl/model"),
        &model,
    );
    (tmp, model)
}

#[test]
fn sdxl_without_its_second_text_encoder_names_the_folder() {
    let (_tmp, model) = scratch_sdxl();
    std::fs::remove_dir_all(model.join("text_encoder_2")).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&model.join("text_encoder_2").display().to_string()) && msg.contains("SDXL"),
        "{msg}"
    );
}

#[test]
fn sdxl_second_encoder_without_projection_or_truncated_is_named() {
    let (_tmp, model) = scratch_sdxl();
    let file = model.join("text_encoder_2/model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    tensors.remove("text_projection.weight");
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("text_projection.weight"),
        "{msg}"
    );

    let (_tmp, model) = scratch_sdxl();
    let file = model.join("text_encoder_2/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::BadWeights { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn sdxl_unet_that_does_not_fit_the_text_encoders_names_both_widths() {
    let (_tmp, model) = scratch_sdxl();
    // A text encoder 2 wider than the UNet's cross-attention expects.
    let cfg = model.join("text_encoder_2/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"projection_dim\": 24", "\"projection_dim\": 20"),
    )
    .unwrap();
    let err = load_err(&model);
    let msg = err.to_string();
    assert!(msg.contains("text_projection"), "{msg}");

    let (_tmp, model) = scratch_sdxl();
    let cfg = model.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "\"addition_time_embed_dim\": 8",
            "\"addition_time_embed_dim\": 9",
        ),
    )
    .unwrap();
    let err = load_err(&model);
    let msg = err.to_string();
    assert!(msg.contains(&cfg.display().to_string()), "{msg}");
}

/// A vocabulary with ids past the text encoder's embedding rows would fail in
/// the middle of a prompt (with a tensor error); it is refused at load, named.
#[test]
fn a_vocabulary_larger_than_the_encoder_is_refused_at_load() {
    let (_tmp, model) = scratch_model();
    let vocab = model.join("tokenizer/vocab.json");
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&vocab).unwrap()).unwrap();
    v.insert("zzzzzz</w>".into(), serde_json::json!(49408));
    std::fs::write(&vocab, serde_json::to_string(&v).unwrap()).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, LoadError::BadTokenizer { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&vocab.display().to_string())
            && msg.contains("49409")
            && msg.contains("49408"),
        "{msg}"
    );
}

/// A cache laid out as `huggingface_hub` leaves it after
/// `snapshot_download(repo, revision=<commit>)`: the snapshot folder, and no
/// `refs/<commit>` file (only branches get refs).
fn cache_with_commit(commit: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--tiny--sd1");
    let snap = repo.join("snapshots").join(commit);
    copy_dir(&fixture_model(), &snap);
    (tmp, snap)
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn hf_revisions_resolve_by_commit_and_by_branch() {
    let (tmp, snap) = cache_with_commit(COMMIT);
    let cache = hf_hub::Cache::new(tmp.path().to_path_buf());
    let resolve = |spec: &str| {
        dreamartist::sd::ModelSpec::parse(spec)
            .resolve_with_cache(&cache)
            .map_err(Box::new)
    };
    // A commit is its own snapshot folder.
    assert_eq!(resolve(&format!("hf:tiny/sd1@{COMMIT}")).unwrap(), snap);
    // No branch points there yet: neither the default one nor a named one.
    for spec in ["hf:tiny/sd1", "hf:tiny/sd1@fp16"] {
        let e = resolve(spec).unwrap_err();
        assert!(matches!(*e, LoadError::NotInHfCache { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{spec}`")), "{msg}");
        if spec.contains('@') {
            assert!(msg.contains("--revision fp16"), "{msg}");
        }
    }
    // Branches go through refs/<branch>.
    let refs = tmp.path().join("models--tiny--sd1/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("fp16"), COMMIT).unwrap();
    assert_eq!(resolve("hf:tiny/sd1@fp16").unwrap(), snap);
    // A commit that is not there, and a revision shaped like a path, find nothing.
    let other = "f".repeat(40);
    assert!(resolve(&format!("hf:tiny/sd1@{other}")).is_err());
    assert!(resolve("hf:tiny/sd1@../../..").is_err());
}

#[test]
fn hf_cache_location_follows_huggingface_hub() {
    use dreamartist::sd::model::hf_cache_from;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| std::ffi::OsString::from(v))
        }
    };
    let all: &[(&str, &str)] = &[
        ("HF_HUB_CACHE", "/a"),
        ("HUGGINGFACE_HUB_CACHE", "/b"),
        ("HF_HOME", "/c"),
        ("XDG_CACHE_HOME", "/d"),
        ("HOME", "/e"),
    ];
    assert_eq!(hf_cache_from(env(all)).path(), Path::new("/a"));
    assert_eq!(hf_cache_from(env(&all[1..])).path(), Path::new("/b"));
    assert_eq!(hf_cache_from(env(&all[2..])).path(), Path::new("/c/hub"));
    assert_eq!(
        hf_cache_from(env(&all[3..])).path(),
        Path::new("/d/huggingface/hub")
    );
    assert_eq!(
        hf_cache_from(env(&all[4..])).path(),
        Path::new("/e/.cache/huggingface/hub")
    );
    // Empty values count as unset; no home at all does not panic.
    assert_eq!(
        hf_cache_from(env(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/c")])).path(),
        Path::new("/c/hub")
    );
    assert_eq!(
        hf_cache_from(env(&[])).path(),
        Path::new(".cache/huggingface/hub")
    );
}

/// `hf:` end to end: a workspace on `hf:org/name@<commit>` generates through
/// the binary with the cache given by `$HF_HUB_CACHE`.
#[test]
fn binary_generates_from_an_hf_commit_in_the_cache() {
    let (cache, _snap) = cache_with_commit(COMMIT);
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let spec = format!("hf:tiny/sd1@{COMMIT}");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dreamartist"))
            .args(args)
            .env("HF_HUB_CACHE", cache.path())
            .env_remove("HF_HOME")
            .output()
            .unwrap()
    };
    let out = run(&["init", ws.to_str().unwrap(), "--model", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = tmp.path().join("x.png");
    let out = run(&[
        "generate",
        "-w",
        ws.to_str().unwrap(),
        "--prompt",
        "a photo of a cat",
        "--seed",
        "3",
        "--steps",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    // The image names the repository, not the snapshot's commit.
    let text = dreamartist::generate::png::read_png_text(&png).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(params.contains("Model: sd1,"), "{params}");
    // Another cache: the same workspace names what is missing and how to get it.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dreamartist"))
        .args([
            "generate",
            "-w",
            ws.to_str().unwrap(),
            "--prompt",
            "x",
            "--steps",
            "1",
        ])
        .env("HF_HUB_CACHE", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&spec) && err.contains(&format!("--revision {COMMIT}")),
        "{err}"
    );
}
