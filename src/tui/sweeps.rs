//! Sweeps from the workbench: a sweep file runs in a detached
//! `dreamartist sweep FILE` process (like "keep training headless": the
//! workbench can quit and the sweep goes on), and each sweep of a concept is
//! summed up from its folder (`concepts/<c>/sweeps/<name>/`: the copy of the
//! sweep file and one record per started run, each run's status from its own
//! files) for the runs browser's queue lines.

use std::path::{Path, PathBuf};

use crate::sweep::report::gather;
use crate::sweep::spec::SweepPlan;
use crate::sweep::state::SweepDir;
use crate::workspace::Workspace;

/// Why a sweep could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SweepStartError {
    #[error("{}: no such sweep file (sweeps/*.toml in the workspace, or a path)", .0.display())]
    Missing(PathBuf),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Sweep(#[from] crate::sweep::SweepError),
}

/// A typed sweep path: as given when it exists, else relative to the
/// workspace (`sweeps/grid.toml`), else `sweeps/<name>.toml`.
pub fn resolve(ws: &Workspace, typed: &str) -> Result<PathBuf, SweepStartError> {
    let typed = typed.trim();
    let p = PathBuf::from(typed);
    let candidates = [
        p.clone(),
        ws.root.join(&p),
        ws.root.join("sweeps").join(&p),
        ws.root.join("sweeps").join(format!("{typed}.toml")),
    ];
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or(SweepStartError::Missing(p))
}

/// Checks the sweep file (so a bad one is reported here, not in a log), then
/// starts `dreamartist sweep FILE -w WS` in its own session, its output in
/// the sweep's folder (`sweep.log`). Returns the plan's concept, its number of
/// runs and the log's path.
pub fn spawn(ws: &Workspace, file: &Path) -> Result<(String, usize, PathBuf), SweepStartError> {
    let plan = SweepPlan::load(file, ws)?;
    let dir = SweepDir::of(ws, &plan);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| SweepStartError::Io {
            path,
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir.path()).map_err(io(dir.path()))?;
    let log_path = dir.path().join("sweep.log");
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let exe = std::env::current_exe().map_err(io(file))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("sweep")
        .arg(file)
        .arg("-w")
        .arg(&ws.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io(&log_path))?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own session: quitting the workbench or closing the terminal
        // does not stop the sweep.
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    cmd.spawn().map_err(io(file))?;
    Ok((plan.concept.name.clone(), plan.runs.len(), log_path))
}

/// One line per sweep of the concept: `sweep grid: 1 finished, 1 running,
/// 2 pending`. A sweep whose file no longer loads says why.
pub fn queue_lines(ws: &Workspace, concept_dir: &Path) -> Vec<String> {
    let root = concept_dir.join("sweeps");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("sweep.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let dir = SweepDir::new(concept_dir, &name);
            match dir.load_plan(ws) {
                Ok(plan) => format!("sweep {name}: {}", gather(&plan, &dir).counts()),
                Err(e) => format!("sweep {name}: {e}"),
            }
        })
        .collect()
}
