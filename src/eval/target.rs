//! What an evaluation scores: a run's finished pair, or the vectors of one of
//! its checkpoints. Several targets are evaluated with the same prompts and
//! seeds, so they compare side by side.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::error::EvalError;
use crate::concept::{load_embedding, Concept};
use crate::train::CfgSpec;
use crate::train::RunDir;

/// Which vectors of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// The run's pair `<name>.safetensors` / `<name>-neg.safetensors`.
    Final,
    /// `checkpoints/step-NNNNNNNN.safetensors`.
    Step(u64),
}

impl Which {
    /// `final`, a step number, or a checkpoint file stem `step-00000050`.
    pub fn parse(s: &str) -> Result<Self, EvalError> {
        let s = s.trim();
        if s == "final" {
            return Ok(Which::Final);
        }
        let digits = s.strip_prefix("step-").unwrap_or(s);
        digits.parse::<u64>().map(Which::Step).map_err(|_| {
            EvalError::Invalid(format!(
                "checkpoint `{s}` is not a step number (or `final` for the run's finished pair)"
            ))
        })
    }
}

/// One run's vectors to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub run: String,
    pub which: Which,
}

impl Target {
    /// The folder under `runs/<id>/eval/` that holds this target's results.
    pub fn slug(&self) -> String {
        match self.which {
            Which::Final => "final".into(),
            Which::Step(s) => format!("step-{s:08}"),
        }
    }

    /// `run` for the pair, `run@step` for a checkpoint.
    pub fn label(&self) -> String {
        match self.which {
            Which::Final => self.run.clone(),
            Which::Step(s) => format!("{}@{s}", self.run),
        }
    }
}

fn known(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Turns `--run` / `--checkpoint` values into targets: every run (default:
/// the latest; `latest` names it too) × every checkpoint (default: the
/// finished pair), in the order given.
pub fn resolve_targets(
    concept: &str,
    concept_dir: &Path,
    runs: &[String],
    checkpoints: &[String],
) -> Result<Vec<Target>, EvalError> {
    let all = RunDir::ids(concept_dir);
    let latest = all.last().cloned().ok_or_else(|| EvalError::NoRuns {
        concept: concept.to_string(),
    })?;
    let mut run_ids = Vec::new();
    for r in runs {
        let id = if r == "latest" {
            latest.clone()
        } else if all.contains(r) {
            r.clone()
        } else {
            return Err(EvalError::UnknownRun {
                concept: concept.to_string(),
                run: r.clone(),
                known: known(&all),
            });
        };
        run_ids.push(id);
    }
    if run_ids.is_empty() {
        run_ids.push(latest);
    }
    let steps = if checkpoints.is_empty() {
        vec![Which::Final]
    } else {
        checkpoints
            .iter()
            .map(|c| Which::parse(c))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut out: Vec<Target> = Vec::new();
    for run in &run_ids {
        for which in &steps {
            let t = Target {
                run: run.clone(),
                which: *which,
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The vectors of a target and where they came from.
#[derive(Debug, Clone)]
pub struct TargetVectors {
    pub positive: Tensor,
    /// `None` for a Textual Inversion run (train cfg 1): no negative word.
    pub negative: Option<Tensor>,
    /// The file the vectors were read from.
    pub source: PathBuf,
    /// `pair`, `checkpoint` or `checkpoint-ema`.
    pub kind: String,
    /// The run's train cfg (`"5"`, `"1"` = Textual Inversion, `"3-7:cos"`…).
    pub train_cfg: Option<String>,
    /// Training step of the vectors, when known.
    pub step: Option<u64>,
}

/// The run's `train.train_cfg` from its `config.toml`.
fn run_train_cfg(run: &RunDir) -> Result<Option<String>, EvalError> {
    let path = run.config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EvalError::io(&path)(e)),
    };
    let v: toml::Value =
        toml::from_str(&text).map_err(|e| EvalError::bad_file(&path, e.to_string()))?;
    Ok(v.get("train")
        .and_then(|t| t.get("train_cfg"))
        .and_then(|c| c.as_str())
        .map(String::from))
}

fn checkpoint_steps(run: &RunDir) -> String {
    let steps: Vec<String> = run
        .checkpoints()
        .iter()
        .map(|(s, _)| s.to_string())
        .collect();
    known(&steps)
}

/// Loads a target's vectors (on the CPU). A checkpoint's EMA vectors are
/// used when it has them, as the run's finished pair would be.
pub fn load_target(
    concept: &Concept,
    concept_dir: &Path,
    target: &Target,
) -> Result<TargetVectors, EvalError> {
    let run = RunDir::at(concept_dir, &target.run);
    let train_cfg = run_train_cfg(&run)?;
    match target.which {
        Which::Final => {
            let (pos_path, neg_path) = run.pair_paths(&concept.name);
            if !pos_path.is_file() {
                return Err(EvalError::NoPair {
                    run: target.run.clone(),
                    path: pos_path,
                    known: checkpoint_steps(&run),
                });
            }
            let load =
                |p: &Path| load_embedding(p).map_err(|e| EvalError::bad_file(p, format!("{e:#}")));
            let (positive, meta) = load(&pos_path)?;
            let negative = if neg_path.is_file() {
                Some(load(&neg_path)?.0)
            } else {
                None
            };
            Ok(TargetVectors {
                positive,
                negative,
                source: pos_path,
                kind: "pair".into(),
                train_cfg,
                step: Some(meta.step).filter(|s| *s > 0),
            })
        }
        Which::Step(step) => {
            let path = run
                .checkpoints()
                .into_iter()
                .find(|(s, _)| *s == step)
                .map(|(_, p)| p)
                .ok_or_else(|| EvalError::UnknownCheckpoint {
                    run: target.run.clone(),
                    step,
                    known: checkpoint_steps(&run),
                })?;
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
                EvalError::bad_file(&path, format!("not a readable checkpoint ({e})"))
            })?;
            let ema = tensors.contains_key("ema_pos") && tensors.contains_key("ema_neg");
            let (pk, nk) = if ema {
                ("ema_pos", "ema_neg")
            } else {
                ("pos", "neg")
            };
            let get = |k: &str| -> Result<Tensor, EvalError> {
                let t = tensors
                    .get(k)
                    .ok_or_else(|| EvalError::bad_file(&path, format!("missing tensor `{k}`")))?;
                if t.rank() != 2 {
                    return Err(EvalError::bad_file(
                        &path,
                        format!("tensor `{k}` has shape {:?}, expected [n, d]", t.dims()),
                    ));
                }
                Ok(t.to_dtype(DType::F32)?)
            };
            let is_ti = match &train_cfg {
                Some(c) => c
                    .parse::<CfgSpec>()
                    .map(|s| s.is_plain_ti())
                    .map_err(|e| EvalError::bad_file(run.config_path(), e))?,
                None => false,
            };
            Ok(TargetVectors {
                positive: get(pk)?,
                negative: if is_ti { None } else { Some(get(nk)?) },
                source: path,
                kind: if ema { "checkpoint-ema" } else { "checkpoint" }.into(),
                train_cfg,
                step: Some(step),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_values_parse() {
        assert_eq!(Which::parse("final").unwrap(), Which::Final);
        assert_eq!(Which::parse("50").unwrap(), Which::Step(50));
        assert_eq!(Which::parse("step-00000050").unwrap(), Which::Step(50));
        assert!(Which::parse("fifty").is_err());
        let t = Target {
            run: "r1".into(),
            which: Which::Step(7),
        };
        assert_eq!(
            (t.slug(), t.label()),
            ("step-00000007".into(), "r1@7".into())
        );
    }
}
