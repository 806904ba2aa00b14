//! A sweep's results: one row per planned run (its options, run folder and
//! [`RunSummary`]), as `results.md` (a Markdown table) and `results.json`.

use std::path::PathBuf;

use serde::Serialize;

use super::spec::SweepPlan;
use super::state::SweepDir;
use super::SweepError;
use crate::concept::RunState;
use crate::fsutil::write_atomic;
use crate::runs::table::markdown_table;
use crate::runs::RunSummary;

/// One planned run and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub index: usize,
    /// The options this run sets.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The run folder's id, once it started.
    pub run: Option<String>,
    /// `pending` until it starts, then its run's status.
    pub status: String,
    pub summary: Option<RunSummary>,
}

/// All of a sweep's rows.
#[derive(Debug, Clone, Serialize)]
pub struct SweepResults {
    pub sweep: String,
    pub concept: String,
    pub file: PathBuf,
    /// The options that vary between runs (the table's columns).
    pub varying: Vec<String>,
    pub runs: Vec<ResultRow>,
}

/// Reads every planned run's record and run folder.
pub fn gather(plan: &SweepPlan, dir: &SweepDir) -> SweepResults {
    let runs = plan
        .runs
        .iter()
        .map(|r| {
            let summary = dir
                .run_dir(r.index)
                .map(|run| RunSummary::read(&plan.concept, dir.concept_dir(), run.id()));
            ResultRow {
                index: r.index,
                options: r
                    .options
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                        )
                    })
                    .collect(),
                run: summary.as_ref().map(|s| s.id.clone()),
                status: summary
                    .as_ref()
                    .map_or_else(|| "pending".into(), |s| s.state.label().into()),
                summary,
            }
        })
        .collect();
    SweepResults {
        sweep: plan.name.clone(),
        concept: plan.concept.name.clone(),
        file: plan.file.clone(),
        varying: plan.varying.clone(),
        runs,
    }
}

impl SweepResults {
    /// How many runs are in each status, e.g. `3 finished, 1 pending`
    /// (statuses in [`RunState::ALL`]'s order, pending last).
    pub fn counts(&self) -> String {
        RunState::ALL
            .iter()
            .map(|s| s.label())
            .chain(["pending"])
            .filter_map(|label| {
                let n = self.runs.iter().filter(|r| r.status == label).count();
                (n > 0).then(|| format!("{n} {label}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether every run has ended (none pending, running or resumable).
    pub fn complete(&self) -> bool {
        self.runs.iter().all(|r| {
            r.summary
                .as_ref()
                .is_some_and(|s| !s.state.is_live() && !s.state.is_resumable())
        })
    }

    /// `results.md`: a heading and one table row per run.
    pub fn markdown(&self) -> String {
        let evaluated = self
            .runs
            .iter()
            .any(|r| r.summary.as_ref().is_some_and(|s| s.eval.is_some()));
        let mut header: Vec<String> = vec!["#".into()];
        header.extend(self.varying.iter().cloned());
        header.extend(
            ["run", "status", "steps", "loss", "smoothed"]
                .iter()
                .map(|s| s.to_string()),
        );
        if evaluated {
            header.extend(
                ["CLIP-I", "CLIP-T", "diversity"]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        let num =
            |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.p$}"));
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                let mut row = vec![r.index.to_string()];
                for k in &self.varying {
                    row.push(r.options.get(k).map_or_else(String::new, |v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }));
                }
                let s = r.summary.as_ref();
                row.push(r.run.clone().unwrap_or_else(|| "-".into()));
                row.push(r.status.clone());
                row.push(s.map_or_else(|| "-".into(), RunSummary::progress));
                row.push(num(s.and_then(|s| s.loss), 4));
                row.push(num(s.and_then(|s| s.smoothed_loss), 4));
                if evaluated {
                    let e = s.and_then(|s| s.eval.as_ref());
                    row.push(num(e.map(|e| e.fidelity), 3));
                    row.push(num(e.map(|e| e.text_alignment), 3));
                    row.push(num(e.and_then(|e| e.diversity), 3));
                }
                row
            })
            .collect();
        format!(
            "# Sweep `{}` of `<{}>`\n\nFrom {}: {}.\n\n{}",
            self.sweep,
            self.concept,
            self.file.display(),
            self.counts(),
            markdown_table(&header, &rows)
        )
    }

    /// Writes `results.md` and `results.json` (each atomically); their paths.
    pub fn write(&self, dir: &SweepDir) -> Result<(PathBuf, PathBuf), SweepError> {
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| SweepError::Io { path, source }
        };
        std::fs::create_dir_all(dir.path()).map_err(io(&dir.path().to_path_buf()))?;
        let md = dir.results_md();
        write_atomic(&md, self.markdown().as_bytes()).map_err(io(&md))?;
        let json = dir.results_json();
        let text = serde_json::to_string_pretty(self).map_err(|e| SweepError::Io {
            path: json.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&json, format!("{text}\n").as_bytes()).map_err(io(&json))?;
        Ok((md, json))
    }
}
