//! DreamArtist++ end to end through the binary on tiny-sd1: a concept made
//! with `--method dreamartist++` trains its word pair and a positive and a
//! negative LoRA adapter, writes them as kohya LoRA files beside the pair,
//! resumes bit for bit (adapters, their AdamW moments and EMA included), and
//! a concept retrained without adapters drops its old ones.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{assert_bitwise_same, fixtures, workspace_with_concept};

fn da_pp_workspace() -> tempfile::TempDir {
    workspace_with_concept(
        &fixtures().join("tiny-sd1/model"),
        "cat",
        &fixtures().join("references/chelsea.png"),
        &["--method", "dreamartist++"],
    )
}

fn train(ws: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    common::train_events(ws, "cat", extra)
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_dir(events: &[serde_json::Value]) -> PathBuf {
    PathBuf::from(events.last().unwrap()["run_dir"].as_str().unwrap())
}

#[test]
fn concept_add_records_the_method() {
    let tmp = da_pp_workspace();
    let toml = std::fs::read_to_string(tmp.path().join("ws/concepts/cat/concept.toml")).unwrap();
    assert!(toml.contains("method = \"dreamartist++\""), "{toml}");
    let err = common::fails(&[
        "concept",
        "add",
        "dog",
        "--reference",
        fixtures().join("references/chelsea.png").to_str().unwrap(),
        "--method",
        "lora",
        "-w",
        tmp.path().join("ws").to_str().unwrap(),
    ]);
    assert!(err.contains("unknown method `lora`"), "{err}");
}

#[test]
fn training_writes_kohya_adapters_that_move() {
    let tmp = da_pp_workspace();
    let ws = tmp.path().join("ws");
    let events = train(&ws, &["--steps", "8", "--lora-lr", "0.01", "--seed", "3"]);
    let run = run_dir(&events);
    for dir in [run.clone(), ws.join("concepts/cat")] {
        for (file, branch) in [
            ("cat.lora.safetensors", "positive"),
            ("cat-neg.lora.safetensors", "negative"),
        ] {
            let path = dir.join(file);
            let t = tensors(&path);
            // attn + ff (the default targets) of every transformer block.
            let downs: Vec<&String> = t
                .keys()
                .filter(|k| k.ends_with(".lora_down.weight"))
                .collect();
            assert!(!downs.is_empty());
            assert_eq!(
                t.len(),
                downs.len() * 3,
                "{file}: down, up, alpha per layer"
            );
            assert!(
                downs.iter().all(|k| k.starts_with("lora_unet_")),
                "UNet only by default"
            );
            assert!(t
                .keys()
                .any(|k| k.ends_with("_ff_net_0_proj.lora_up.weight")));
            // The ups start at zero and must have moved.
            let moved: f32 = t
                .iter()
                .filter(|(k, _)| k.ends_with(".lora_up.weight"))
                .map(|(_, v)| {
                    v.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                })
                .sum();
            assert!(moved > 0.0, "{file}: the adapter did not train");
            let meta = dreamartist::sd::lora_file::read_metadata(&path).unwrap();
            assert_eq!(meta["ss_network_dim"], "4");
            assert_eq!(meta["ss_network_alpha"], "4");
            assert_eq!(meta["ss_base_model_version"], "sd_v1");
            assert_eq!(meta["dreamartist_method"], "dreamartist++");
            assert_eq!(meta["dreamartist_branch"], branch);
            assert_eq!(meta["dreamartist_step"], "8");
        }
    }
    // Retrained as plain DreamArtist: the concept's adapters go.
    train(&ws, &["--steps", "2", "--method", "dreamartist"]);
    assert!(!ws.join("concepts/cat/cat.lora.safetensors").exists());
    assert!(!ws.join("concepts/cat/cat-neg.lora.safetensors").exists());
    // The DA++ run keeps its own.
    assert!(run.join("cat.lora.safetensors").exists());
}

/// A run killed between checkpoints resumes and ends bit for bit where an
/// uninterrupted run ends: words, both adapters (EMA on), their optimiser.
#[test]
fn resume_is_bitwise_with_adapters() {
    let (a, b) = (da_pp_workspace(), da_pp_workspace());
    let (wa, wb) = (a.path().join("ws"), b.path().join("ws"));
    let opts = |steps: &'static str| {
        vec![
            "--seed",
            "5",
            "--lora-lr",
            "0.003",
            "--ema-decay",
            "0.7",
            "--grad-accum",
            "2",
            "--checkpoint-every",
            "4",
            "--steps",
            steps,
        ]
    };
    let straight = train(&wa, &opts("10"));
    let first = train(&wb, &opts("10"));
    let rd = run_dir(&first);
    std::fs::remove_file(rd.join("checkpoints/step-00000010.safetensors")).unwrap();
    std::fs::remove_file(rd.join("checkpoints/step-00000008.safetensors")).unwrap();
    let resumed = train(&wb, &["--steps", "10", "--resume", "latest"]);
    assert_eq!(resumed[0]["start_step"], 4);
    let (sa, sb) = (run_dir(&straight), run_dir(&resumed));
    for file in [
        "cat.safetensors",
        "cat-neg.safetensors",
        "cat.lora.safetensors",
        "cat-neg.lora.safetensors",
    ] {
        let (x, y) = (tensors(&sa.join(file)), tensors(&sb.join(file)));
        assert_eq!(x.len(), y.len(), "{file}");
        for (k, v) in &x {
            assert_bitwise_same(v, &y[k], &format!("{file} {k}"));
        }
    }
}

fn generate_png(ws: &Path, out: &Path, extra: &[&str]) -> image::RgbImage {
    common::run_ok(
        common::bin()
            .args([
                "generate",
                "-w",
                ws.to_str().unwrap(),
                "--prompt",
                "a photo of <cat>",
            ])
            .args(["--seed", "7", "--steps", "4", "--out"])
            .arg(out)
            .args(extra),
    );
    image::open(out).unwrap().to_rgb8()
}

/// `<cat>` brings its adapters: they change the image; at strength 0 the
/// image is the one without adapter files; previews render with them.
#[test]
fn generation_applies_the_adapters_by_strength() {
    let tmp = da_pp_workspace();
    let ws = tmp.path().join("ws");
    train(
        &ws,
        &[
            "--steps",
            "6",
            "--lora-lr",
            "0.05",
            "--seed",
            "2",
            "--sample-every",
            "3",
        ],
    );
    let run = std::fs::read_dir(ws.join("concepts/cat/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        run.join("samples").read_dir().unwrap().count() >= 2,
        "previews rendered"
    );
    let out = tmp.path();
    let with = generate_png(&ws, &out.join("with.png"), &[]);
    let zero = generate_png(
        &ws,
        &out.join("zero.png"),
        &["--lora-pos", "0", "--lora-neg", "0"],
    );
    let only_pos = generate_png(&ws, &out.join("pos.png"), &["--lora-neg", "0"]);
    for f in ["cat.lora.safetensors", "cat-neg.lora.safetensors"] {
        std::fs::rename(ws.join("concepts/cat").join(f), out.join(f)).unwrap();
    }
    let without = generate_png(&ws, &out.join("without.png"), &[]);
    assert_eq!(zero.as_raw(), without.as_raw(), "strength 0 is no adapter");
    assert_ne!(
        with.as_raw(),
        without.as_raw(),
        "the adapters change the image"
    );
    assert_ne!(
        with.as_raw(),
        only_pos.as_raw(),
        "the negative adapter acts too"
    );
    // A bad strength is refused by name.
    let err = common::fails(&[
        "generate",
        "-w",
        ws.to_str().unwrap(),
        "--prompt",
        "x",
        "--lora-pos",
        "nan",
    ]);
    assert!(err.contains("lora_pos"), "{err}");
}

/// `inspect` reports the adapters, `export` carries them, and `import
/// --lora-of` makes a kohya LoRA another concept's adapter, which
/// generation then applies.
#[test]
fn adapters_are_inspected_exported_and_imported() {
    let tmp = da_pp_workspace();
    let ws = tmp.path().join("ws");
    train(&ws, &["--steps", "4", "--lora-lr", "0.05"]);
    let lora = ws.join("concepts/cat/cat.lora.safetensors");
    let report = common::ok(&["inspect", lora.to_str().unwrap()]);
    assert!(report.contains("LoRA network (kohya layout)"), "{report}");
    assert!(report.contains("rank:       4"), "{report}");
    assert!(report.contains("dreamartist_branch: positive"), "{report}");

    let out = tmp.path().join("export");
    let listed = common::ok(&[
        "export",
        "cat",
        "--format",
        "a1111",
        "--out",
        out.to_str().unwrap(),
        "-w",
        ws.to_str().unwrap(),
    ]);
    for f in ["cat.lora.safetensors", "cat-neg.lora.safetensors"] {
        assert!(listed.contains(f), "{listed}");
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(ws.join("concepts/cat").join(f)).unwrap()
        );
    }

    // Another workspace: a plain DreamArtist concept, then the LoRA as its adapter.
    let other = workspace_with_concept(
        &fixtures().join("tiny-sd1/model"),
        "cat",
        &fixtures().join("references/chelsea.png"),
        &[],
    );
    let ows = other.path().join("ws");
    train(&ows, &["--steps", "2"]);
    let before = generate_png(&ows, &other.path().join("before.png"), &[]);
    let imported = common::ok(&[
        "import",
        out.join("cat.lora.safetensors").to_str().unwrap(),
        "--lora-of",
        "cat",
        "-w",
        ows.to_str().unwrap(),
    ]);
    assert!(
        imported.contains("positive adapter of concept cat"),
        "{imported}"
    );
    let after = generate_png(&ows, &other.path().join("after.png"), &[]);
    assert!(
        before.as_raw() != after.as_raw(),
        "the imported adapter acts"
    );
    // Retraining without adapters keeps an imported one.
    train(&ows, &["--steps", "1"]);
    assert!(ows.join("concepts/cat/cat.lora.safetensors").exists());
    // An embedding is not a LoRA.
    let err = common::fails(&[
        "import",
        ows.join("concepts/cat/cat.safetensors").to_str().unwrap(),
        "--lora-of",
        "cat",
        "-w",
        ows.to_str().unwrap(),
    ]);
    assert!(err.contains("not a LoRA network"), "{err}");
}
