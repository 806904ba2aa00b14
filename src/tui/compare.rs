//! What comparing runs needs from their folders — each run's loss curve
//! (its metrics) and its preview samples by step — read on the worker, and
//! the pure parts: the steps all runs have a sample for, and the options that
//! differ between the runs (from their [`RunSummary`]s, which already hold
//! each run's options that differ from the concept's).

use std::path::{Path, PathBuf};

use crate::concept::RunDir;
use crate::runs::RunSummary;

/// Weight of the previous value in the smoothed curves (the training chart's).
const SMOOTHING: f64 = 0.9;

/// One compared run as read from its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurve {
    pub id: String,
    /// (step, loss) of every metrics line.
    pub raw: Vec<(f64, f64)>,
    /// The same, smoothed (EMA, bias-corrected as the training chart does).
    pub smooth: Vec<(f64, f64)>,
    /// (step, file) of each `samples/step-NNNNNNNN.png`, ascending.
    pub samples: Vec<(u64, PathBuf)>,
}

impl RunCurve {
    /// Reads run `id` of the concept stored in `concept_dir`; a missing file
    /// leaves its part empty.
    pub fn read(concept_dir: &Path, id: &str) -> Self {
        let run = RunDir::at(concept_dir, id);
        let raw: Vec<(f64, f64)> = run
            .read_metrics()
            .iter()
            .map(|m| (m.step as f64, m.loss))
            .collect();
        Self {
            id: id.to_string(),
            smooth: smooth(&raw),
            raw,
            samples: samples(&run.samples_dir()),
        }
    }
}

/// The EMA of a curve, bias-corrected so it starts at the first value.
pub fn smooth(raw: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut ema = 0.0;
    raw.iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            ema = SMOOTHING * ema + (1.0 - SMOOTHING) * y;
            (x, ema / (1.0 - SMOOTHING.powi(i as i32 + 1)))
        })
        .collect()
}

/// The `step-NNNNNNNN.png` files of a samples folder by step.
fn samples(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".png")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The steps every run has a sample for, ascending (runs of one sweep sample
/// at the same steps); when they share none, the union, so each run shows
/// its nearest earlier sample.
pub fn matching_steps(runs: &[RunCurve]) -> Vec<u64> {
    let mut all: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|(s, _)| *s))
        .collect();
    all.sort_unstable();
    all.dedup();
    let common: Vec<u64> = all
        .iter()
        .copied()
        .filter(|s| runs.iter().all(|r| r.samples.iter().any(|(t, _)| t == s)))
        .collect();
    if common.is_empty() {
        all
    } else {
        common
    }
}

/// A run's sample at `step`, or its latest one before it.
pub fn sample_at(run: &RunCurve, step: u64) -> Option<(u64, PathBuf)> {
    run.samples.iter().rev().find(|(s, _)| *s <= step).cloned()
}

/// The options whose values differ between the runs: (key, one value per run).
/// A run that keeps the concept's value shows it (`=x`), or `unset`.
pub fn option_diff(runs: &[RunSummary]) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.changed.iter().map(|c| c.key.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rows: Vec<(String, Vec<String>)> = keys
        .into_iter()
        .filter_map(|k| {
            let default = runs
                .iter()
                .flat_map(|r| r.changed.iter())
                .find(|c| c.key == k)
                .and_then(|c| c.default.clone());
            let values: Vec<String> = runs
                .iter()
                .map(|r| match r.changed.iter().find(|c| c.key == k) {
                    Some(c) => c.value.clone(),
                    None => default.clone().unwrap_or_else(|| "unset".into()),
                })
                .collect();
            values
                .iter()
                .any(|v| v != &values[0])
                .then(|| (k.to_string(), values))
        })
        .collect();
    let methods: Vec<String> = runs.iter().map(|r| r.method.clone()).collect();
    if methods.iter().any(|m| m != &methods[0]) {
        rows.insert(0, ("method".into(), methods));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(id: &str, steps: &[u64]) -> RunCurve {
        RunCurve {
            id: id.into(),
            raw: Vec::new(),
            smooth: Vec::new(),
            samples: steps
                .iter()
                .map(|s| (*s, PathBuf::from(format!("{id}/step-{s:08}.png"))))
                .collect(),
        }
    }

    #[test]
    fn matching_steps_are_shared_ones_or_else_all() {
        let a = curve("a", &[5, 10, 15]);
        let b = curve("b", &[10, 15, 20]);
        assert_eq!(matching_steps(&[a.clone(), b.clone()]), vec![10, 15]);
        let c = curve("c", &[7]);
        assert_eq!(matching_steps(&[a.clone(), c]), vec![5, 7, 10, 15]);
        assert_eq!(sample_at(&a, 12).map(|s| s.0), Some(10));
        assert_eq!(sample_at(&b, 5), None);
    }

    #[test]
    fn smoothing_starts_at_the_first_value() {
        let s = smooth(&[(1.0, 2.0), (2.0, 0.0)]);
        assert!((s[0].1 - 2.0).abs() < 1e-12);
        assert!(s[1].1 < 2.0 && s[1].1 > 0.0);
    }
}
