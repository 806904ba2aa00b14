//! A sweep's folder, `concepts/<concept>/sweeps/<name>/`: which run folder
//! each planned run trains in, so an interrupted sweep continues where it
//! stopped, and its results.
//!
//! ```text
//! sweep.toml         the sweep file, as last run
//! runs/<index>.json  {"index", "key", "run"}: written when run <index> starts
//! results.md, results.json
//! ```
//!
//! One small file per planned run: the tasks of an array job (`--only INDEX`)
//! or `--jobs N` processes never write the same file. Everything else about a
//! run — finished, stopped, crashed — is read from the run folder itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{PlannedRun, SweepPlan};
use super::SweepError;
use crate::concept::{RunDir, RunState};
use crate::fsutil::write_atomic;
use crate::workspace::Workspace;

/// `runs/<index>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub index: usize,
    /// [`PlannedRun::key`] when the run started.
    pub key: String,
    /// The run id in `concepts/<concept>/runs/`.
    pub run: String,
}

/// What to do with a planned run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Never started (or its run folder is gone, or it died before its first
    /// checkpoint): a new run.
    Start,
    /// Stopped or crashed after a checkpoint: the trainer's resume.
    Resume(String),
    /// Finished, diverged or failed: a result, left as it is.
    Done(String, RunState),
    /// A live process trains it (another task of the sweep).
    Busy(String),
}

/// A sweep's folder.
#[derive(Debug, Clone)]
pub struct SweepDir {
    path: PathBuf,
    concept_dir: PathBuf,
}

impl SweepDir {
    pub fn of(ws: &Workspace, plan: &SweepPlan) -> Self {
        Self::new(&ws.concept_dir(&plan.concept.name), &plan.name)
    }

    /// Sweep `name` of the concept stored in `concept_dir`.
    pub fn new(concept_dir: &Path, name: &str) -> Self {
        Self {
            path: concept_dir.join("sweeps").join(name),
            concept_dir: concept_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sweep's name (its folder's).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    }

    /// The plan from the folder's copy of the sweep file, named after the
    /// folder (the copy's own stem is `sweep`).
    pub fn load_plan(&self, ws: &Workspace) -> Result<SweepPlan, SweepError> {
        let mut plan = SweepPlan::load(&self.path.join("sweep.toml"), ws)?;
        plan.name = self.name();
        Ok(plan)
    }

    /// Every sweep of the workspace's concepts that has run (a folder with
    /// its copy of the sweep file), by concept and name.
    pub fn list(ws: &Workspace) -> Vec<SweepDir> {
        let mut concepts: Vec<PathBuf> = std::fs::read_dir(ws.concepts_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        concepts.sort();
        concepts.iter().flat_map(|c| Self::of_concept(c)).collect()
    }

    /// Every sweep of the concept stored in `concept_dir` that has run, by name.
    pub fn of_concept(concept_dir: &Path) -> Vec<SweepDir> {
        let mut names: Vec<String> = std::fs::read_dir(concept_dir.join("sweeps"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("sweep.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| SweepDir::new(concept_dir, n))
            .collect()
    }

    pub fn concept_dir(&self) -> &Path {
        &self.concept_dir
    }

    fn record_path(&self, index: usize) -> PathBuf {
        self.path.join("runs").join(format!("{index}.json"))
    }

    pub fn results_md(&self) -> PathBuf {
        self.path.join("results.md")
    }

    pub fn results_json(&self) -> PathBuf {
        self.path.join("results.json")
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
        move |source| SweepError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Makes the folder and keeps a copy of the sweep file.
    pub fn prepare(&self, plan: &SweepPlan) -> Result<(), SweepError> {
        let runs = self.path.join("runs");
        std::fs::create_dir_all(&runs).map_err(Self::io(&runs))?;
        let copy = self.path.join("sweep.toml");
        write_atomic(&copy, plan.text.as_bytes()).map_err(Self::io(&copy))
    }

    /// The record of run `index`, if it started.
    pub fn record(&self, index: usize) -> Option<RunRecord> {
        serde_json::from_str(&std::fs::read_to_string(self.record_path(index)).ok()?).ok()
    }

    /// Records that planned run `run` trains in run folder `run_id`.
    pub fn set_record(&self, run: &PlannedRun, run_id: &str) -> Result<(), SweepError> {
        let path = self.record_path(run.index);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Self::io(dir))?;
        }
        let rec = RunRecord {
            index: run.index,
            key: run.key(),
            run: run_id.to_string(),
        };
        let text = serde_json::to_string_pretty(&rec).map_err(|e| SweepError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, format!("{text}\n").as_bytes()).map_err(Self::io(&path))
    }

    /// The run folder of planned run `index`, if it started and still exists.
    pub fn run_dir(&self, index: usize) -> Option<RunDir> {
        let rec = self.record(index)?;
        let run = RunDir::at(&self.concept_dir, &rec.run);
        run.config_path().is_file().then_some(run)
    }

    /// Refuses a sweep file whose runs no longer match what was started
    /// under the same name (a run would be resumed with other options).
    pub fn check(&self, plan: &SweepPlan) -> Result<(), SweepError> {
        for run in &plan.runs {
            if let Some(rec) = self.record(run.index) {
                if rec.key != run.key() {
                    return Err(SweepError::Changed {
                        file: plan.file.clone(),
                        dir: self.path.clone(),
                        index: run.index,
                        was: rec.key,
                        now: run.key(),
                    });
                }
            }
        }
        Ok(())
    }

    /// What to do with planned run `index` now.
    pub fn next(&self, index: usize) -> Next {
        let Some(run) = self.run_dir(index) else {
            return Next::Start;
        };
        let id = run.id().to_string();
        match run.state() {
            s @ (RunState::Finished | RunState::Diverged | RunState::Failed) => Next::Done(id, s),
            RunState::Running | RunState::Paused => Next::Busy(id),
            RunState::Stopped | RunState::Crashed => {
                if run.latest_checkpoint().is_some() {
                    Next::Resume(id)
                } else {
                    Next::Start
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concept::{EndKind, EndRecord, TrainConfig};

    fn planned(index: usize, seed: i64) -> PlannedRun {
        PlannedRun {
            index,
            options: vec![("seed".into(), seed.into())],
            config: TrainConfig::default(),
        }
    }

    /// A run folder with a config, `ended` as its end record and maybe a checkpoint.
    fn run(concept: &Path, id: &str, ended: Option<EndKind>, checkpoint: bool) {
        let r = RunDir::at(concept, id);
        std::fs::create_dir_all(r.checkpoints_dir()).unwrap();
        std::fs::write(r.config_path(), "[train]\nsteps = 20\n").unwrap();
        if checkpoint {
            std::fs::write(r.checkpoint_path(10), b"x").unwrap();
        }
        if let Some(outcome) = ended {
            r.write_end(&EndRecord {
                outcome,
                step: 10,
                total_steps: 20,
                loss: None,
                ended: 1,
                message: None,
            })
            .unwrap();
        }
    }

    #[test]
    fn what_to_do_with_each_planned_run() {
        let tmp = tempfile::tempdir().unwrap();
        let concept = tmp.path().join("cat");
        let dir = SweepDir::new(&concept, "s");
        assert_eq!(dir.next(0), Next::Start, "never started");

        run(&concept, "a", Some(EndKind::Finished), true);
        dir.set_record(&planned(0, 0), "a").unwrap();
        assert_eq!(dir.next(0), Next::Done("a".into(), RunState::Finished));

        run(&concept, "b", Some(EndKind::Stopped), true);
        dir.set_record(&planned(1, 1), "b").unwrap();
        assert_eq!(dir.next(1), Next::Resume("b".into()));

        // Killed before its first checkpoint: nothing to resume from.
        run(&concept, "c", None, false);
        dir.set_record(&planned(2, 2), "c").unwrap();
        assert_eq!(dir.next(2), Next::Start);

        run(&concept, "d", Some(EndKind::Diverged), true);
        dir.set_record(&planned(3, 3), "d").unwrap();
        assert_eq!(dir.next(3), Next::Done("d".into(), RunState::Diverged));

        // Its run folder deleted: started over.
        dir.set_record(&planned(4, 4), "gone").unwrap();
        assert_eq!(dir.next(4), Next::Start);

        assert_eq!(
            dir.record(1),
            Some(RunRecord {
                index: 1,
                key: "seed=1".into(),
                run: "b".into()
            })
        );
    }
}
