//! The workbench's slow work: everything that reads or writes files (listing
//! the folders, importing a reference, creating a concept or a prompt file,
//! exporting, reading evaluations, prompt files, concepts and a followed run's
//! metrics). [`App::update`](super::app::App::update) never does it itself: it
//! returns an [`Effect::Task`](super::app::Effect::Task), the runtime hands the
//! [`Task`] to one worker thread ([`Worker`]), and its [`Done`] comes back as
//! [`Msg::Done`](super::app::Msg::Done). One thread, in order: a task sees
//! the files as the tasks before it left them (a reference is imported before
//! the concept made from it is created), and results arrive in that order.

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::time::Instant;

use super::app::Msg;
use super::compare::RunCurve;
use super::scan::Scan;
use crate::concept::reference::{open_image, ReferenceError};
use crate::concept::{self, Concept, ConceptError, NewConcept, RunState};
use crate::engine::GenerateJob;
use crate::generate::promptfile::PromptFileError;
use crate::interop::export::ExportFormat;
use crate::interop::InteropError;
use crate::runs::RunSummary;
use crate::train::{MetricsTail, RunDir, StepMetrics};
use crate::workspace::Workspace;

/// Work for the worker thread.
#[derive(Debug, Clone)]
pub enum Task {
    /// Re-read the workspace's folders.
    Scan,
    /// Check that an image decodes, then copy it (and its companions) into `references/`.
    ImportReference(PathBuf),
    CreateConcept(NewConcept),
    /// Write a new prompt file `prompts/<stem>.toml` (or `<stem>-2.toml`, …) that uses `word`.
    NewPrompt {
        stem: String,
        word: String,
    },
    /// A concept's pair as A1111 safetensors into `exports/a1111/`.
    Export {
        concept: String,
    },
    /// The table of a concept's CLIP evaluations (empty when there are none).
    LoadEvals {
        concept: String,
    },
    /// A concept's `concept.toml`, fresh, to train it.
    LoadConcept {
        name: String,
        resume: bool,
    },
    /// A prompt file's generation job; `watched`: a save seen by the watcher,
    /// skipped silently when the file is gone by now.
    LoadPrompt {
        path: PathBuf,
        seed: Option<i64>,
        watched: bool,
    },
    /// The metrics a run started elsewhere wrote since `tail` last read
    /// (`None`: start following it, reading its total steps).
    PollRun {
        concept: String,
        run: RunDir,
        tail: Option<MetricsTail>,
    },
    /// Every run of a concept ([`crate::runs::list_runs`]) and its sweeps' queue lines.
    LoadRuns {
        concept: String,
    },
    /// Replaces a run's note and tags (the run folder's own note/tag files).
    SaveRunNote {
        concept: String,
        run: String,
        note: String,
        tags: Vec<String>,
    },
    /// A run's pair (or checkpoint `step`) becomes the concept's active pair.
    PromoteRun {
        concept: String,
        run: String,
        step: Option<u64>,
    },
    /// A run's pair (or checkpoint `step`) in `format` into
    /// `exports/<format>/<run>[-step-N]`, as `dreamartist runs export` writes it.
    ExportRun {
        concept: String,
        run: String,
        step: Option<u64>,
        format: String,
    },
    /// The compared runs' loss curves and samples.
    LoadCompare {
        concept: String,
        runs: Vec<String>,
    },
    /// Cancels a run's Slurm task (`scancel JOB_INDEX`).
    CancelSlurmTask {
        concept: String,
        run: String,
        job: String,
        index: usize,
    },
    /// Checks a sweep file and starts it in a background process.
    StartSweep {
        typed: String,
    },
}

/// A task's result.
#[derive(Debug)]
pub enum Done {
    Scanned(Scan),
    /// The reference's workspace-relative path, and the folders after it.
    ReferenceImported(Result<(String, Scan), TaskError>),
    /// The new concept's name, and the folders after it.
    ConceptCreated(Result<(String, Scan), TaskError>),
    PromptCreated(Result<(PathBuf, Scan), TaskError>),
    Exported {
        concept: String,
        result: Result<Vec<PathBuf>, TaskError>,
    },
    EvalsLoaded {
        concept: String,
        lines: Vec<String>,
    },
    ConceptLoaded {
        resume: bool,
        result: Result<Box<Concept>, TaskError>,
    },
    PromptLoaded {
        path: PathBuf,
        result: Result<Box<GenerateJob>, TaskError>,
    },
    RunPolled {
        concept: String,
        run: RunDir,
        /// Read when following starts.
        total_steps: Option<u64>,
        tail: MetricsTail,
        lines: Vec<StepMetrics>,
        at: Instant,
        /// The run's status from its files (live, or how it ended).
        state: RunState,
    },
    RunsLoaded {
        concept: String,
        result: Result<RunsListing, TaskError>,
    },
    /// A note saved, a run promoted or exported: what to tell the user.
    RunsAction {
        concept: String,
        result: Result<String, TaskError>,
        /// The concept's pair changed: list the folders again.
        rescan: bool,
    },
    CompareLoaded {
        concept: String,
        curves: Vec<RunCurve>,
    },
    /// The sweep's concept and what to tell the user.
    SweepStarted(Result<(String, String), TaskError>),
    /// Nothing to report (a watched prompt file that is gone).
    Nothing,
}

/// A concept's runs, its sweeps' lines and its runs' Slurm tasks.
pub type RunsListing = (Vec<RunSummary>, Vec<String>, Vec<super::sweeps::SlurmCell>);

/// Why a task failed; shown as the library's own message.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Concept(#[from] ConceptError),
    /// Creating concepts and importing references report with context chains.
    #[error("{0:#}")]
    Create(anyhow::Error),
    #[error(transparent)]
    Export(#[from] InteropError),
    #[error(transparent)]
    PromptFile(#[from] PromptFileError),
    #[error(transparent)]
    Runs(#[from] crate::runs::RunsError),
    #[error(transparent)]
    Tags(#[from] crate::concept::runnotes::TagsError),
    #[error(transparent)]
    Sweep(#[from] super::sweeps::SweepStartError),
    #[error(transparent)]
    Slurm(#[from] crate::slurm::SlurmError),
    #[error("{path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Task {
    /// Does the work (blocking: on the worker thread, or inline in tests).
    pub fn run(self, ws: &Workspace) -> Done {
        match self {
            Task::Scan => Done::Scanned(Scan::read(ws)),
            Task::ImportReference(path) => Done::ReferenceImported(
                import_reference(ws, &path).map(|rel| (rel, Scan::read(ws))),
            ),
            Task::CreateConcept(new) => Done::ConceptCreated(
                concept::add(ws, &new)
                    .map_err(TaskError::Create)
                    .map(|c| (c.name, Scan::read(ws))),
            ),
            Task::NewPrompt { stem, word } => {
                Done::PromptCreated(new_prompt(ws, &stem, &word).map(|path| (path, Scan::read(ws))))
            }
            Task::Export { concept } => {
                let out = ws.root.join("exports").join("a1111");
                let result =
                    crate::interop::workspace::export(ws, &concept, ExportFormat::A1111, &out)
                        .map_err(TaskError::from);
                Done::Exported { concept, result }
            }
            Task::LoadEvals { concept } => {
                let reports = crate::eval::concept_evals(&ws.concept_dir(&concept));
                Done::EvalsLoaded {
                    concept,
                    lines: crate::eval::table_lines(&reports),
                }
            }
            Task::LoadConcept { name, resume } => Done::ConceptLoaded {
                resume,
                result: Concept::load(ws, &name)
                    .map(Box::new)
                    .map_err(TaskError::from),
            },
            Task::LoadPrompt {
                path,
                seed,
                watched,
            } => {
                if watched && !path.is_file() {
                    return Done::Nothing;
                }
                // The app numbers the job when it sends it.
                let result = GenerateJob::from_prompt_file(0, &path, ws)
                    .map(|mut job| {
                        if let Some(s) = seed {
                            job.request.seed = s;
                        }
                        Box::new(job)
                    })
                    .map_err(TaskError::from);
                Done::PromptLoaded { path, result }
            }
            Task::PollRun { concept, run, tail } => {
                let total_steps = tail.is_none().then(|| run.total_steps());
                let mut tail = tail.unwrap_or_else(|| run.tail());
                let lines = tail.poll();
                Done::RunPolled {
                    state: run.state(),
                    concept,
                    run,
                    total_steps,
                    tail,
                    lines,
                    at: Instant::now(),
                }
            }
            Task::LoadRuns { concept } => {
                let result = Concept::load(ws, &concept)
                    .map(|c| {
                        let dir = c.dir(ws);
                        let (sweeps, slurm) = super::sweeps::concept_sweeps(ws, &dir);
                        (crate::runs::list_runs(&c, &dir), sweeps, slurm)
                    })
                    .map_err(TaskError::from);
                Done::RunsLoaded { concept, result }
            }
            Task::SaveRunNote {
                concept,
                run,
                note,
                tags,
            } => {
                let dir = RunDir::at(&ws.concept_dir(&concept), &run);
                let result = dir
                    .set_note(&note)
                    .map_err(|error| TaskError::Write {
                        path: dir.note_path(),
                        error,
                    })
                    .and_then(|()| dir.set_tags(&tags).map_err(TaskError::from))
                    .map(|()| format!("saved the note and tags of run {run}"));
                Done::RunsAction {
                    concept,
                    result,
                    rescan: false,
                }
            }
            Task::PromoteRun { concept, run, step } => {
                let result = Concept::load(ws, &concept)
                    .map_err(TaskError::from)
                    .and_then(|c| Ok(crate::runs::promote(ws, &c, &run, step)?))
                    .map(|p| {
                        format!(
                            "<{concept}> is now run {} at step {}: {}",
                            p.run,
                            p.step,
                            p.positive.display()
                        )
                    });
                Done::RunsAction {
                    concept,
                    result,
                    rescan: true,
                }
            }
            Task::ExportRun {
                concept,
                run,
                step,
                format,
            } => {
                let result = export_run(ws, &concept, &run, step, &format);
                Done::RunsAction {
                    concept,
                    result,
                    rescan: false,
                }
            }
            Task::LoadCompare { concept, runs } => {
                let dir = ws.concept_dir(&concept);
                let curves = runs.iter().map(|id| RunCurve::read(&dir, id)).collect();
                Done::CompareLoaded { concept, curves }
            }
            Task::CancelSlurmTask {
                concept,
                run,
                job,
                index,
            } => Done::RunsAction {
                concept,
                result: crate::slurm::cancel_task(&job, index)
                    .map(|()| format!("cancelled Slurm task {job}_{index} (run {run})"))
                    .map_err(TaskError::from),
                rescan: false,
            },
            Task::StartSweep { typed } => Done::SweepStarted(
                super::sweeps::resolve(ws, &typed)
                    .and_then(|file| super::sweeps::spawn(ws, &file))
                    .map(|(concept, n, log)| {
                        let text = format!(
                            "sweep of <{concept}> started: {n} runs in the background; log {}",
                            log.display()
                        );
                        (concept, text)
                    })
                    .map_err(TaskError::from),
            ),
        }
    }
}

/// Exports a run as `dreamartist runs export` does, into
/// `exports/<format>/<run>[-step-N]`; says where the files went.
fn export_run(
    ws: &Workspace,
    concept: &str,
    run: &str,
    step: Option<u64>,
    format: &str,
) -> Result<String, TaskError> {
    let c = Concept::load(ws, concept)?;
    let format = ExportFormat::parse(format)?;
    let folder = match step {
        Some(s) => format!("{run}-step-{s}"),
        None => run.to_string(),
    };
    let out = ws.root.join("exports").join(format.name()).join(folder);
    let e = crate::runs::export_run(ws, &c, run, step, format, &out)?;
    let files: Vec<String> = e.files.iter().map(|p| p.display().to_string()).collect();
    Ok(format!("exported run {run}: {}", files.join(", ")))
}

/// Checks the image before copying anything into the workspace.
fn import_reference(ws: &Workspace, path: &std::path::Path) -> Result<String, TaskError> {
    open_image(path)?;
    concept::create::import_reference(ws, path).map_err(TaskError::Create)
}

fn new_prompt(ws: &Workspace, stem: &str, word: &str) -> Result<PathBuf, TaskError> {
    let dir = ws.prompts_dir();
    let _ = std::fs::create_dir_all(&dir);
    let mut path = dir.join(format!("{stem}.toml"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.toml"));
        n += 1;
    }
    let text = format!(
        "# Saved changes re-render this file while watch is on.\nprompt = \"a photo of {word} on the beach\"\nnegative = \"\"\nseed = 1\ncount = 1\nsteps = 20\ncfg = 5.0\nscheduler = \"dpmpp_2m_karras\"\n"
    );
    crate::workspace::write_atomic(&path, text.as_bytes()).map_err(|error| TaskError::Write {
        path: path.clone(),
        error,
    })?;
    Ok(path)
}

/// The worker thread: runs tasks in order and posts their results to the
/// UI thread's queue.
pub struct Worker {
    tx: Sender<Task>,
}

impl Worker {
    /// Starts the thread; it ends when the worker is dropped or the UI's queue closes.
    pub fn spawn(ws: Workspace, results: Sender<Msg>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("tui-worker".into())
            .spawn(move || {
                while let Ok(task) = rx.recv() {
                    if results.send(Msg::Done(task.run(&ws))).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Queues a task; never blocks.
    pub fn send(&self, task: Task) {
        let _ = self.tx.send(task);
    }
}
