//! AFL++ target: one input is an embedding file as a user would import it —
//! `word.pt` when it sniffs as a torch file (zip or legacy pickle: A1111's
//! `string_to_param`, diffusers `.bin`, bare tensors), else `word.safetensors`
//! (kohya / A1111 `emb_params`, OneTrainer, diffusers, SDXL `clip_l` + `clip_g`,
//! ours with metadata). Read by:
//! - the safetensors header reader (`interop::safetensors_header`), checked
//!   against the safetensors crate: a file that crate accepts, ours accepts
//!   with the same tensors;
//! - the importer (`interop::load_embedding_file_with`, small pickle limits);
//!   a word read has the shape its widths say, and every export format writes
//!   it so that the importer reads back the same bits, widths and metadata;
//! - our own reader (`concept::load_embedding`), whose writer
//!   (`save_embedding`) must round-trip what it read;
//! - `inspect` and its report (safetensors only: it opens torch files with
//!   the default pickle limits, where a pickle bomb legitimately takes a
//!   second; the torchfile target covers that reader).
//!
//! Any panic, abort, hang or failed round trip is a finding; errors are the
//! expected outcome for most inputs.

mod common;

use std::path::Path;

use candle_core::Tensor;
use dreamartist::concept::{load_embedding, save_embedding};
use dreamartist::interop::export::{export_word, ExportFormat, ExportWord};
use dreamartist::interop::inspect::inspect;
use dreamartist::interop::{load_embedding_file_with, safetensors_header, Embedding};
use dreamartist::torchfile;

/// A tensor's values as bits (NaN payloads included), for exact comparisons.
fn bits(t: &Tensor) -> (Vec<usize>, Vec<u32>) {
    let v = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("a word's vectors read back as f32");
    (t.dims().to_vec(), v.iter().map(|x| x.to_bits()).collect())
}

/// `Some("")` and `None` mean the same (safetensors metadata drops empty values).
fn text(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// What the importer returned is well formed.
fn check_shape(e: &Embedding) {
    assert_eq!(
        e.vectors.rank(),
        2,
        "a word is [n, d]: {:?}",
        e.vectors.dims()
    );
    assert_eq!(e.vectors.dtype(), candle_core::DType::F32);
    assert!(matches!(e.widths.len(), 1 | 2), "widths {:?}", e.widths);
    assert_eq!(
        e.widths.iter().sum::<usize>(),
        e.width(),
        "widths {:?} of a {:?} word",
        e.widths,
        e.vectors.dims()
    );
}

/// Every export format writes the word so that the importer reads it back.
fn export_round_trip(e: &Embedding, out: &Path) {
    let word = ExportWord {
        name: "word",
        vectors: &e.vectors,
        widths: &e.widths,
        step: e.step,
        checkpoint_name: text(&e.checkpoint_name),
        checkpoint_hash: text(&e.checkpoint_hash),
    };
    let want = bits(&e.vectors);
    for format in [
        ExportFormat::A1111,
        ExportFormat::A1111Pt,
        ExportFormat::Kohya,
        ExportFormat::Diffusers,
        ExportFormat::OneTrainer,
    ] {
        let written = export_word(&word, format, out);
        if format == ExportFormat::A1111Pt && e.is_sdxl() {
            assert!(written.is_err(), "an SDXL word written as a1111-pt");
            continue;
        }
        let path = written.unwrap_or_else(|err| panic!("{format:?} export: {err}"));
        let back = load_embedding_file_with(&path, &common::LIMITS)
            .unwrap_or_else(|err| panic!("{format:?} export does not read back: {err}"));
        let what = format!("{format:?} round trip");
        assert_eq!(back.name, "word", "{what}");
        assert_eq!(back.widths, e.widths, "{what}");
        assert!(bits(&back.vectors) == want, "{what}: the vectors changed");
        if !matches!(format, ExportFormat::Diffusers | ExportFormat::OneTrainer) {
            assert_eq!(back.step, e.step, "{what}: step");
            assert_eq!(
                text(&back.checkpoint_name),
                text(&e.checkpoint_name),
                "{what}"
            );
            assert_eq!(
                text(&back.checkpoint_hash),
                text(&e.checkpoint_hash),
                "{what}"
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}

fn main() {
    let dir = common::scratch("embedding");
    let st_path = dir.join("word.safetensors");
    let pt_path = dir.join("word.pt");
    let out = dir.join("out");
    let ours = dir.join("ours.safetensors");
    afl::fuzz!(|data: &[u8]| {
        let _ = safetensors_header::sniff(data);
        let torch = torchfile::sniff(data).is_some();
        let path = if torch { &pt_path } else { &st_path };
        if !common::write(path, data) {
            return;
        }
        if !torch {
            let header = safetensors_header::read(path);
            if let Ok(header) = &header {
                for t in &header.tensors {
                    let _ = t.describe();
                    assert!(header.get(&t.name).is_some());
                }
            }
            // What the safetensors crate (the loaders' reader) accepts, ours does too.
            if let Ok(st) = safetensors::SafeTensors::deserialize(data) {
                let header = header.unwrap_or_else(|e| {
                    panic!("the safetensors crate reads the file, our header reader: {e}")
                });
                let mut theirs: Vec<(String, Vec<usize>)> = st
                    .tensors()
                    .into_iter()
                    .map(|(n, v)| (n, v.shape().to_vec()))
                    .collect();
                let mut mine: Vec<(String, Vec<usize>)> = header
                    .tensors
                    .iter()
                    .map(|t| (t.name.clone(), t.shape.clone()))
                    .collect();
                theirs.sort();
                mine.sort();
                assert_eq!(mine, theirs, "the two header readers disagree");
            }
        }
        let imported = load_embedding_file_with(path, &common::LIMITS);
        if common::debug() {
            match &imported {
                Ok(e) => eprintln!("imported: {} {:?} {:?}", e.layout(), e.widths, e.vectors),
                Err(e) => eprintln!("refused: {e}"),
            }
        }
        if let Ok(e) = imported {
            check_shape(&e);
            let _ = e.check_finite();
            let _ = (e.count(), e.is_sdxl(), e.layout());
            for widths in [&[768][..], &[1024], &[768, 1280]] {
                let _ = e.check_width(widths);
            }
            export_round_trip(&e, &out);
        }
        if let Ok((t, meta)) = load_embedding(path) {
            assert_eq!(t.rank(), 2);
            assert_eq!(meta.widths.iter().sum::<usize>(), t.dims()[1]);
            // The writer round-trips what the reader took.
            save_embedding(&ours, &t, &meta).expect("a word read writes back");
            let (back, back_meta) = load_embedding(&ours).expect("a word written reads back");
            assert!(
                bits(&back) == bits(&t),
                "save_embedding changed the vectors"
            );
            assert_eq!(back_meta, meta, "save_embedding changed the metadata");
        }
        if !torch {
            if let Ok(report) = inspect(path, None) {
                let _ = report.to_string();
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
