//! The pseudo-words a workspace offers to prompts: every trained concept's
//! `<name>` / `<name-neg>`, and embeddings dropped into `embeddings/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::adapters::{AdapterSource, WordAdapters};
use super::WordBank;
use crate::concept::{adapter_files, list, load_embedding, RunDir};
use crate::workspace::Workspace;

/// One word of a concept's active pair and the file it came from.
pub struct PairWord {
    pub vectors: Tensor,
    pub file: PathBuf,
    /// The run that trained it (its metadata; empty for imported words).
    pub run: String,
}

/// A concept's active pair: `<name>.safetensors` and `<name>-neg.safetensors`
/// (no positive before training; no negative after a Textual Inversion run).
///
/// The trainer writes the run's pair first, then the concept's positive, then
/// its negative; a process killed between the last two leaves a positive and
/// a negative from different runs. Such a torn pair is never used: both words
/// are then read from the positive's run, whose pair is complete.
pub fn load_pair(dir: &Path, name: &str) -> Result<(Option<PairWord>, Option<PairWord>)> {
    let pos_file = dir.join(format!("{name}.safetensors"));
    let neg_file = dir.join(format!("{name}-neg.safetensors"));
    if !pos_file.is_file() {
        // Untrained, perhaps with an imported negative (`--as-negative-of`).
        let neg = if neg_file.is_file() {
            let (vectors, meta) = load_embedding(&neg_file)?;
            Some(PairWord {
                vectors,
                file: neg_file,
                run: meta.run,
            })
        } else {
            None
        };
        return Ok((None, neg));
    }
    let (pos, pos_meta) = load_embedding(&pos_file)?;
    let neg = if neg_file.is_file() {
        Some(load_embedding(&neg_file)?)
    } else {
        None
    };
    let torn = match &neg {
        // Imported words carry no run (and other tools' steps may differ).
        Some((_, m)) => m.run != pos_meta.run || (!m.run.is_empty() && m.step != pos_meta.step),
        None => false,
    };
    if !torn {
        return Ok((
            Some(PairWord {
                vectors: pos,
                file: pos_file,
                run: pos_meta.run,
            }),
            neg.map(|(vectors, meta)| PairWord {
                vectors,
                file: neg_file,
                run: meta.run,
            }),
        ));
    }
    let run = RunDir::at(dir, &pos_meta.run);
    let (run_pos, run_neg) = run.pair_paths(name);
    if pos_meta.run.is_empty() || !run_pos.is_file() {
        bail!(
            "{}: the concept's pair is torn (the positive is from run `{}` step {}, the negative \
             from another run) and that run's own pair is missing; retrain or resume the concept",
            dir.display(),
            pos_meta.run,
            pos_meta.step
        );
    }
    let (vectors, _) = load_embedding(&run_pos)?;
    let neg = if run_neg.is_file() {
        Some(PairWord {
            vectors: load_embedding(&run_neg)?.0,
            file: run_neg,
            run: pos_meta.run.clone(),
        })
    } else {
        None
    };
    Ok((
        Some(PairWord {
            vectors,
            file: run_pos,
            run: pos_meta.run,
        }),
        neg,
    ))
}

/// Builds the word bank of a workspace. Concepts without trained vectors are skipped.
pub fn word_bank(ws: &Workspace) -> Result<WordBank> {
    let mut bank = WordBank::new();
    for name in list(ws) {
        let dir = ws.concept_dir(&name);
        let (pos, neg) = load_pair(&dir, &name)?;
        if let Some(p) = &pos {
            let beside = p.file.parent().unwrap_or(&dir);
            if let Some((pos, neg)) = adapter_files(&dir, &name, beside, &p.run) {
                let source = |p: Option<PathBuf>| p.map(AdapterSource::File);
                bank.insert_adapters(
                    &name,
                    WordAdapters {
                        positive: source(pos),
                        negative: source(neg),
                    },
                );
            }
        }
        for (word, w) in [(name.clone(), pos), (format!("{name}-neg"), neg)] {
            if let Some(w) = w {
                bank.insert(&word, w.vectors, w.file.display().to_string());
            }
        }
    }
    let emb_dir = ws.root.join("embeddings");
    if let Ok(entries) = std::fs::read_dir(&emb_dir) {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let (t, _) = load_embedding(&file)?;
            bank.insert(&stem, t, file.display().to_string());
        }
    }
    Ok(bank)
}
