//! AFL++ target: one input is both a raw pickle (the pickle machine alone)
//! and a file on disk opened as a torch file (zip or legacy container, the
//! tensor layout checks, reading every tensor, the state-dict view). Any
//! panic, abort (a failed allocation) or hang is a finding; errors are the
//! expected outcome for almost every input.
//!
//! The reader is compiled straight from the source tree: it is a leaf module
//! (std, candle, zip), so the fuzz build needs nothing else of the crate.

#[allow(dead_code, unused_imports)]
#[path = "../../src/torchfile/mod.rs"]
mod torchfile;

use std::io::Write;

use candle_core::Device;
use torchfile::pickle::{self, GlobalPolicy, Limits};
use torchfile::{TorchCheckpoint, TorchFile};

/// Small budgets, so that a pickle bomb ends in microseconds instead of
/// showing up as a hang; the code paths are the same as with the defaults.
const LIMITS: Limits = Limits {
    depth: 100,
    objects: 100_000,
    bytes: 4 << 20,
    memo: 10_000,
    container: 10_000,
};

fn main() {
    let path = std::env::temp_dir().join(format!("torchfile-fuzz-{}.pt", std::process::id()));
    afl::fuzz!(|data: &[u8]| {
        for policy in [GlobalPolicy::Strict, GlobalPolicy::Inert] {
            let _ = pickle::load_with(data, policy, &LIMITS);
        }
        let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(data));
        if written.is_err() {
            return;
        }
        if let Ok(file) = TorchFile::open_with(&path, GlobalPolicy::Inert, &LIMITS) {
            for t in file.root().tensors() {
                let _ = file.tensor(t, &Device::Cpu);
            }
        }
        if let Ok(ckpt) = TorchCheckpoint::open_with(&path, &LIMITS) {
            for name in ckpt.names() {
                let _ = ckpt.shape(&name);
                let _ = ckpt.load(&name, &Device::Cpu);
            }
        }
    });
    let _ = std::fs::remove_file(&path);
}
