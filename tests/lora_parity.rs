//! LoRA and DreamArtist++ against the reference stack: the fixture
//! `lora_goldens.safetensors` of tiny-sd1 and tiny-sdxl was written by
//! `scripts/lora-fixtures.py` with diffusers + peft (peft's mixed-batch
//! forward: the negative network on the first half of every batch, the
//! positive one on the second). Its two networks are kohya files as the
//! script wrote them, read here by our kohya reader; the DreamArtist loss of
//! the `cpt_static` case with both networks in force must give the fixture's
//! loss, and the words' and every adapter tensor's gradients, with and
//! without activation recompute.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use dreamartist::sd::lora::{enter, Applied, LoraLayer, LoraNetwork, Rows, Scope};
use dreamartist::sd::lora_file::{kohya_name, load_kohya, save_kohya};
use dreamartist::sd::{LoadOptions, StableDiffusion};
use dreamartist::train::{cpt_loss, CfgSpec, CptBatch};

fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
}

/// Relative max difference, against the golden's largest magnitude.
fn rel(ours: &Tensor, golden: &Tensor) -> f64 {
    let a = ours.to_dtype(DType::F64).unwrap();
    let b = golden.to_dtype(DType::F64).unwrap();
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    diff / scale.max(1e-12)
}

/// The fixture's `neg/` or `pos/` tensors written as a kohya file of their
/// own, then read back by our reader for `sd`.
fn network(
    sd: &StableDiffusion,
    goldens: &std::collections::HashMap<String, Tensor>,
    branch: &str,
    dir: &Path,
) -> LoraNetwork {
    let prefix = format!("{branch}/");
    let tensors: Vec<(String, Tensor)> = goldens
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    assert!(!tensors.is_empty(), "no `{prefix}` tensors in the fixture");
    let path = dir.join(format!("{branch}.safetensors"));
    candle_core::safetensors::save(
        &tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        &path,
    )
    .unwrap();
    let loaded = load_kohya(&path, &sd.linear_sites(), sd.family, &Device::Cpu).unwrap();
    assert_eq!(loaded.network.len() * 3, tensors.len(), "every layer read");
    loaded.network
}

fn check(model: &str) {
    let dir = fixture(model);
    let goldens =
        candle_core::safetensors::load(dir.join("lora_goldens.safetensors"), &Device::Cpu)
            .expect("run scripts/lora-fixtures.py to write the fixture");
    let g = |k: &str| {
        goldens
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .clone()
    };
    let sd = StableDiffusion::load_folder(&dir.join("model"), &LoadOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let neg_net = network(&sd, &goldens, "neg", tmp.path());
    let pos_net = network(&sd, &goldens, "pos", tmp.path());

    // Our writer gives the very names and shapes the reference script wrote.
    let written = tmp.path().join("again.safetensors");
    save_kohya(
        &written,
        &pos_net,
        &sd.linear_sites(),
        sd.family,
        &BTreeMap::new(),
    )
    .unwrap();
    let again = candle_core::safetensors::load(&written, &Device::Cpu).unwrap();
    for (k, v) in goldens
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("pos/").map(|k| (k, v)))
    {
        let ours = again
            .get(k)
            .unwrap_or_else(|| panic!("we do not write {k}"));
        assert_eq!(ours.dims(), v.dims(), "{k}");
    }
    assert_eq!(
        again.len(),
        goldens.keys().filter(|k| k.starts_with("pos/")).count()
    );

    let prompts = common::cpt_static_prompts(&sd);
    let matrix = |key: &str| -> Tensor {
        let mut parts = vec![g(key)];
        if sd.text.towers().len() == 2 {
            parts.push(g(&format!("{key}_2")));
        }
        dreamartist::sd::text::concat_towers(parts).unwrap()
    };
    let timesteps: Vec<usize> = g("timesteps")
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|t| t as usize)
        .collect();
    let (z0, noise) = (g("z0"), g("noise"));

    for recompute in [false, true] {
        let pos = Var::from_tensor(&matrix("pos_vectors")).unwrap();
        let neg = Var::from_tensor(&matrix("neg_vectors")).unwrap();
        // Every adapter tensor trains: each becomes a variable, named after
        // its fixture key.
        let mut vars: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut trainable = |branch: &str, net: &LoraNetwork| -> Arc<LoraNetwork> {
            let mut layers = BTreeMap::new();
            for (key, layer) in net.layers() {
                let name = format!("{branch}/{}", kohya_name(key, sd.family));
                let var = |t: &Tensor| Var::from_tensor(t).unwrap().as_tensor().clone();
                let (down, up) = (var(&layer.down), var(&layer.up));
                vars.insert(format!("{name}.lora_down.weight"), down.clone());
                vars.insert(format!("{name}.lora_up.weight"), up.clone());
                layers.insert(
                    key.clone(),
                    LoraLayer {
                        down,
                        up,
                        alpha: layer.alpha,
                    },
                );
            }
            Arc::new(LoraNetwork::new(layers))
        };
        let neg_t = trainable("neg", &neg_net);
        let pos_t = trainable("pos", &pos_net);
        let scope = Arc::new(Scope::training(
            vec![
                Applied {
                    network: neg_t,
                    strength: 1.0,
                    rows: Rows::FirstHalf,
                },
                Applied {
                    network: pos_t,
                    strength: 1.0,
                    rows: Rows::SecondHalf,
                },
            ],
            vars.values().cloned().collect(),
        ));
        let _guard = enter(Some(scope.clone()));
        let batch = CptBatch {
            z0: &z0,
            noise: &noise,
            timesteps: &timesteps,
            image: None,
            mask: None,
            recompute,
            min_snr_gamma: None,
        };
        let loss = cpt_loss(
            &sd,
            std::slice::from_ref(&prompts),
            pos.as_tensor(),
            neg.as_tensor(),
            &"3.0".parse::<CfgSpec>().unwrap(),
            0.0,
            &batch,
        )
        .unwrap();
        let mut grads = loss.total.backward().unwrap();
        scope.merge_side_grads(&mut grads).unwrap();
        let what = format!("{model} (recompute {recompute})");
        let l = rel(&loss.total.reshape(1).unwrap(), &g("loss"));
        assert!(l < 1e-5, "{what}: loss off by {l:e}");

        let split = |t: &Tensor| sd.text.split_columns(t).unwrap();
        for (var, key) in [(&pos, "grad_pos"), (&neg, "grad_neg")] {
            let ours = split(grads.get(var.as_tensor()).expect("word gradient"));
            for (i, block) in ours.iter().enumerate() {
                let k = if i == 0 {
                    key.to_string()
                } else {
                    format!("{key}_2")
                };
                let r = rel(block, &g(&k));
                assert!(r < 1e-4, "{what}: {k} off by {r:e}");
            }
        }
        let mut worst = (0.0f64, String::new());
        for (k, t) in &vars {
            let golden = g(&format!("grad/{k}"));
            let ours = match grads.get(t) {
                Some(g) => g.clone(),
                None => t.zeros_like().unwrap(),
            };
            let golden_max = common::max_abs(&golden);
            if golden_max == 0.0 {
                let ours_max = common::max_abs(&ours);
                assert_eq!(ours_max, 0.0, "{what}: {k} should get no gradient");
                continue;
            }
            let r = rel(&ours, &golden);
            if r > worst.0 {
                worst = (r, k.clone());
            }
        }
        assert!(
            worst.0 < 1e-4,
            "{what}: adapter gradient {} off by {:e}",
            worst.1,
            worst.0
        );
        eprintln!(
            "{what}: loss rel {l:e}, worst adapter gradient rel {:e} ({})",
            worst.0, worst.1
        );
    }
}

#[test]
fn dreamartist_plus_plus_matches_diffusers_and_peft_on_tiny_sd1() {
    check("tiny-sd1");
}

#[test]
fn dreamartist_plus_plus_matches_diffusers_and_peft_on_tiny_sdxl() {
    check("tiny-sdxl");
}
