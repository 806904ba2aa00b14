//! Weight layouts real repositories ship besides one `.safetensors` per
//! component: `.fp16` variants and sharded files with an index, and f16
//! training and generation through the binary.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{bin, copy_dir, fixtures, ok, run_ok};
use dreamartist::sd::{LoadOptions, PseudoWord, StableDiffusion};

fn load(dir: &Path) -> StableDiffusion {
    StableDiffusion::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

fn hidden(sd: &StableDiffusion) -> Vec<f32> {
    let tokens = sd.tokenize("a photo of a cat", &[] as &[PseudoWord]);
    sd.text
        .encode(&[tokens], None)
        .unwrap()
        .hidden
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn sharded_text_encoder_reads_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    copy_dir(&fixtures().join("tiny-sd1/model"), &m);
    let te = m.join("text_encoder");
    let all = candle_core::safetensors::load(te.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [a, b].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), all[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, te.join(&file)).unwrap();
        for n in part.iter() {
            map.insert((*n).clone(), file.clone().into());
        }
    }
    std::fs::remove_file(te.join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(te.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = load(&m);
    let plain = load(&fixtures().join("tiny-sd1/model"));
    assert!(hidden(&sharded) == hidden(&plain));

    // A shard that climbs out of the folder is refused, naming the index.
    let mut bad = map.clone();
    let first = names[0].clone();
    bad.insert(
        first,
        "../../unet/diffusion_pytorch_model.safetensors".into(),
    );
    let index = serde_json::json!({"weight_map": bad});
    std::fs::write(te.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let e = StableDiffusion::load(m.to_str().unwrap(), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("shard"),
        "{e}"
    );
    // A listed shard that is missing is named.
    std::fs::write(te.join("model.safetensors.index.json"), {
        let mut m2 = map.clone();
        m2.insert(names[0].clone(), "model-00003-of-00002.safetensors".into());
        serde_json::json!({"weight_map": m2}).to_string()
    })
    .unwrap();
    let e = StableDiffusion::load(m.to_str().unwrap(), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model-00003-of-00002.safetensors"), "{e}");
}

#[test]
fn fp16_variant_files_load() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model");
    copy_dir(&fixtures().join("tiny-sd1/model"), &m);
    for (dir, base) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ] {
        let src = m.join(dir).join(format!("{base}.safetensors"));
        let t = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
        let half: HashMap<String, Tensor> = t
            .into_iter()
            .map(|(k, v)| {
                let v = if v.dtype().is_float() {
                    v.to_dtype(DType::F16).unwrap()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        candle_core::safetensors::save(&half, m.join(dir).join(format!("{base}.fp16.safetensors")))
            .unwrap();
        std::fs::remove_file(src).unwrap();
    }
    // f16 on disk, computed in f32: the text encoding is the f32 model's to
    // within f16 rounding of the weights.
    let variant = load(&m);
    let plain = load(&fixtures().join("tiny-sd1/model"));
    let (a, b) = (hidden(&variant), hidden(&plain));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst > 0.0, "the f16 files were not read");
    assert!(worst < 1e-2 * scale, "{worst} vs scale {scale}");
}

/// f16 outside selftest: a workspace in f16 trains (vectors stay f32 and
/// move) and generates an image close to the f32 one.
#[test]
fn f16_workspace_trains_and_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for dtype in ["f32", "f16"] {
        let ws = tmp.path().join(dtype);
        let ws_s = ws.to_str().unwrap();
        let model = fixtures().join("tiny-sd1/model");
        ok(&["init", ws_s, "--model", model.to_str().unwrap()]);
        let cfg = ws.join("workspace.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            text.replace("dtype = \"f32\"", &format!("dtype = \"{dtype}\"")),
        )
        .unwrap();
        let reference = fixtures().join("references/chelsea.png");
        ok(&[
            "concept",
            "add",
            "cat",
            "--reference",
            reference.to_str().unwrap(),
            "-w",
            ws_s,
        ]);
        ok(&["train", "cat", "-w", ws_s, "--steps", "3", "--seed", "1"]);
        let (words, _) = dreamartist::concept::embedding::load_embedding(
            &ws.join("concepts/cat/cat.safetensors"),
        )
        .unwrap();
        assert_eq!(words.dtype(), DType::F32, "{dtype}: stored vectors");
        let v = words.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{dtype}");
        let png = tmp.path().join(format!("{dtype}.png"));
        run_ok(bin().args([
            "generate",
            "-w",
            ws_s,
            "--prompt",
            "a photo of <cat>",
            "--seed",
            "9",
            "--steps",
            "4",
            "--out",
            png.to_str().unwrap(),
        ]));
        images.push(image::open(&png).unwrap().to_rgb8());
    }
    let diff: f64 = images[0]
        .as_raw()
        .iter()
        .zip(images[1].as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / images[0].as_raw().len() as f64;
    // Same seed, same steps: f16 differs by rounding, not by content.
    assert!(diff > 0.0, "the f16 workspace rendered in f32");
    assert!(diff < 8.0, "mean pixel difference f16 vs f32: {diff}");
    eprintln!("mean pixel difference f16 vs f32: {diff}");
}
