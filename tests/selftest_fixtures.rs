//! The foundation's parity proof: every supported case of both golden fixtures
//! passes (tokenizer ids exact, tensors within the README's tolerances).

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::DType;
use dreamartist::selftest::{run_fixture, Outcome, SelftestOptions, Summary, SUPPORTED_KINDS};

fn check_fixture(name: &str) {
    check_fixture_in(name, DType::F32);
}

fn check_fixture_in(name: &str, dtype: DType) {
    check_fixture_cases(name, dtype, 30);
}

fn check_fixture_cases(name: &str, dtype: DType, at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let opts = SelftestOptions {
        dtype,
        ..Default::default()
    };
    let results = run_fixture(&dir, &opts, |_| {}).expect("fixture runs");
    let failures: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail { .. }))
        .map(|r| r.line())
        .collect();
    assert!(
        failures.is_empty(),
        "{name}: failing cases:\n{}",
        failures.join("\n")
    );
    let passed_kinds: BTreeSet<&str> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Pass { .. }))
        .map(|r| r.kind.as_str())
        .collect();
    for kind in SUPPORTED_KINDS {
        assert!(
            passed_kinds.contains(kind),
            "{name}: no passing case of kind {kind}"
        );
    }
    let s = Summary::of(&results);
    assert_eq!(s.skipped, 0, "{name}: skipped cases");
    assert!(
        s.passed >= at_least,
        "{name}: only {} cases passed",
        s.passed
    );
}

#[test]
fn tiny_sd1_passes_every_supported_case() {
    check_fixture("tiny-sd1");
}

#[test]
fn tiny_sd2v_passes_every_supported_case() {
    check_fixture("tiny-sd2v");
}

/// SDXL: two text encoders (penultimate layers side by side, pooled
/// projection), `text_time` added embedding, per-level transformer depth, and
/// pseudo-words with one matrix per encoder; all 23 cases of every kind.
#[test]
fn tiny_sdxl_passes_every_supported_case() {
    check_fixture_cases("tiny-sdxl", DType::F32, 23);
}

/// Half precision: the model computes in f16, vectors, latents and losses stay
/// f32; every case passes the looser f16 tolerances.
#[test]
fn every_fixture_passes_in_f16() {
    check_fixture_in("tiny-sd1", DType::F16);
    check_fixture_in("tiny-sd2v", DType::F16);
    check_fixture_cases("tiny-sdxl", DType::F16, 23);
}

/// A fixture whose `architecture` disagrees with its model is refused by name.
#[test]
fn architecture_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let text = std::fs::read_to_string(src.join("cases.toml")).unwrap();
    std::fs::write(
        tmp.path().join("cases.toml"),
        format!(
            "architecture = \"sdxl\"\nmodel = \"{}\"\ntensors = \"{}\"\n{}",
            src.join("model").display(),
            src.join("goldens.safetensors").display(),
            text.lines()
                .filter(|l| !l.starts_with("model =") && !l.starts_with("tensors ="))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
    .unwrap();
    let opts = SelftestOptions {
        kinds: Some(vec!["unet".into()]),
        ..Default::default()
    };
    let err = run_fixture(tmp.path(), &opts, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("sdxl") && err.contains("SD 1.x"), "{err}");
}

/// bf16 has no CPU matmul in candle: refused before loading, naming the fix.
#[test]
fn bf16_on_cpu_is_refused_with_the_fix() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let opts = SelftestOptions {
        dtype: DType::BF16,
        kinds: Some(vec!["unet".into()]),
        ..Default::default()
    };
    let err = run_fixture(&dir, &opts, |_| {}).unwrap_err().to_string();
    assert!(err.contains("bf16") && err.contains("f16"), "{err}");
}

#[test]
fn kind_filter_runs_only_the_named_kinds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let opts = SelftestOptions {
        kinds: Some(vec!["tokenize".into(), "timesteps".into()]),
        ..Default::default()
    };
    let results = run_fixture(&dir, &opts, |_| {}).unwrap();
    assert_eq!(results.len(), 11);
    assert!(results
        .iter()
        .all(|r| r.kind == "tokenize" || r.kind == "timesteps"));
}

/// `--device cuda` on a build without CUDA names the rebuild (or `--device cpu`)
/// instead of candle's bare "not built with cuda support".
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_on_a_cpu_build_names_the_fix() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamartist"))
        .args(["selftest", &dir.to_string_lossy(), "--device", "cuda"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CUDA device 0")
            && err.contains("--features cuda")
            && err.contains("--device cpu"),
        "{err}"
    );
}
