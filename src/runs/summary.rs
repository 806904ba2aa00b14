//! [`RunSummary`]: one run of a concept as a row — what the runs table, the
//! sweep results and the workbench's runs view show.

use std::cmp::Ordering;
use std::path::Path;

use serde::Serialize;

use crate::concept::rundir::run_id_time;
use crate::concept::{Concept, RunDir, RunState, TrainConfig};
use crate::eval::load_latest_eval;
use crate::train::CfgSpec;

/// Weight of the previous value in the smoothed loss (the workbench chart's).
const SMOOTHING: f64 = 0.9;

/// One training option of a run that differs from the concept's `[train]`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OptionChange {
    pub key: String,
    /// The run's value, as TOML writes it (`"2"`, `0.003`, `[64, 48]`).
    pub value: String,
    /// The concept's value; `None` where the concept leaves it unset.
    pub default: Option<String>,
}

/// The CLIP scores of a run's newest evaluation (see [`crate::eval`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalScores {
    /// `final` or `step-NNNNNNNN`: what was evaluated.
    pub target: String,
    pub fidelity: f64,
    pub text_alignment: f64,
    pub diversity: Option<f64>,
}

/// One run of a concept, read from its folder.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    pub id: String,
    /// Live or how it ended ([`RunDir::state`]).
    pub state: RunState,
    /// Steps done (the last metrics line).
    pub step: u64,
    /// The run's step total (`train.steps` of its `config.toml`).
    pub total_steps: u64,
    /// The last step's loss.
    pub loss: Option<f64>,
    /// The loss smoothed as the workbench's chart smooths it (EMA, 0.9).
    pub smoothed_loss: Option<f64>,
    /// Start time, seconds since the Unix epoch (from the run id).
    pub started: Option<u64>,
    /// When its last session ended (`end.json`).
    pub ended: Option<u64>,
    /// `DreamArtist`, or `Textual Inversion` for a train cfg of 1.
    pub method: String,
    /// The concept's preset when the run started (recorded since runs have it).
    pub preset: Option<String>,
    pub seed: Option<u64>,
    pub train_cfg: Option<String>,
    /// The options that differ from the concept's `[train]`, by key.
    pub changed: Vec<OptionChange>,
    /// Checkpoint steps, ascending.
    pub checkpoints: Vec<u64>,
    /// Whether the run folder has its pair (finished or interrupted).
    pub has_pair: bool,
    pub eval: Option<EvalScores>,
    /// The user's note (`note.md`), "" without one.
    pub note: String,
    pub tags: Vec<String>,
    /// Why a diverged or failed run ended.
    pub message: Option<String>,
}

impl RunSummary {
    /// Reads run `id` of `concept` (stored in `concept_dir`). A missing or
    /// unreadable file leaves its fields empty: the table still lists the run.
    pub fn read(concept: &Concept, concept_dir: &Path, id: &str) -> Self {
        let run = RunDir::at(concept_dir, id);
        let config: toml::Table = std::fs::read_to_string(run.config_path())
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_default();
        let train = config
            .get("train")
            .and_then(|t| t.as_table())
            .cloned()
            .unwrap_or_default();
        let metrics = run.read_metrics();
        let smoothed_loss = metrics.iter().fold(None, |s: Option<f64>, m| {
            Some(s.map_or(m.loss, |s| SMOOTHING * s + (1.0 - SMOOTHING) * m.loss))
        });
        let last = metrics.last();
        let train_cfg = train
            .get("train_cfg")
            .and_then(|v| v.as_str())
            .map(String::from);
        let is_ti = train_cfg
            .as_deref()
            .and_then(|c| c.parse::<CfgSpec>().ok())
            .is_some_and(|c| c.is_plain_ti());
        let end = run.read_end();
        Self {
            id: id.to_string(),
            state: run.state(),
            step: last.map_or(0, |m| m.step),
            total_steps: run.total_steps(),
            loss: last.map(|m| m.loss),
            smoothed_loss,
            started: run_id_time(id).or_else(|| {
                let t = std::fs::metadata(run.config_path()).ok()?.modified().ok()?;
                Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
            }),
            ended: end.as_ref().map(|e| e.ended),
            method: match train
                .get("method")
                .and_then(|v| v.as_str())
                .and_then(|m| m.parse::<crate::concept::Method>().ok())
            {
                Some(crate::concept::Method::DreamArtistPlusPlus) => "DreamArtist++",
                Some(crate::concept::Method::TextualInversion) => "Textual Inversion",
                _ if is_ti => "Textual Inversion",
                _ => "DreamArtist",
            }
            .into(),
            preset: config
                .get("preset")
                .and_then(|v| v.as_str())
                .map(String::from),
            seed: train
                .get("seed")
                .and_then(|v| v.as_integer())
                .and_then(|s| u64::try_from(s).ok()),
            train_cfg,
            changed: changed_options(concept, &train),
            checkpoints: run.checkpoints().iter().map(|(s, _)| *s).collect(),
            has_pair: run.has_pair(),
            eval: load_latest_eval(run.path())
                .ok()
                .flatten()
                .map(|r| EvalScores {
                    target: r.target,
                    fidelity: r.fidelity,
                    text_alignment: r.text_alignment,
                    diversity: r.diversity,
                }),
            note: run.note(),
            tags: run.tags(),
            message: end.and_then(|e| e.message),
        }
    }

    /// `step/total`.
    pub fn progress(&self) -> String {
        format!("{}/{}", self.step, self.total_steps)
    }

    /// The changed options as `key=value`, comma-separated.
    pub fn changed_text(&self) -> String {
        self.changed
            .iter()
            .map(|c| format!("{}={}", c.key, c.value))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The run's `[train]` options whose values differ from the concept's. Both
/// sides go through [`TrainConfig`] first, so an older run's file, written
/// before an option existed, is compared with that option's default.
fn changed_options(concept: &Concept, run: &toml::Table) -> Vec<OptionChange> {
    let canonical = |t: &toml::Table| -> Option<toml::Table> {
        let cfg: TrainConfig = toml::Value::Table(t.clone()).try_into().ok()?;
        toml::Table::try_from(&cfg).ok()
    };
    let run = canonical(run).unwrap_or_else(|| run.clone());
    let defaults = toml::Table::try_from(&concept.train).unwrap_or_default();
    let mut keys: Vec<&String> = run.keys().chain(defaults.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| run.get(*k) != defaults.get(*k))
        .map(|k| OptionChange {
            key: k.clone(),
            value: run.get(k).map_or_else(|| "unset".into(), |v| v.to_string()),
            default: defaults.get(k).map(|d| d.to_string()),
        })
        .collect()
}

/// Every run of a concept (those with a `config.toml`), oldest first.
pub fn list_runs(concept: &Concept, concept_dir: &Path) -> Vec<RunSummary> {
    RunDir::ids(concept_dir)
        .iter()
        .map(|id| RunSummary::read(concept, concept_dir, id))
        .collect()
}

/// A column of the runs table, to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunColumn {
    Id,
    Status,
    Step,
    Loss,
    Smoothed,
    Started,
    Method,
    Seed,
    Options,
    Fidelity,
    TextAlignment,
    Diversity,
    Tags,
}

impl RunColumn {
    /// The names `--sort` takes (aliases accepted by [`RunColumn::parse`]: `run`,
    /// `state`, `progress`, `clip-i`, `clip-t`, `time`).
    pub const NAMES: [&'static str; 13] = [
        "id",
        "status",
        "step",
        "loss",
        "smoothed",
        "started",
        "method",
        "seed",
        "options",
        "fidelity",
        "text_alignment",
        "diversity",
        "tags",
    ];

    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "id" | "run" => Self::Id,
            "status" | "state" => Self::Status,
            "step" | "steps" | "progress" => Self::Step,
            "loss" => Self::Loss,
            "smoothed" | "smoothed_loss" => Self::Smoothed,
            "started" | "start" | "time" => Self::Started,
            "method" => Self::Method,
            "seed" => Self::Seed,
            "options" | "changed" => Self::Options,
            "fidelity" | "clip_i" => Self::Fidelity,
            "text_alignment" | "clip_t" => Self::TextAlignment,
            "diversity" => Self::Diversity,
            "tags" => Self::Tags,
            other => {
                return Err(format!(
                    "unknown column `{other}` (known: {})",
                    Self::NAMES.join(", ")
                ))
            }
        })
    }

    /// Compares two runs by this column; runs without a value sort after
    /// those with one (see [`sort_runs`]), then by run id.
    pub fn compare(&self, a: &RunSummary, b: &RunSummary) -> Ordering {
        let f = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => Ordering::Equal,
        };
        match self {
            Self::Id => crate::concept::compare_run_ids(&a.id, &b.id),
            Self::Status => a.state.cmp(&b.state),
            Self::Step => a.step.cmp(&b.step),
            Self::Loss => f(a.loss, b.loss),
            Self::Smoothed => f(a.smoothed_loss, b.smoothed_loss),
            Self::Started => a.started.cmp(&b.started),
            Self::Method => a.method.cmp(&b.method),
            Self::Seed => a.seed.cmp(&b.seed),
            Self::Options => a.changed_text().cmp(&b.changed_text()),
            Self::Fidelity => f(
                a.eval.as_ref().map(|e| e.fidelity),
                b.eval.as_ref().map(|e| e.fidelity),
            ),
            Self::TextAlignment => f(
                a.eval.as_ref().map(|e| e.text_alignment),
                b.eval.as_ref().map(|e| e.text_alignment),
            ),
            Self::Diversity => f(
                a.eval.as_ref().and_then(|e| e.diversity),
                b.eval.as_ref().and_then(|e| e.diversity),
            ),
            Self::Tags => a.tags.join(",").cmp(&b.tags.join(",")),
        }
    }

    /// Whether the run has a value in this column.
    fn has_value(&self, r: &RunSummary) -> bool {
        match self {
            Self::Loss => r.loss.is_some(),
            Self::Smoothed => r.smoothed_loss.is_some(),
            Self::Started => r.started.is_some(),
            Self::Seed => r.seed.is_some(),
            Self::Fidelity | Self::TextAlignment => r.eval.is_some(),
            Self::Diversity => r.eval.as_ref().is_some_and(|e| e.diversity.is_some()),
            _ => true,
        }
    }
}

/// Sorts runs by `column`, ascending or descending; runs without a value in
/// that column (no loss yet, never evaluated) come last either way, and ties
/// keep the run order.
pub fn sort_runs(runs: &mut [RunSummary], column: RunColumn, descending: bool) {
    runs.sort_by(|a, b| {
        let (ha, hb) = (column.has_value(a), column.has_value(b));
        hb.cmp(&ha)
            .then_with(|| {
                let o = column.compare(a, b);
                if descending {
                    o.reverse()
                } else {
                    o
                }
            })
            .then_with(|| crate::concept::compare_run_ids(&a.id, &b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concept::{EndKind, EndRecord, StepMetrics};

    fn concept() -> Concept {
        Concept {
            name: "cat".into(),
            references: vec![],
            preset: "photo".into(),
            pos_vectors: 3,
            neg_vectors: 3,
            init_text: "*".into(),
            neg_init_text: None,
            class: None,
            train: TrainConfig::default(),
        }
    }

    fn write_run(dir: &Path, id: &str, train: &TrainConfig, losses: &[f64], end: EndKind) {
        let run = RunDir::at(dir, id);
        std::fs::create_dir_all(run.checkpoints_dir()).unwrap();
        let mut cfg = toml::Table::new();
        cfg.insert("concept".into(), "cat".into());
        cfg.insert("preset".into(), "photo".into());
        cfg.insert(
            "train".into(),
            toml::Value::Table(toml::Table::try_from(train).unwrap()),
        );
        std::fs::write(run.config_path(), toml::to_string(&cfg).unwrap()).unwrap();
        let mut w = run.metrics_writer().unwrap();
        for (i, l) in losses.iter().enumerate() {
            w.append(&StepMetrics {
                step: i as u64 + 1,
                loss: *l,
                mse: *l,
                rec: None,
                lr: 1e-3,
                lr_neg: 1e-3,
                grad_norm_pos: 1.0,
                grad_norm_neg: 1.0,
                it_s: 1.0,
            })
            .unwrap();
        }
        w.flush().unwrap();
        run.write_end(&EndRecord {
            outcome: end,
            step: losses.len() as u64,
            total_steps: train.steps,
            loss: losses.last().copied(),
            ended: 7,
            message: None,
        })
        .unwrap();
    }

    #[test]
    fn summaries_read_the_run_folder_and_sort_by_any_column() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cat");
        let c = concept();
        let ti = TrainConfig {
            train_cfg: "1".into(),
            steps: 3,
            ..c.train.clone()
        };
        write_run(
            &dir,
            "20261201-031500-10",
            &ti,
            &[0.5, 0.4, 0.3],
            EndKind::Finished,
        );
        let da = TrainConfig {
            steps: 4,
            seed: 2,
            ..c.train.clone()
        };
        write_run(
            &dir,
            "20261201-031500-9",
            &da,
            &[0.9, 0.8],
            EndKind::Stopped,
        );
        RunDir::at(&dir, "20261201-031500-9")
            .set_tags(&["best".into()])
            .unwrap();

        let runs = list_runs(&c, &dir);
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["20261201-031500-9", "20261201-031500-10"]);
        let (stopped, finished) = (&runs[0], &runs[1]);
        assert_eq!(stopped.state, RunState::Stopped);
        assert_eq!((stopped.step, stopped.total_steps), (2, 4));
        assert_eq!(stopped.progress(), "2/4");
        assert_eq!(stopped.loss, Some(0.8));
        assert!((stopped.smoothed_loss.unwrap() - (0.9 * 0.9 + 0.1 * 0.8)).abs() < 1e-12);
        assert_eq!(stopped.changed_text(), "seed=2, steps=4");
        assert_eq!(stopped.tags, ["best"]);
        assert_eq!(stopped.started, Some(1_796_094_900));
        assert_eq!(stopped.preset.as_deref(), Some("photo"));
        assert_eq!(finished.method, "Textual Inversion");
        assert_eq!(stopped.method, "DreamArtist");
        assert_eq!(finished.changed_text(), "steps=3, train_cfg=\"1\"");
        assert_eq!(
            finished.changed[1].default.as_deref(),
            Some("\"5\""),
            "the concept's value"
        );

        let mut sorted = runs.clone();
        sort_runs(&mut sorted, RunColumn::Loss, false);
        assert_eq!(sorted[0].id, "20261201-031500-10");
        sort_runs(&mut sorted, RunColumn::Loss, true);
        assert_eq!(sorted[0].id, "20261201-031500-9");
        sort_runs(&mut sorted, RunColumn::Id, true);
        assert_eq!(sorted[0].id, "20261201-031500-10", "ids order as numbers");
        sort_runs(&mut sorted, RunColumn::parse("state").unwrap(), false);
        assert_eq!(sorted[0].state, RunState::Stopped);
        // Never evaluated: no value, last in both directions.
        sorted[1].eval = Some(EvalScores {
            target: "final".into(),
            fidelity: 0.7,
            text_alignment: 0.2,
            diversity: None,
        });
        let evaluated = sorted[1].id.clone();
        for desc in [false, true] {
            sort_runs(&mut sorted, RunColumn::parse("clip-i").unwrap(), desc);
            assert_eq!(sorted[0].id, evaluated);
        }
        let err = RunColumn::parse("lr").unwrap_err();
        assert!(
            err.contains("unknown column `lr`") && err.contains("fidelity"),
            "{err}"
        );
    }
}
