//! The evaluation report: what `eval.json` holds, where it lives
//! (`concepts/<name>/runs/<id>/eval/<final|step-NNNNNNNN>/eval.json`, next to
//! the sample grids), and how the workbench finds the latest one of a run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::EvalError;
use super::target::Target;
use crate::train::RunDir;
use crate::workspace::write_atomic;

pub const EVAL_FILE: &str = "eval.json";
/// The folder of a run that holds its evaluations, one sub-folder per target.
pub const EVAL_DIR: &str = "eval";
/// Version of the `eval.json` layout.
pub const REPORT_FORMAT: u32 = 1;

/// Scores of one prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptReport {
    /// The generation prompt, with the pseudo-word.
    pub prompt: String,
    /// The text CLIP-T compared against (pseudo-word → class word, or removed).
    pub text: String,
    /// The negative prompt used (the negative word, DreamArtist-style).
    pub negative: String,
    /// CLIP-I: mean cosine of the samples to the reference image(s).
    pub fidelity: f64,
    /// CLIP-T: mean cosine of the samples to `text`.
    pub text_alignment: f64,
    /// 1 − mean pairwise CLIP-I among the samples (`null` with one sample).
    pub diversity: Option<f64>,
    pub seeds: Vec<u64>,
    /// The PNG grid of the samples, a file name in the report's folder.
    pub grid: String,
}

/// One evaluated target: settings, overall scores and per-prompt scores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub format: u32,
    pub concept: String,
    pub run: String,
    /// `final` (the run's pair) or `step-NNNNNNNN` (a checkpoint).
    pub target: String,
    /// Short name in tables: `<run>` or `<run>@<step>`.
    pub label: String,
    pub step: Option<u64>,
    /// `pair`, `checkpoint` or `checkpoint-ema`.
    pub vectors: String,
    /// The file the vectors came from.
    pub source: PathBuf,
    /// The run's train cfg; `1` is the Textual Inversion baseline.
    pub train_cfg: Option<String>,
    /// `DreamArtist` or `Textual Inversion`.
    pub method: String,
    /// Whether `<name-neg>` went into the negative prompt.
    pub negative_word: bool,
    /// The SD model that drew the samples.
    pub model: String,
    /// The CLIP model that scored them (spec as given).
    pub clip: String,
    /// `object`, `style` or the prompt file.
    pub prompt_set: String,
    pub class_word: Option<String>,
    /// Caveats, e.g. that no class word was known.
    pub notes: Vec<String>,
    pub samples: usize,
    pub seed: u64,
    pub steps: usize,
    pub cfg: f64,
    pub sampler: String,
    /// Reference images, as the concept lists them.
    pub references: Vec<String>,
    /// Means over the prompts.
    pub fidelity: f64,
    pub text_alignment: f64,
    pub diversity: Option<f64>,
    pub prompts: Vec<PromptReport>,
    /// Milliseconds since the Unix epoch; the latest report of a run wins.
    pub created_ms: u64,
}

/// `runs/<id>/eval/<target>/` for a run folder.
pub fn eval_dir(run_dir: &Path, target: &Target) -> PathBuf {
    run_dir.join(EVAL_DIR).join(target.slug())
}

/// Writes `eval.json` into `dir` (atomically) and returns its path.
pub fn save_report(dir: &Path, report: &EvalReport) -> Result<PathBuf, EvalError> {
    std::fs::create_dir_all(dir).map_err(EvalError::io(dir))?;
    let path = dir.join(EVAL_FILE);
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| EvalError::bad_file(&path, e.to_string()))?;
    write_atomic(&path, format!("{text}\n").as_bytes()).map_err(EvalError::io(&path))?;
    Ok(path)
}

/// Reads one `eval.json`.
pub fn load_report(path: &Path) -> Result<EvalReport, EvalError> {
    let text = std::fs::read_to_string(path).map_err(EvalError::io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::bad_file(path, format!("not an evaluation report ({e})")))
}

/// The most recent evaluation of a run (any target), `Ok(None)` if the run
/// was never evaluated. A broken report is skipped when another one can be
/// read; if none can, the first error is returned.
pub fn load_latest_eval(run_dir: &Path) -> Result<Option<EvalReport>, EvalError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(run_dir.join(EVAL_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(EVAL_FILE))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut first_error = None;
    let mut best: Option<EvalReport> = None;
    for p in paths {
        match load_report(&p) {
            Ok(r) => {
                if best.as_ref().is_none_or(|b| r.created_ms >= b.created_ms) {
                    best = Some(r);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (best, first_error) {
        (Some(r), _) => Ok(Some(r)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

/// The latest evaluation of each run of a concept, oldest run first (runs
/// never evaluated are left out): what a side-by-side view of a concept shows.
pub fn concept_evals(concept_dir: &Path) -> Vec<EvalReport> {
    RunDir::ids(concept_dir)
        .iter()
        .filter_map(|id| {
            load_latest_eval(RunDir::at(concept_dir, id).path())
                .ok()
                .flatten()
        })
        .collect()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
