//! What was submitted for a sweep, kept in its folder so that `status`, the
//! workbench and `--wait` find the jobs again from any login session:
//!
//! ```text
//! concepts/<c>/sweeps/<name>/slurm/
//!   job-<id>.sbatch   the script as submitted
//!   jobs.json         every submission: job id, time, array indices, script
//!   logs/<job>_<index>.log   each task's output, all its attempts appended
//! ```

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

    fn jobs_file(&self) -> PathBuf {
        self.path.join("jobs.json")
    }

    /// The log of task `index` of array job `job`.
    pub fn log(&self, job: &str, index: usize) -> PathBuf {
        self.log_dir().join(format!("{job}_{index}.log"))
    }

    /// Where a script is kept before it is submitted (renamed after its job id).
    pub fn pending_script(&self) -> PathBuf {
        self.path.join("job.sbatch")
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError + '_ {
        move |e| SlurmError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// Makes the folder and its `logs/` (Slurm does not create the log's folder).
    pub fn prepare(&self) -> Result<(), SlurmError> {
        let logs = self.log_dir();
        std::fs::create_dir_all(&logs).map_err(Self::io(&logs))
    }

    /// Every submission, oldest first. A damaged file reads as none, with
    /// the reason (so `status` can say it and go on).
    pub fn submissions(&self) -> Result<Vec<Submission>, SlurmError> {
        let path = self.jobs_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| SlurmError::Io {
                path: path.clone(),
                message: format!(
                    "{e}; it lists the sweep's Slurm jobs: fix it or delete it (the runs are not affected)"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    /// Adds a submission (written to a temp name, then renamed).
    pub fn record(&self, sub: Submission) -> Result<(), SlurmError> {
        let mut all = self.submissions().unwrap_or_default();
        all.push(sub);
        let path = self.jobs_file();
        let text = serde_json::to_string_pretty(&all).map_err(|e| SlurmError::Io {
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
    pub fn job_ids(&self) -> Vec<String> {
        self.submissions()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.job)
            .collect()
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
        for (job, indices) in [("10", vec![0, 1, 2]), ("11", vec![1])] {
            dir.record(Submission {
                job: job.into(),
                submitted: 5,
                indices,
                script: dir.path().join(format!("job-{job}.sbatch")),
            })
            .unwrap();
        }
        assert_eq!(dir.job_ids(), vec!["10", "11"]);
        assert_eq!(dir.latest_for(1).unwrap().job, "11");
        assert_eq!(dir.latest_for(2).unwrap().job, "10");
        assert!(dir.latest_for(3).is_none());
        assert!(dir.log("11", 1).ends_with("logs/11_1.log"));

        std::fs::write(dir.path().join("jobs.json"), "{not json").unwrap();
        let err = dir.submissions().unwrap_err().to_string();
        assert!(
            err.contains("jobs.json") && err.contains("delete it"),
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
