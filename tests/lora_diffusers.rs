//! A LoRA file we write loads in diffusers (`pipe.load_lora_weights`) with
//! every layer taken, and the UNet with it gives our output with the adapter
//! on both halves. Needs a Python with torch, diffusers, peft and
//! safetensors (`DREAMARTIST_PYTHON`, else `python3`); without one the test
//! says so and passes, as CI has no Python stack. The check itself is
//! `scripts/check-lora-diffusers.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use dreamartist::sd::lora::{enter, Applied, LoraLayer, LoraNetwork, Rows, Scope, Targets};
use dreamartist::sd::lora_file::save_kohya;
use dreamartist::sd::{AddedCond, LoadOptions, StableDiffusion};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A Python that can run the check, if there is one.
fn python() -> Option<String> {
    let py = std::env::var("DREAMARTIST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import torch, diffusers, peft, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

fn check(model: &str) {
    let Some(py) = python() else {
        eprintln!("skipped: no Python with torch, diffusers, peft (set DREAMARTIST_PYTHON)");
        return;
    };
    let dir = root().join("tests/fixtures").join(model).join("model");
    let sd = StableDiffusion::load_folder(&dir, &LoadOptions::default()).unwrap();
    let d = Device::Cpu;
    // Every target, random non-zero ups (a fresh network's ups are zero).
    let targets: Targets = "attn,ff,te".parse().unwrap();
    let rank = 3;
    let mut layers = BTreeMap::new();
    for site in sd.linear_sites().iter().filter(|s| targets.covers(&s.key)) {
        let rand = |rows: usize, cols: usize| {
            (Tensor::randn(0f32, 1.0, (rows, cols), &d).unwrap() * (0.5 / (cols as f64).sqrt()))
                .unwrap()
        };
        layers.insert(
            site.key.clone(),
            LoraLayer {
                down: rand(rank, site.in_dim),
                up: rand(site.out_dim, rank),
                alpha: 2.0,
            },
        );
    }
    let network = LoraNetwork::new(layers);
    let tmp = tempfile::tempdir().unwrap();
    let lora = tmp.path().join("ours.lora.safetensors");
    save_kohya(
        &lora,
        &network,
        &sd.linear_sites(),
        sd.family,
        &BTreeMap::new(),
    )
    .unwrap();

    let lc = sd.vae.config.latent_channels;
    let latents = Tensor::randn(0f32, 1.0, (2, lc, 8, 8), &d).unwrap();
    let context_dim: usize = sd.text_widths().iter().sum();
    let context = Tensor::randn(0f32, 1.0, (2, 77, context_dim), &d).unwrap();
    let ts = [421.0, 17.0];
    let added = sd
        .unet
        .config
        .projection_class_embeddings_input_dim
        .map(|_| {
            let proj = sd.text.towers()[1].encoder.config.projection_dim.unwrap();
            AddedCond {
                text_embeds: Tensor::randn(0f32, 1.0, (2, proj), &d).unwrap(),
                time_ids: Tensor::new(
                    &[[64f32, 64., 0., 0., 64., 64.], [64., 64., 0., 0., 64., 64.]],
                    &d,
                )
                .unwrap(),
            }
        });
    let scope = Arc::new(Scope::new(vec![Applied {
        network: Arc::new(network),
        strength: 1.0,
        rows: Rows::All,
    }]));
    let ours = {
        let _g = enter(Some(scope));
        sd.unet
            .forward(&latents, &ts, &context, added.as_ref())
            .unwrap()
    };
    let mut case: Vec<(String, Tensor)> = vec![
        ("latents".into(), latents),
        ("timesteps".into(), Tensor::new(&[421i64, 17], &d).unwrap()),
        ("context".into(), context),
        ("ours".into(), ours.to_dtype(DType::F32).unwrap()),
    ];
    if let Some(a) = added {
        case.push(("text_embeds".into(), a.text_embeds));
        case.push(("time_ids".into(), a.time_ids));
    }
    let case_path = tmp.path().join("case.safetensors");
    candle_core::safetensors::save(&case.into_iter().collect(), &case_path).unwrap();
    let out = Command::new(&py)
        .arg(root().join("scripts/check-lora-diffusers.py"))
        .arg(&dir)
        .arg(&lora)
        .arg(&case_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{model}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn our_lora_files_load_in_diffusers_tiny_sd1() {
    check("tiny-sd1");
}

#[test]
fn our_lora_files_load_in_diffusers_tiny_sdxl() {
    check("tiny-sdxl");
}
