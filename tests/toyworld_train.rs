//! The trainer options the toy-world benchmark needs, through the binary on the
//! bundled toy model: `concept add --preset toy --init-mode mean` with a
//! several-word init text, a one-line custom template, posterior sampling
//! (`--vae-sample`) that keeps resume bit-exact, and refusals of bad values.

mod common;

use std::path::Path;

use common::{bin, root, run_ok, workspace_with_concept};

use dreamartist::concept::{load_embedding, Concept};
use dreamartist::sd::{LoadOptions, StableDiffusion};
use dreamartist::toyworld::INIT_TEXT;
use dreamartist::workspace::Workspace;

/// A workspace on the toy model with concept `cross` (preset toy, mean init).
fn toy_workspace(extra: &[&str]) -> tempfile::TempDir {
    let mut options = vec!["--preset", "toy", "--init-text", INIT_TEXT];
    options.extend_from_slice(extra);
    workspace_with_concept(
        &root().join("assets/toyworld"),
        "cross",
        &root().join("references/purple_cross.png"),
        &options,
    )
}

fn train(ws: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        bin()
            .args(["train", "cross", "-w", ws.to_str().unwrap(), "--json"])
            .args(["--batch", "1", "--checkpoint-every", "3"])
            .args(extra),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().expect("events");
    serde_json::from_str(last).unwrap()
}

/// The bit patterns of the vectors in an embedding file.
fn bits(path: &Path) -> Vec<u32> {
    let (t, _) = load_embedding(path).unwrap();
    common::f32_bits(&t)
}

#[test]
fn concept_add_writes_the_toy_preset_with_mean_init() {
    let tmp = toy_workspace(&["--init-mode", "mean", "--init-noise", "0.002"]);
    let ws = Workspace::open(&tmp.path().join("ws")).unwrap();
    let c = Concept::load(&ws, "cross").unwrap();
    assert_eq!((c.pos_vectors, c.neg_vectors), (3, 6));
    assert_eq!(c.init_text, INIT_TEXT);
    assert_eq!(c.train.init_mode, "mean");
    assert_eq!(c.train.init_noise, 0.002);
    assert_eq!(c.train.template, "a photo of [name]");
    assert!(c.train.vae_sample);
    assert_eq!((c.train.steps, c.train.batch_size), (400, 4));

    // Untrained (zero-rate) run: every vector is the twelve words' mean embedding
    // plus noise of about the asked size.
    let run = train(ws.root.as_path(), &["--steps", "1", "--lr", "0"]);
    let (pos, _) = load_embedding(Path::new(run["positive"].as_str().unwrap())).unwrap();
    let (neg, _) = load_embedding(Path::new(run["negative"].as_str().unwrap())).unwrap();
    assert_eq!((pos.dims(), neg.dims()), (&[3, 64][..], &[6, 64][..]));
    let sd = StableDiffusion::load_folder(&root().join("assets/toyworld"), &LoadOptions::default())
        .unwrap();
    let tower = sd.text.first();
    let ids = tower.tokenizer.encode_text(INIT_TEXT);
    assert_eq!(ids.len(), 12, "one token per word");
    let mean = tower
        .encoder
        .token_embeddings(&ids)
        .unwrap()
        .mean_keepdim(0)
        .unwrap();
    for m in [&pos, &neg] {
        let dev = m.broadcast_sub(&mean).unwrap();
        let std = dev.sqr().unwrap().mean_all().unwrap().sqrt().unwrap();
        let std = std.to_scalar::<f32>().unwrap();
        assert!((0.001..0.004).contains(&std), "noise std {std}");
    }
    // The vectors differ from each other (the noise), and from any one word.
    let rows = pos.to_vec2::<f32>().unwrap();
    assert_ne!(rows[0], rows[1]);
}

#[test]
fn posterior_sampling_changes_training_and_resumes_bit_for_bit() {
    let a = toy_workspace(&["--init-mode", "mean"]);
    let b = toy_workspace(&["--init-mode", "mean"]);
    let (wa, wb) = (a.path().join("ws"), b.path().join("ws"));
    let straight = train(&wa, &["--steps", "6", "--seed", "5", "--vae-sample"]);
    train(&wb, &["--steps", "3", "--seed", "5", "--vae-sample"]);
    let resumed = train(&wb, &["--steps", "6", "--resume", "latest"]);
    assert_eq!(resumed["steps"], 6);
    for key in ["positive", "negative"] {
        let x = bits(Path::new(straight[key].as_str().unwrap()));
        let y = bits(Path::new(resumed[key].as_str().unwrap()));
        assert_eq!(x, y, "{key} vectors differ after resume");
    }
    // The posterior mean instead (the default) trains differently.
    let mean_only = toy_workspace(&["--init-mode", "mean"]);
    let wm = mean_only.path().join("ws");
    let ws = Workspace::open(&wm).unwrap();
    let mut concept = Concept::load(&ws, "cross").unwrap();
    concept.train.vae_sample = false;
    concept.save(&ws).unwrap();
    let m = train(&wm, &["--steps", "6", "--seed", "5"]);
    assert_ne!(
        bits(Path::new(straight["positive"].as_str().unwrap())),
        bits(Path::new(m["positive"].as_str().unwrap()))
    );
}

#[test]
fn textual_inversion_on_the_toy_preset_writes_no_negative() {
    let tmp = toy_workspace(&[]);
    let ws = tmp.path().join("ws");
    let done = train(&ws, &["--steps", "2", "--train-cfg", "1"]);
    assert!(done["negative"].is_null(), "{done}");
    assert!(!ws.join("concepts/cross/cross-neg.safetensors").exists());
}

#[test]
fn bad_init_modes_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let model = root().join("assets/toyworld");
    run_ok(bin().args([
        "init",
        ws.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]));
    for (flag, value, needle) in [
        ("--init-mode", "median", "unknown init mode `median`"),
        (
            "--init-noise",
            "nan",
            "--init-noise must be a non-negative number",
        ),
    ] {
        let out = bin()
            .args(["concept", "add", "cross", "--reference"])
            .arg(root().join("references/purple_cross.png"))
            .args(["--preset", "toy", flag, value, "-w"])
            .arg(&ws)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
        assert!(!ws.join("concepts/cross").exists());
        assert_eq!(std::fs::read_dir(ws.join("references")).unwrap().count(), 0);
    }
}
