//! A training run's folder, `concepts/<name>/runs/<run-id>/`: the one place
//! that knows its layout. The trainer writes it; the workbench, `eval` and the
//! CLI read it; a headless run is followed through [`MetricsTail`].
//!
//! ```text
//! config.toml                        the resolved options (RunConfig)
//! metrics.jsonl                      one StepMetrics line per step
//! checkpoints/step-NNNNNNNN.safetensors
//! samples/step-NNNNNNNN.png          preview samples
//! <name>.safetensors, <name>-neg.safetensors   the run's pair, when it ended
//! evals/                             CLIP evaluations (see eval::report)
//! headless.log                       output of a run handed to a headless process
//! lock, paused, end.json             liveness and how it ended (see [`super::runstate`])
//! note.md, tags                      the user's note and tags (see [`super::runnotes`])
//! ```
//!
//! Run ids are the UTC start time, `20261201-031500`, with `-2`, `-3`… for
//! runs started in the same second; they order by [`compare_run_ids`] (numbers
//! as numbers, so `…-10` comes after `…-9`), never as plain text.

use std::cmp::Ordering;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::workspace::write_atomic;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub mse: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rec: Option<f64>,
    pub lr: f64,
    pub lr_neg: f64,
    pub grad_norm_pos: f64,
    pub grad_norm_neg: f64,
    pub it_s: f64,
}

/// A run asked for by id (or `latest`) that does not exist.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunLookupError {
    #[error("concept `{concept}` has no runs yet; train it first")]
    NoRuns { concept: String },
    #[error(
        "the newest run of concept `{concept}`, `{run}`, was stopped before it started (it has no \
         config.toml), so there is nothing to resume; train without --resume, or name an older run"
    )]
    Unstarted { concept: String, run: String },
    #[error("run `{run}` not found for concept `{concept}` (runs: {known})")]
    Unknown {
        concept: String,
        run: String,
        known: String,
    },
}

/// One run's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    id: String,
    path: PathBuf,
}

impl RunDir {
    /// `concepts/<name>/runs/`.
    pub fn root(concept_dir: &Path) -> PathBuf {
        concept_dir.join("runs")
    }

    /// The run `id` of a concept (whether or not it exists yet).
    pub fn at(concept_dir: &Path, id: &str) -> Self {
        Self {
            id: id.to_string(),
            path: Self::root(concept_dir).join(id),
        }
    }

    /// Run ids of a concept that have a `config.toml`, oldest first ([`compare_run_ids`]).
    pub fn ids(concept_dir: &Path) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(Self::root(concept_dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("config.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        ids.sort_by(|a, b| compare_run_ids(a, b));
        ids
    }

    /// The newest run, if any.
    pub fn latest(concept_dir: &Path) -> Option<Self> {
        Self::ids(concept_dir)
            .pop()
            .map(|id| Self::at(concept_dir, &id))
    }

    /// `latest` or a run id, checked against the runs that exist.
    pub fn find(concept: &str, concept_dir: &Path, which: &str) -> Result<Self, RunLookupError> {
        let ids = Self::ids(concept_dir);
        if which == "latest" {
            // The newest folder, started or not: resuming an older run instead
            // of one a kill cut short would continue the wrong run.
            let newest = std::fs::read_dir(Self::root(concept_dir))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .max_by(|a, b| compare_run_ids(a, b));
            if let Some(n) = newest.filter(|n| !ids.contains(n)) {
                return Err(RunLookupError::Unstarted {
                    concept: concept.to_string(),
                    run: n,
                });
            }
            return ids
                .last()
                .map(|id| Self::at(concept_dir, id))
                .ok_or_else(|| RunLookupError::NoRuns {
                    concept: concept.to_string(),
                });
        }
        if ids.iter().any(|id| id == which) {
            return Ok(Self::at(concept_dir, which));
        }
        Err(RunLookupError::Unknown {
            concept: concept.to_string(),
            run: which.to_string(),
            known: if ids.is_empty() {
                "none".into()
            } else {
                ids.join(", ")
            },
        })
    }

    /// A new run named after the current UTC time (`20261201-031500`, with a
    /// `-2`, `-3`… suffix when that exists), its folder and `checkpoints/` made.
    /// The folder is claimed with one `create_dir`, so two processes starting
    /// runs in the same second (a sweep's jobs) never share one.
    pub fn create(concept_dir: &Path) -> std::io::Result<Self> {
        Self::create_at(concept_dir, unix_now())
    }

    /// [`RunDir::create`] for a run started at `secs` since the Unix epoch.
    fn create_at(concept_dir: &Path, secs: u64) -> std::io::Result<Self> {
        let root = Self::root(concept_dir);
        std::fs::create_dir_all(&root)?;
        let base = format_utc_id(secs);
        for n in 1..=MAX_SAME_SECOND {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            match std::fs::create_dir(root.join(&id)) {
                Ok(()) => {
                    let run = Self::at(concept_dir, &id);
                    std::fs::create_dir_all(run.checkpoints_dir())?;
                    return Ok(run);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "{}: {MAX_SAME_SECOND} runs already started at {base}",
            root.display()
        )))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    pub fn checkpoint_path(&self, step: u64) -> PathBuf {
        self.checkpoints_dir()
            .join(format!("step-{step:08}.safetensors"))
    }

    pub fn samples_dir(&self) -> PathBuf {
        self.path.join("samples")
    }

    pub fn sample_path(&self, step: u64) -> PathBuf {
        self.samples_dir().join(format!("step-{step:08}.png"))
    }

    pub fn headless_log(&self) -> PathBuf {
        self.path.join("headless.log")
    }

    /// The run's finished (or interrupted) pair: `<name>.safetensors`, `<name>-neg.safetensors`.
    pub fn pair_paths(&self, concept: &str) -> (PathBuf, PathBuf) {
        (
            self.path.join(format!("{concept}.safetensors")),
            self.path.join(format!("{concept}-neg.safetensors")),
        )
    }

    /// The DreamArtist++ adapters' files: positive, negative (kohya LoRA).
    pub fn lora_paths(&self, concept: &str) -> (PathBuf, PathBuf) {
        lora_paths(&self.path, concept)
    }

    /// The checkpoints, by step.
    pub fn checkpoints(&self) -> Vec<(u64, PathBuf)> {
        let mut cps: Vec<(u64, PathBuf)> = std::fs::read_dir(self.checkpoints_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name
                    .strip_prefix("step-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()?;
                Some((step, e.path()))
            })
            .collect();
        cps.sort();
        cps
    }

    pub fn latest_checkpoint(&self) -> Option<(u64, PathBuf)> {
        self.checkpoints().pop()
    }

    /// `train.steps` of the run's `config.toml` (0 when unreadable): the
    /// total a followed run is heading for.
    pub fn total_steps(&self) -> u64 {
        std::fs::read_to_string(self.config_path())
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("train")?.get("steps")?.as_integer())
            .map_or(0, |s| s.max(0) as u64)
    }

    /// Every metrics line, in order (unparsable lines skipped).
    pub fn read_metrics(&self) -> Vec<StepMetrics> {
        std::fs::read_to_string(self.metrics_path())
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last complete metrics line, read from the end of the file (a
    /// 15k-step run's whole history is not read to know where it stands).
    pub fn last_metrics(&self) -> Option<StepMetrics> {
        let mut f = std::fs::File::open(self.metrics_path()).ok()?;
        let len = f.metadata().ok()?.len();
        let mut window = 4096u64;
        loop {
            let start = len.saturating_sub(window);
            f.seek(SeekFrom::Start(start)).ok()?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf);
            // The first line of a window may be cut; a last one without its
            // newline is still being written.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let found = complete
                .lines()
                .rev()
                .skip_while(|l| serde_json::from_str::<StepMetrics>(l).is_err())
                .find_map(|l| serde_json::from_str(l).ok());
            if found.is_some() || start == 0 {
                return found;
            }
            window *= 4;
        }
    }

    /// Keeps the metrics of steps up to `step` (a resumed run rewrites the rest).
    pub fn truncate_metrics(&self, step: u64) -> std::io::Result<()> {
        let path = self.metrics_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<StepMetrics>(l)
                    .map(|m| m.step <= step)
                    .unwrap_or(false)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&path, kept.as_bytes())
    }

    /// Appends metrics lines to `metrics.jsonl`.
    pub fn metrics_writer(&self) -> std::io::Result<MetricsWriter> {
        let path = self.metrics_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(MetricsWriter { file, path })
    }

    /// Follows `metrics.jsonl` of a run another process writes.
    pub fn tail(&self) -> MetricsTail {
        MetricsTail {
            path: self.metrics_path(),
            offset: 0,
        }
    }
}

/// The open `metrics.jsonl` of a run being trained.
pub struct MetricsWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsWriter {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One line per step, written whole so a follower never reads half of it.
    pub fn append(&mut self, m: &StepMetrics) -> std::io::Result<()> {
        let line = serde_json::to_string(m).map_err(std::io::Error::other)?;
        self.file.write_all(format!("{line}\n").as_bytes())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Reads the lines a run appended since the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsTail {
    path: PathBuf,
    offset: u64,
}

impl MetricsTail {
    /// The complete lines written since the last call (a line being written
    /// is read next time); nothing when the file is missing.
    pub fn poll(&mut self) -> Vec<StepMetrics> {
        let mut new = String::new();
        let read = std::fs::File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))
                .and_then(|_| f.read_to_string(&mut new))
        });
        if read.is_err() {
            return Vec::new();
        }
        let complete = new.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        new[..complete]
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs one concept may start within one second.
const MAX_SAME_SECOND: u32 = 100_000;

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `(year, month, day, hour, minute, second)` in UTC of `secs` since the epoch.
pub fn utc_parts(secs: u64) -> (i64, u64, u64, u64, u64, u64) {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// `2026-12-01 03:15` (UTC), for tables.
pub fn format_utc(secs: u64) -> String {
    let (y, m, d, h, min, _) = utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}")
}

/// The run id of `secs`: `20261201-031500`.
pub fn format_utc_id(secs: u64) -> String {
    let (y, m, d, h, min, s) = utc_parts(secs);
    format!("{y:04}{m:02}{d:02}-{h:02}{min:02}{s:02}")
}

/// The start time (seconds since the Unix epoch) a run id names, for ids of
/// the form [`RunDir::create`] makes; `None` for any other.
pub fn run_id_time(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = id.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    if b.len() < 15 || b[8] != b'-' || (b.len() > 15 && b[15] != b'-') {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, min, s) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm, inverse of `utc_parts`).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + h * 3600 + min * 60 + s).ok()
}

/// The order of run ids: runs of digits compare as numbers, the rest as text,
/// so `20261201-031500-10` comes after `20261201-031500-9` (as text it would
/// come first, and "latest" would pick the wrong run).
pub fn compare_run_ids(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let (ca, ra) = split_chunk(a);
        let (cb, rb) = split_chunk(b);
        let da = ca.starts_with(|c: char| c.is_ascii_digit());
        let db = cb.starts_with(|c: char| c.is_ascii_digit());
        let ord = if da && db {
            let (ta, tb) = (ca.trim_start_matches('0'), cb.trim_start_matches('0'));
            ta.len()
                .cmp(&tb.len())
                .then_with(|| ta.cmp(tb))
                .then_with(|| ca.len().cmp(&cb.len()))
        } else {
            ca.cmp(cb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        (a, b) = (ra, rb);
    }
}

/// The leading run of digits, or of non-digits, and the rest.
fn split_chunk(s: &str) -> (&str, &str) {
    let digits = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The DreamArtist++ adapter files (positive, negative; either may be
/// absent) that go with a concept's positive word, stored in `beside` and
/// trained by run `word_run` (its metadata): the LoRA files beside it. The trainer writes the concept's adapters before its
/// words, so a process killed between them leaves adapters of a newer run
/// beside older words: adapters recording another run than the word's are
/// then taken from the word's own run (none if it had none). Imported
/// adapters (no run recorded) are used as they are. `None`: no adapters.
pub fn adapter_files(
    dir: &Path,
    name: &str,
    beside: &Path,
    word_run: &str,
) -> Option<(Option<PathBuf>, Option<PathBuf>)> {
    let (mut pos, mut neg) = lora_paths(beside, name);
    if !pos.is_file() && !neg.is_file() {
        return None;
    }
    let run_of = |p: &Path| {
        crate::sd::lora_file::read_metadata(p)
            .ok()
            .and_then(|m| m.get("dreamartist_run").cloned())
    };
    let other_run = [&pos, &neg]
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| run_of(p))
        .any(|r| r != word_run);
    if other_run {
        if word_run.is_empty() {
            return None;
        }
        (pos, neg) = RunDir::at(dir, word_run).lora_paths(name);
    }
    let (pos, neg) = (pos.is_file().then_some(pos), neg.is_file().then_some(neg));
    (pos.is_some() || neg.is_some()).then_some((pos, neg))
}

/// `<name>.lora.safetensors` and `<name>-neg.lora.safetensors` in `dir` (a
/// run folder or the concept's): the DreamArtist++ adapters.
pub fn lora_paths(dir: &Path, concept: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{concept}.lora.safetensors")),
        dir.join(format!("{concept}-neg.lora.safetensors")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(step: u64) -> StepMetrics {
        StepMetrics {
            step,
            loss: 0.5,
            mse: 0.5,
            rec: None,
            lr: 1e-3,
            lr_neg: 1e-3,
            grad_norm_pos: 1.0,
            grad_norm_neg: 1.0,
            it_s: 10.0,
        }
    }

    #[test]
    fn layout_lookup_metrics_and_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let concept = tmp.path().join("concepts/cat");
        assert!(matches!(
            RunDir::find("cat", &concept, "latest"),
            Err(RunLookupError::NoRuns { .. })
        ));
        let run = RunDir::create(&concept).unwrap();
        assert!(run.checkpoints_dir().is_dir());
        // Not listed until it has a config, and `latest` will not skip it.
        assert!(RunDir::ids(&concept).is_empty());
        assert!(matches!(
            RunDir::find("cat", &concept, "latest"),
            Err(RunLookupError::Unstarted { .. })
        ));
        std::fs::write(run.config_path(), "[train]\nsteps = 40\n").unwrap();
        assert_eq!(RunDir::ids(&concept), vec![run.id().to_string()]);
        assert_eq!(RunDir::find("cat", &concept, "latest").unwrap(), run);
        assert_eq!(RunDir::find("cat", &concept, run.id()).unwrap(), run);
        let err = RunDir::find("cat", &concept, "nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains(run.id()), "{err}");
        assert_eq!(run.total_steps(), 40);
        // A second run in the same second gets a suffix and sorts after.
        let second = RunDir::create(&concept).unwrap();
        assert_ne!(second.id(), run.id());
        std::fs::write(second.config_path(), "[train]\nsteps = 1\n").unwrap();

        for step in [3u64, 1, 20] {
            std::fs::write(run.checkpoint_path(step), b"x").unwrap();
        }
        let steps: Vec<u64> = run.checkpoints().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![1, 3, 20]);
        assert_eq!(run.latest_checkpoint().unwrap().0, 20);

        let mut tail = run.tail();
        assert!(tail.poll().is_empty());
        let mut w = run.metrics_writer().unwrap();
        for s in 1..=3 {
            w.append(&metrics(s)).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(tail.poll().len(), 3);
        // A half-written line waits for its newline.
        std::fs::OpenOptions::new()
            .append(true)
            .open(run.metrics_path())
            .unwrap()
            .write_all(b"{\"step\":4")
            .unwrap();
        assert!(tail.poll().is_empty());
        assert_eq!(run.last_metrics().map(|m| m.step), Some(3));
        run.truncate_metrics(2).unwrap();
        let kept: Vec<u64> = run.read_metrics().iter().map(|m| m.step).collect();
        assert_eq!(kept, vec![1, 2]);
        assert_eq!(run.last_metrics().map(|m| m.step), Some(2));
    }

    #[test]
    fn run_ids_order_numbers_as_numbers() {
        let mut ids = vec![
            "20261201-031500-10",
            "20261201-031500",
            "20261201-031500-2",
            "20261201-031459",
            "20261201-031500-9",
        ];
        ids.sort_by(|a, b| compare_run_ids(a, b));
        assert_eq!(
            ids,
            vec![
                "20261201-031459",
                "20261201-031500",
                "20261201-031500-2",
                "20261201-031500-9",
                "20261201-031500-10",
            ]
        );
        assert_eq!(compare_run_ids("a01", "a1"), Ordering::Greater);
        assert_eq!(compare_run_ids("x", "x"), Ordering::Equal);
    }

    #[test]
    fn latest_is_the_newest_by_number_not_by_text() {
        let tmp = tempfile::tempdir().unwrap();
        let concept = tmp.path().join("cat");
        let secs = 1_796_000_000;
        let runs: Vec<RunDir> = (0..11)
            .map(|_| RunDir::create_at(&concept, secs).unwrap())
            .collect();
        for r in &runs {
            std::fs::write(r.config_path(), "[train]\nsteps = 1\n").unwrap();
        }
        let last = runs.last().unwrap();
        assert!(last.id().ends_with("-11"), "{}", last.id());
        assert_eq!(
            RunDir::ids(&concept).last().map(String::as_str),
            Some(last.id())
        );
        assert_eq!(RunDir::latest(&concept).as_ref(), Some(last));
        assert_eq!(&RunDir::find("cat", &concept, "latest").unwrap(), last);
    }

    /// Runs created at once (a sweep's jobs in one second) each get their own folder.
    #[test]
    fn concurrent_creates_never_share_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let concept = tmp.path().join("cat");
        let secs = 1_796_000_000;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (concept, barrier) = (concept.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    RunDir::create_at(&concept, secs).unwrap().id().to_string()
                })
            })
            .collect();
        let mut ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        ids.sort_by(|a, b| compare_run_ids(a, b));
        ids.dedup();
        assert_eq!(ids.len(), 8, "{ids:?}");
        assert_eq!(ids[0], format_utc_id(secs));
        assert_eq!(ids[7], format!("{}-8", format_utc_id(secs)));
    }

    #[test]
    fn utc_formatting() {
        // 2026-12-01 03:15:00 UTC.
        assert_eq!(format_utc_id(1_796_094_900), "20261201-031500");
        assert_eq!(format_utc(1_796_094_900), "2026-12-01 03:15");
        assert_eq!(run_id_time("20261201-031500"), Some(1_796_094_900));
        assert_eq!(run_id_time("20261201-031500-12"), Some(1_796_094_900));
        assert_eq!(
            run_id_time("20240229-000000").map(format_utc_id).as_deref(),
            Some("20240229-000000")
        );
        for bad in [
            "latest",
            "20261301-031500",
            "20261201_031500",
            "2026120-0315000",
            "20261201-031500x",
        ] {
            assert_eq!(run_id_time(bad), None, "{bad}");
        }
    }
}
