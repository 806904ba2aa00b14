//! What the binary-driven tests share: paths, running the binary, and a fresh
//! workspace with one concept. Each test crate uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dreamartist"))
}

/// Runs a command that must succeed (its output in the failure message).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("binary runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `dreamartist ARGS`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(bin().args(args)).stdout).to_string()
}

/// `dreamartist ARGS`, which must fail; its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("binary runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A fresh workspace `<tmp>/ws` on `model` with concept `name` made from
/// `reference` (plus `extra` options of `concept add`).
pub fn workspace_with_concept(
    model: &Path,
    name: &str,
    reference: &Path,
    extra: &[&str],
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    run_ok(bin().arg("init").arg(&ws).arg("--model").arg(model));
    run_ok(
        bin()
            .args(["concept", "add", name, "--reference"])
            .arg(reference)
            .args(extra)
            .arg("-w")
            .arg(&ws),
    );
    tmp
}
