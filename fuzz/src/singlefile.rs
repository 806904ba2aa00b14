//! AFL++ target: one input is a single-file checkpoint opened as the loader
//! opens one (`sd::single_file::SingleFile`): safetensors through the
//! loader's own reader, torch files (`.ckpt`) through `TorchCheckpoint` with
//! small pickle limits (the defaults let a pickle bomb take a second; the
//! torchfile target covers that reader). Then the layout detection of SD 1.x
//! / 2.x / SDXL, the configs read off the tensor shapes, the diffusers-named
//! views of each component (the name mapping: split, squeezed and transposed
//! tensors) and, for safetensors, `inspect`'s report.
//!
//! Invariants: SDXL has a second text encoder and nothing else does; every
//! diffusers name of the tiny test models (read once, from their headers)
//! that a view has a shape for loads, and loads to exactly that shape.
//! Any panic, abort, hang or broken invariant is a finding.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use dreamartist::interop::inspect::inspect;
use dreamartist::interop::safetensors_header;
use dreamartist::sd::single_file::{open_checkpoint, Family, SingleFile, SingleFileSpec};
use dreamartist::sd::weights::TensorSource;
use dreamartist::torchfile::{self, TorchCheckpoint};

/// The diffusers tensor names of a component of the tiny test models.
fn names(component: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut out: Vec<String> = Vec::new();
    for model in ["tiny-sd1", "tiny-sd2v", "tiny-sdxl"] {
        let dir = root.join(model).join("model").join(component);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "safetensors") {
                let header = safetensors_header::read(&e.path()).expect("a fixture's header");
                out.extend(header.tensors.into_iter().map(|t| t.name));
            }
        }
    }
    out.sort();
    out.dedup();
    assert!(!out.is_empty(), "no fixture names for {component}");
    out
}

/// A view's shape for a name is what loading the name gives.
fn check_view(src: &dyn TensorSource, names: &[String]) {
    for name in names {
        let Some(shape) = src.shape(name) else {
            continue;
        };
        if let Ok(t) = src.load(name, &Device::Cpu) {
            assert_eq!(
                t.dims(),
                shape.as_slice(),
                "{name} ({})",
                src.describe(name)
            );
        }
    }
    for name in src.names() {
        let _ = src.shape(&name);
    }
}

fn main() {
    let dir = common::scratch("singlefile");
    let path = dir.join("model.safetensors");
    let text = names("text_encoder");
    let text_2 = names("text_encoder_2");
    let unet = names("unet");
    let vae = names("vae");
    afl::fuzz!(|data: &[u8]| {
        if !common::write(&path, data) {
            return;
        }
        let torch = torchfile::sniff(data).is_some();
        let source: Arc<dyn TensorSource> = if torch {
            match TorchCheckpoint::open_with(&path, &common::LIMITS) {
                Ok(c) => Arc::new(c),
                Err(_) => return,
            }
        } else {
            match open_checkpoint(&path) {
                Ok(s) => s,
                Err(_) => return,
            }
        };
        let opened = SingleFile::with_source(&SingleFileSpec::new(&path), source);
        if common::debug() {
            match &opened {
                Ok(f) => eprintln!("opened: {:?}, {:?}", f.layout, f.configs.unet),
                Err(e) => eprintln!("refused: {e}"),
            }
        }
        if let Ok(file) = opened {
            let sdxl = file.layout.family == Family::Sdxl;
            assert_eq!(sdxl, file.text_encoder_2_source().is_some());
            assert_eq!(sdxl, file.configs.text_2.is_some());
            check_view(file.text_encoder_source().as_ref(), &text);
            if let Some(t2) = file.text_encoder_2_source() {
                check_view(t2.as_ref(), &text_2);
            }
            if let Ok(u) = file.unet_source() {
                check_view(u.as_ref(), &unet);
            }
            check_view(file.vae_source().as_ref(), &vae);
        }
        if !torch {
            if let Ok(report) = inspect(&path, None) {
                let _ = report.to_string();
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
