//! Files written by PyTorch itself, and files of ours that PyTorch loaded
//! (issue #23 item 9): our reader and writer are checked against torch, not
//! only against each other. `scripts/torch-fixtures.py` made the committed
//! files (`write`) and ran torch over ours (`check`); Python does not run here.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dreamartist::interop::export::export_word;
use dreamartist::interop::{load_embedding_file, ExportFormat, ExportWord};
use dreamartist::sd::single_file::open_checkpoint;
use dreamartist::selftest::{run_fixture, Outcome, SelftestOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn torch_dir() -> PathBuf {
    fixtures().join("torch-written")
}

fn bits(t: &Tensor) -> Vec<u16> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
        .to_vec1::<half::f16>()
        .unwrap()
        .into_iter()
        .map(|v| v.to_bits())
        .collect()
}

/// `torch.save` of the tiny SD 1 checkpoint in f16 (a Lightning-style dict with
/// `state_dict`, torch's zip format): every tensor reads back bit for bit.
#[test]
fn torch_saved_ckpt_reads_bit_for_bit() {
    let ckpt = open_checkpoint(&torch_dir().join("tiny-sd1-fp16.ckpt")).unwrap();
    let want = candle_core::safetensors::load(
        fixtures().join("tiny-sd1/single_file.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut names = ckpt.names();
    names.sort();
    let mut want_names: Vec<&String> = want.keys().collect();
    want_names.sort();
    assert_eq!(names.iter().collect::<Vec<_>>(), want_names);
    for name in &names {
        let got = ckpt.load(name, &Device::Cpu).unwrap();
        let w = &want[name];
        assert_eq!(got.dims(), w.dims(), "{name}");
        if w.dtype().is_float() {
            assert_eq!(got.dtype(), DType::F16, "{name}");
            assert!(
                bits(&got) == bits(w),
                "{name} differs from the f16 rounding of the original"
            );
        } else {
            assert_eq!(
                got.to_dtype(DType::I64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap(),
                w.to_dtype(DType::I64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap(),
                "{name}"
            );
        }
    }
}

/// The torch-written checkpoint drives the whole model: every golden case
/// passes in f16 (the weights are f16 on disk).
#[test]
fn torch_saved_ckpt_passes_the_goldens_in_f16() {
    let opts = SelftestOptions {
        model: Some(torch_dir().join("tiny-sd1-fp16.ckpt")),
        dtype: DType::F16,
        ..Default::default()
    };
    let results = run_fixture(&fixtures().join("tiny-sd1"), &opts, |_| {}).unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Pass { .. }))
        .map(|r| r.line())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(results.len(), 30);
}

/// The pre-1.6 serialization (`_use_new_zipfile_serialization=False`) of a
/// bare state dict.
#[test]
fn torch_legacy_serialization_reads() {
    let ckpt = open_checkpoint(&torch_dir().join("legacy-bare.ckpt")).unwrap();
    let want = candle_core::safetensors::load(
        fixtures().join("tiny-sd1/single_file.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut names = ckpt.names();
    names.sort();
    assert_eq!(
        names,
        [
            "first_stage_model.decoder.conv_out.bias",
            "first_stage_model.decoder.conv_out.weight"
        ]
    );
    for name in &names {
        let got = ckpt.load(name, &Device::Cpu).unwrap();
        assert!(bits(&got) == bits(&want[name]), "{name}");
    }
}

/// What our `.pt` writer produces today is byte for byte what
/// `scripts/torch-fixtures.py check` loaded with `torch.load(weights_only=True)`
/// the way A1111 reads embeddings. A change to the writer fails here: run the
/// script on the new output, then refresh with `DREAMARTIST_BLESS=1`.
#[test]
fn our_pt_files_are_the_ones_torch_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = torch_dir().join("ours");
    let bless = std::env::var_os("DREAMARTIST_BLESS").is_some();
    for stem in ["astro", "astro-neg"] {
        let src = load_embedding_file(&fixtures().join(format!("embeddings/{stem}.pt"))).unwrap();
        let written = export_word(
            &ExportWord {
                name: stem,
                vectors: &src.vectors,
                widths: &[],
                step: Some(1500),
                checkpoint_name: Some("v1-5-pruned-emaonly"),
                checkpoint_hash: None,
            },
            ExportFormat::A1111Pt,
            tmp.path(),
        )
        .unwrap();
        let bytes = std::fs::read(&written).unwrap();
        let committed = ours.join(format!("{stem}.pt"));
        if bless {
            std::fs::create_dir_all(&ours).unwrap();
            std::fs::write(&committed, &bytes).unwrap();
        }
        let checked = std::fs::read(&committed).unwrap();
        assert!(
            bytes == checked,
            "{stem}.pt: the .pt writer's output changed; check the new file with \
             `scripts/torch-fixtures.py check`, then refresh with DREAMARTIST_BLESS=1"
        );
    }
}
