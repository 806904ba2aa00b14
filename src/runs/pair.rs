//! A run's vectors — its finished pair or one checkpoint step's — made the
//! concept's active pair ([`promote`]) or written for another tool
//! ([`export_run`], the `export` command's writer).
//!
//! The concept's active pair is `concepts/<name>/<name>.safetensors` +
//! `<name>-neg.safetensors`, the files generation loads; the trainer writes
//! them when a run finishes. A checkpoint's EMA vectors are used when it has
//! them, as the finished pair would be (the same rule as `eval`).

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::RunsError;
use crate::concept::{load_embedding, save_embedding, Concept, EmbeddingMeta, RunDir};
use crate::eval::{load_target, Target, Which};
use crate::interop::export::{export_words, ExportFormat, ExportWord, Exported};
use crate::workspace::Workspace;

/// What [`promote`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Promoted {
    pub run: String,
    /// The checkpoint step, or the finished pair's step.
    pub step: u64,
    pub positive: PathBuf,
    /// `None` for a Textual Inversion run: the concept's negative word was removed.
    pub negative: Option<PathBuf>,
}

/// A run's vectors, with what to record next to them.
struct RunVectors {
    run: String,
    positive: Tensor,
    negative: Option<Tensor>,
    step: u64,
    /// Model name, hash and text-encoder widths.
    base: EmbeddingMeta,
}

/// Each text encoder's columns of a `d`-wide word: SD 1.x is 768, SD 2.x
/// 1024, SDXL 768 + 1280 side by side.
fn widths_for(d: usize) -> Vec<usize> {
    if d == 768 + 1280 {
        vec![768, 1280]
    } else {
        vec![d]
    }
}

/// The model a run's pair (else the concept's pair) records; else the run's
/// `config.toml` model spec, without a hash.
fn base_meta(concept: &Concept, concept_dir: &Path, run: &RunDir, d: usize) -> EmbeddingMeta {
    let (run_pos, _) = run.pair_paths(&concept.name);
    let concept_pos = concept_dir.join(format!("{}.safetensors", concept.name));
    for p in [run_pos, concept_pos] {
        if let Ok((t, meta)) = load_embedding(&p) {
            if t.dim(1).ok() == Some(d) {
                return meta;
            }
        }
    }
    let model = std::fs::read_to_string(run.config_path())
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("model")?.as_str().map(String::from))
        .unwrap_or_default();
    let name = Path::new(model.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or(model);
    EmbeddingMeta {
        base_model: name,
        widths: widths_for(d),
        ..Default::default()
    }
}

/// Loads run `run_id` (or `latest`)'s vectors: `step` `None` is the finished
/// pair, else that checkpoint.
fn load_run_vectors(
    concept: &Concept,
    concept_dir: &Path,
    run_id: &str,
    step: Option<u64>,
) -> Result<RunVectors, RunsError> {
    let run = RunDir::find(&concept.name, concept_dir, run_id)?;
    let which = match step {
        None => {
            let (pos, _) = run.pair_paths(&concept.name);
            if !pos.is_file() {
                let steps: Vec<String> = run
                    .checkpoints()
                    .iter()
                    .map(|(s, _)| s.to_string())
                    .collect();
                return Err(RunsError::Invalid(format!(
                    "run `{}` has no pair yet ({} is missing: it is {}); pick a checkpoint with \
                     --step (checkpoints: {})",
                    run.id(),
                    pos.display(),
                    run.state(),
                    if steps.is_empty() {
                        "none".into()
                    } else {
                        steps.join(", ")
                    }
                )));
            }
            Which::Final
        }
        Some(s) => Which::Step(s),
    };
    let target = Target {
        run: run.id().to_string(),
        which,
    };
    let v = load_target(concept, concept_dir, &target)?;
    let d = v
        .positive
        .dim(1)
        .map_err(|e| RunsError::Invalid(e.to_string()))?;
    Ok(RunVectors {
        run: run.id().to_string(),
        step: v.step.unwrap_or(0),
        base: base_meta(concept, concept_dir, &run, d),
        positive: v.positive,
        negative: v.negative,
    })
}

/// Makes a run's finished pair (`step` `None`) or checkpoint `step` the
/// concept's active pair. Both files record the run and step, so they are
/// one pair for the word bank; a Textual Inversion run removes the concept's
/// negative word, as finishing such a run does.
pub fn promote(
    ws: &Workspace,
    concept: &Concept,
    run_id: &str,
    step: Option<u64>,
) -> Result<Promoted, RunsError> {
    let dir = concept.dir(ws);
    let v = load_run_vectors(concept, &dir, run_id, step)?;
    let meta = |name: String| EmbeddingMeta {
        name,
        step: v.step,
        run: v.run.clone(),
        pos_vectors: concept.pos_vectors,
        neg_vectors: concept.neg_vectors,
        ..v.base.clone()
    };
    let write = |path: &Path, t: &Tensor, m: &EmbeddingMeta| {
        save_embedding(path, t, m).map_err(|e| RunsError::Write {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })
    };
    let name = &concept.name;
    let pos = dir.join(format!("{name}.safetensors"));
    let neg = dir.join(format!("{name}-neg.safetensors"));
    // Not while a finishing run writes the pair.
    let _pair =
        crate::concept::pairlock::PairLock::acquire(&dir).map_err(|e| RunsError::Write {
            path: dir.join(crate::concept::pairlock::PAIR_LOCK_FILE),
            message: e.to_string(),
        })?;
    write(&pos, &v.positive, &meta(name.clone()))?;
    let negative = match &v.negative {
        Some(n) => {
            write(&neg, n, &meta(format!("{name}-neg")))?;
            Some(neg)
        }
        None => {
            match std::fs::remove_file(&neg) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RunsError::Write {
                        path: neg,
                        message: e.to_string(),
                    })
                }
                _ => {}
            }
            None
        }
    };
    Ok(Promoted {
        run: v.run,
        step: v.step,
        positive: pos,
        negative,
    })
}

/// Writes a run's finished pair (`step` `None`) or checkpoint `step` in
/// `format` into `out` (the words keep the concept's names, as other tools
/// name a word after its file).
pub fn export_run(
    ws: &Workspace,
    concept: &Concept,
    run_id: &str,
    step: Option<u64>,
    format: ExportFormat,
    out: &Path,
) -> Result<Exported, RunsError> {
    let v = load_run_vectors(concept, &concept.dir(ws), run_id, step)?;
    let neg_name = format!("{}-neg", concept.name);
    let model = Some(v.base.base_model.as_str()).filter(|s| !s.is_empty());
    let hash = Some(v.base.base_model_hash.as_str()).filter(|s| !s.is_empty());
    let mut words = vec![ExportWord {
        name: &concept.name,
        vectors: &v.positive,
        widths: &v.base.widths,
        step: Some(v.step).filter(|s| *s > 0),
        checkpoint_name: model,
        checkpoint_hash: hash,
    }];
    if let Some(n) = &v.negative {
        words.push(ExportWord {
            name: &neg_name,
            vectors: n,
            ..words[0].clone()
        });
    }
    Ok(export_words(&words, format, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_the_model_family() {
        assert_eq!(widths_for(768), vec![768]);
        assert_eq!(widths_for(1024), vec![1024]);
        assert_eq!(widths_for(2048), vec![768, 1280]);
        assert_eq!(widths_for(32), vec![32]);
    }
}
