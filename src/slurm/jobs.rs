//! What was submitted for a sweep, kept in its folder so that `status`, the
//! workbench and `--wait` find the jobs again from any login session:
//!
//! ```text
//! concepts/<c>/sweeps/<name>/slurm/
//!   submit-<time>-<pid>.sbatch  the script as submitted
//!   submit-<time>-<pid>.toml    the sweep file as it was then (what the tasks read)
//!   jobs/<job>.json             one per submission: job id, time, indices, script
//!   logs/<job>_<index>.log      each task's output, all its attempts appended
//! ```
//!
//! One file per submission: two submissions at once never lose each other's
//! record, and a damaged record loses only itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SlurmError;
use crate::fsutil::write_atomic;

/// One `sbatch` of a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The array job's id.
    pub job: String,
    /// Seconds since the epoch.
    pub submitted: u64,
    /// The sweep's run indices in this array.
    pub indices: Vec<usize>,
    pub script: PathBuf,
    /// The sweep file's snapshot the tasks read.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
}

/// `sweeps/<name>/slurm/`.
#[derive(Debug, Clone)]
pub struct SlurmDir {
    path: PathBuf,
}

impl SlurmDir {
    /// The Slurm folder of the sweep folder `sweep_dir`.
    pub fn of(sweep_dir: &Path) -> Self {
        Self {
            path: sweep_dir.join("slurm"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn log_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    fn jobs_dir(&self) -> PathBuf {
        self.path.join("jobs")
    }

    /// The log of task `index` of array job `job`.
    pub fn log(&self, job: &str, index: usize) -> PathBuf {
        self.log_dir().join(format!("{job}_{index}.log"))
    }

    /// Names for a new submission's script and sweep snapshot, unique per
    /// process and second: `(submit-<time>-<pid>.sbatch, ….toml)`.
    pub fn new_submission_paths(&self) -> (PathBuf, PathBuf) {
        let stem = format!(
            "submit-{}-{}",
            crate::concept::rundir::format_utc_id(crate::concept::rundir::unix_now()),
            std::process::id()
        );
        (
            self.path.join(format!("{stem}.sbatch")),
            self.path.join(format!("{stem}.toml")),
        )
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError + '_ {
        move |e| SlurmError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// Makes the folder, its `jobs/` and `logs/` (Slurm does not create the log's folder).
    pub fn prepare(&self) -> Result<(), SlurmError> {
        for dir in [self.log_dir(), self.jobs_dir()] {
            std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
        }
        Ok(())
    }

    /// Every submission, oldest first. A damaged record is an error naming
    /// it (so `status` can say so and go on).
    pub fn submissions(&self) -> Result<Vec<Submission>, SlurmError> {
        let dir = self.jobs_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let mut all = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
            let sub: Submission = serde_json::from_str(&text).map_err(|e| SlurmError::Io {
                path: path.clone(),
                message: format!(
                    "{e}; it records one Slurm job of the sweep: fix it or delete it (the runs are not affected)"
                ),
            })?;
            all.push(sub);
        }
        // Job ids grow with time on one cluster.
        all.sort_by_key(|s| (s.submitted, s.job.parse::<u64>().unwrap_or(0)));
        Ok(all)
    }

    /// Records a submission (`jobs/<job>.json`, written to a temp name, then renamed).
    pub fn record(&self, sub: &Submission) -> Result<(), SlurmError> {
        let path = self.jobs_dir().join(format!("{}.json", sub.job));
        let text = serde_json::to_string_pretty(sub).map_err(|e| SlurmError::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, format!("{text}\n").as_bytes()).map_err(Self::io(&path))
    }

    /// The latest submission that includes run `index`.
    pub fn latest_for(&self, index: usize) -> Option<Submission> {
        self.submissions()
            .ok()?
            .into_iter()
            .rev()
            .find(|s| s.indices.contains(&index))
    }

    /// All the array jobs' ids, oldest first.
    pub fn job_ids(&self) -> Result<Vec<String>, SlurmError> {
        Ok(self.submissions()?.into_iter().map(|s| s.job).collect())
    }
}

/// The last `n` lines of a log (lossy UTF-8), for an error message.
pub fn log_tail(path: &Path, n: usize) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    // Progress bars write `\r`: keep each line's last state.
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    Some(lines[start..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_round_trip_and_the_latest_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SlurmDir::of(tmp.path());
        assert!(dir.submissions().unwrap().is_empty());
        dir.prepare().unwrap();
        for (job, at, indices) in [("11", 6, vec![1]), ("10", 5, vec![0, 1, 2])] {
            dir.record(&Submission {
                job: job.into(),
                submitted: at,
                indices,
                script: dir.path().join(format!("job-{job}.sbatch")),
                snapshot: None,
            })
            .unwrap();
        }
        assert_eq!(dir.job_ids().unwrap(), vec!["10", "11"], "oldest first");
        assert_eq!(dir.latest_for(1).unwrap().job, "11");
        assert_eq!(dir.latest_for(2).unwrap().job, "10");
        assert!(dir.latest_for(3).is_none());
        assert!(dir.log("11", 1).ends_with("logs/11_1.log"));
        let (script, snapshot) = dir.new_submission_paths();
        assert_eq!(script.with_extension("toml"), snapshot);

        std::fs::write(dir.path().join("jobs/12.json"), "{not json").unwrap();
        let err = dir.submissions().unwrap_err().to_string();
        assert!(
            err.contains("12.json") && err.contains("delete it"),
            "{err}"
        );
    }

    #[test]
    fn log_tails_keep_the_last_state_of_progress_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.log");
        std::fs::write(&p, "a\nb\n[#--] 1/3\r[##-] 2/3\r[###] 3/3\nerror: boom\n\n").unwrap();
        assert_eq!(log_tail(&p, 2).unwrap(), "[###] 3/3\nerror: boom");
        assert!(log_tail(&tmp.path().join("none"), 2).is_none());
    }
}
