//! What the targets share: a scratch folder for readers that take a path.

// Each target uses a part of what is here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dreamartist::torchfile::pickle::Limits;

/// Small pickle budgets, so that a pickle bomb ends in microseconds instead
/// of showing up as a hang; the code paths are those of the defaults.
pub const LIMITS: Limits = Limits {
    depth: 100,
    objects: 100_000,
    bytes: 4 << 20,
    memo: 10_000,
    container: 10_000,
};

/// A fresh folder for this target's files, on a tmpfs when there is one
/// (`/dev/shm`: no disk writes per execution). Made once, before AFL++'s
/// fork server starts, so every forked child shares it (one runs at a time);
/// scripts/fuzz.sh removes it after the run.
pub fn scratch(target: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("dreamartist-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the scratch folder");
    dir
}

/// Writes one input to `path`, making its folder again if something removed
/// it; false when it still cannot be written (then the execution is skipped).
pub fn write(path: &Path, data: &[u8]) -> bool {
    if std::fs::write(path, data).is_ok() {
        return true;
    }
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).is_ok() && std::fs::write(path, data).is_ok(),
        None => false,
    }
}

/// Whether to say what an input did (`FUZZ_DEBUG=1 target < input`: to
/// check a seed reaches the code it was made for, or to triage a finding).
pub fn debug() -> bool {
    std::env::var_os("FUZZ_DEBUG").is_some()
}
