//! The one worker thread that owns the loaded model. The workbench and `watch`
//! talk to it through [`EngineCommand`]s and read [`EngineEvent`]s (headless
//! commands load the model themselves and call the library directly).
//! Generation jobs are served between training steps; a newer job for the same
//! prompt file replaces a pending one and cancels a running one at its next
//! step (latest wins). Every command, whatever the engine is doing, goes
//! through one handler ([`Inbox::handle`]) that files work for later and says
//! what the work in progress should do.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::generate::output::{save_sample, Destination};
use crate::generate::word_bank;
use crate::generate::{generate_each, GenerateError, GenerateRequest, StepControl};
use crate::sd::StableDiffusion;
use crate::train::{train, RunDir, TrainControl, TrainEvent, TrainRequest};
use crate::workspace::Workspace;

/// A generation job: where it came from (a prompt file, for latest-wins), what
/// to render, and where to put the PNGs.
#[derive(Debug, Clone)]
pub struct GenerateJob {
    pub id: u64,
    pub source: Option<PathBuf>,
    pub request: GenerateRequest,
    pub out_dir: PathBuf,
}

impl GenerateJob {
    /// A prompt file's job: its request, rendered into `outputs/<file-stem>/`.
    pub fn from_prompt_file(
        id: u64,
        path: &Path,
        ws: &Workspace,
    ) -> Result<Self, crate::generate::promptfile::PromptFileError> {
        Ok(Self {
            id,
            source: Some(path.to_path_buf()),
            request: crate::generate::promptfile::load_prompt_file(path, &ws.root)?,
            out_dir: ws.outputs_for(path),
        })
    }
}

#[derive(Debug)]
pub enum EngineCommand {
    Train(Box<TrainRequest>),
    Pause,
    Resume,
    Stop,
    SaveNow,
    Generate(Box<GenerateJob>),
    CancelGenerate,
    /// CLIP evaluation of a concept's latest run (served when no training runs).
    Eval {
        concept: String,
        clip: String,
        settings: crate::eval::EvalSettings,
    },
    Shutdown,
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// The model is loaded; the engine takes commands.
    Ready {
        model: String,
        device: String,
        /// `SD 1.x`, `SD 2.x` or `SDXL`.
        family: String,
    },
    /// The model could not be loaded; the engine has stopped.
    LoadFailed(String),
    Train(TrainEvent),
    TrainFailed(String),
    Paused,
    Resumed,
    GenerateStarted {
        id: u64,
        source: Option<PathBuf>,
    },
    GenerateProgress {
        id: u64,
        index: usize,
        count: usize,
        step: usize,
        steps: usize,
    },
    Sample {
        id: u64,
        source: Option<PathBuf>,
        path: PathBuf,
        seed: u64,
    },
    GenerateDone {
        id: u64,
        source: Option<PathBuf>,
        cancelled: bool,
    },
    GenerateFailed {
        id: u64,
        source: Option<PathBuf>,
        error: String,
    },
    EvalProgress {
        concept: String,
        text: String,
    },
    EvalDone {
        concept: String,
        table: Vec<String>,
    },
    EvalFailed {
        concept: String,
        error: String,
    },
    Stopped,
}

/// Handle to the engine thread.
pub struct Engine {
    tx: Sender<EngineCommand>,
    rx: Receiver<EngineEvent>,
    handle: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine thread; it loads the workspace's model first.
    pub fn spawn(ws: Workspace) -> Self {
        let (tx, cmd_rx) = mpsc::channel();
        let (ev_tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("dreamartist-engine".into())
            .spawn(move || {
                let sd = match ws.load_model() {
                    Ok(sd) => sd,
                    Err(e) => {
                        let _ = ev_tx.send(EngineEvent::LoadFailed(format!("{e:#}")));
                        return;
                    }
                };
                let device = match sd.device.location() {
                    candle_core::DeviceLocation::Cpu => "cpu".to_string(),
                    candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
                    candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
                };
                let _ = ev_tx.send(EngineEvent::Ready {
                    model: sd.name.clone(),
                    device,
                    family: sd.family.short().to_string(),
                });
                Worker {
                    sd: &sd,
                    ws: &ws,
                    rx: cmd_rx,
                    tx: ev_tx,
                    inbox: Inbox::default(),
                    clip: None,
                }
                .run();
            })
            .ok();
        Self { tx, rx, handle }
    }

    pub fn send(&self, cmd: EngineCommand) {
        let _ = self.tx.send(cmd);
    }

    /// A sender for other threads (the file watcher).
    pub fn sender(&self) -> Sender<EngineCommand> {
        self.tx.clone()
    }

    pub fn try_recv(&self) -> Option<EngineEvent> {
        self.rx.try_recv().ok()
    }

    pub fn recv_timeout(&self, d: Duration) -> Option<EngineEvent> {
        self.rx.recv_timeout(d).ok()
    }

    /// Stops the engine (cancelling work) and waits for it.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(EngineCommand::Shutdown);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Worker<'a> {
    sd: &'a StableDiffusion,
    ws: &'a Workspace,
    rx: Receiver<EngineCommand>,
    tx: Sender<EngineEvent>,
    inbox: Inbox,
    /// The CLIP model of the last evaluation, kept for the next one.
    clip: Option<(String, crate::eval::ClipModel)>,
}

/// Work waiting to be done, filed by [`Inbox::handle`].
#[derive(Default)]
struct Inbox {
    queue: VecDeque<GenerateJob>,
    training: Option<TrainRequest>,
    eval: Option<(String, String, crate::eval::EvalSettings)>,
    shutdown: bool,
}

/// What the engine is doing when a command arrives.
#[derive(Debug, Clone, Copy)]
enum Phase<'p> {
    Idle,
    Training {
        paused: bool,
    },
    /// Generating for this prompt file (`None`: a one-off request).
    Generating {
        source: &'p Option<PathBuf>,
    },
    Evaluating,
}

/// What the work in progress should do about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    Continue,
    /// Cancel the generation or evaluation in progress.
    Cancel,
    /// Stop the training (a checkpoint is saved).
    Stop,
    Save,
    Pause,
    Resume,
}

impl Inbox {
    /// The one command handler: files new work for later and says what the
    /// work of `phase` should do now.
    fn handle(&mut self, cmd: EngineCommand, phase: Phase<'_>) -> Reaction {
        let training = matches!(phase, Phase::Training { .. });
        match cmd {
            EngineCommand::Generate(job) => {
                let job = *job;
                // Latest wins: a pending job of the same prompt file is dropped,
                // a running one cancelled.
                let cancel = job.source.is_some()
                    && matches!(phase, Phase::Generating { source } if *source == job.source);
                if job.source.is_some() {
                    self.queue.retain(|q| q.source != job.source);
                }
                self.queue.push_back(job);
                if cancel {
                    Reaction::Cancel
                } else {
                    Reaction::Continue
                }
            }
            EngineCommand::CancelGenerate => {
                self.queue.clear();
                match phase {
                    Phase::Generating { .. } | Phase::Evaluating => Reaction::Cancel,
                    _ => Reaction::Continue,
                }
            }
            EngineCommand::Train(req) => {
                self.training = Some(*req);
                Reaction::Continue
            }
            EngineCommand::Eval {
                concept,
                clip,
                settings,
            } => {
                self.eval = Some((concept, clip, settings));
                Reaction::Continue
            }
            EngineCommand::Shutdown => {
                self.shutdown = true;
                self.queue.clear();
                if training {
                    Reaction::Stop
                } else {
                    Reaction::Cancel
                }
            }
            EngineCommand::Pause => match phase {
                Phase::Training { paused: false } => Reaction::Pause,
                _ => Reaction::Continue,
            },
            EngineCommand::Resume => match phase {
                Phase::Training { paused: true } => Reaction::Resume,
                _ => Reaction::Continue,
            },
            EngineCommand::Stop if training => Reaction::Stop,
            EngineCommand::SaveNow if training => Reaction::Save,
            // Training controls outside a run have nothing to act on.
            EngineCommand::Stop | EngineCommand::SaveNow => Reaction::Continue,
        }
    }

    /// Handles every command waiting in `rx`; true if one asks to cancel.
    fn drain(&mut self, rx: &Receiver<EngineCommand>, phase: Phase<'_>) -> bool {
        let mut cancel = false;
        while let Ok(cmd) = rx.try_recv() {
            cancel |= self.handle(cmd, phase) == Reaction::Cancel;
        }
        cancel
    }
}

impl Worker<'_> {
    fn emit(&self, ev: EngineEvent) {
        let _ = self.tx.send(ev);
    }

    /// Runs one job on the compute pool and settles the device on that same
    /// thread before returning.
    fn on_pool_settled(&mut self, job: impl FnOnce(&mut Self) + Send) {
        crate::threads::on_pool(|| {
            job(self);
            self.settle();
        });
        // The job's peak stays free in the heap otherwise (`heap::tune`).
        crate::heap::give_back();
    }

    /// Waits for this thread's device work ([`crate::sd::device::settle`]); a
    /// device that fails here is broken for every later job, so it is logged.
    fn settle(&self) {
        if let Err(e) = crate::sd::device::settle(&self.sd.device) {
            tracing::error!("the device failed to finish its work: {e}");
        }
    }

    fn run(mut self) {
        while !self.inbox.shutdown {
            // Each job runs on the compute pool (`threads::on_pool`); waiting
            // for commands does not, so an idle engine holds no pool worker.
            // Each ends by settling the device on its own thread: the next
            // job may run on another pool thread, whose CUDA stream is not
            // ordered with this one's (`sd::device::settle`).
            if let Some(req) = self.inbox.training.take() {
                self.on_pool_settled(|w| w.run_training(req));
                continue;
            }
            if let Some(job) = self.inbox.queue.pop_front() {
                self.on_pool_settled(|w| w.run_job(job));
                continue;
            }
            if let Some((concept, clip, settings)) = self.inbox.eval.take() {
                self.on_pool_settled(|w| w.run_eval(concept, clip, settings));
                continue;
            }
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(cmd) => {
                    self.inbox.handle(cmd, Phase::Idle);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.emit(EngineEvent::Stopped);
    }

    fn run_eval(&mut self, concept: String, spec: String, settings: crate::eval::EvalSettings) {
        let fail = |this: &Self, error: String| {
            this.emit(EngineEvent::EvalFailed {
                concept: concept.clone(),
                error,
            })
        };
        if self.clip.as_ref().is_none_or(|(s, _)| *s != spec) {
            self.emit(EngineEvent::EvalProgress {
                concept: concept.clone(),
                text: format!("loading CLIP {spec}"),
            });
            match crate::eval::ClipModel::load(&spec, &self.sd.device) {
                Ok(m) => self.clip = Some((spec.clone(), m)),
                Err(e) => return fail(self, e.to_string()),
            }
        }
        let Some((_, clip)) = self.clip.as_ref() else {
            return;
        };
        let req = crate::eval::EvalRequest {
            concept: concept.clone(),
            targets: Vec::new(),
            settings,
        };
        let tx = self.tx.clone();
        let rx = &self.rx;
        let inbox = &mut self.inbox;
        let result = crate::eval::evaluate(self.sd, clip, self.ws, &req, |ev| {
            let text = match ev {
                crate::eval::EvalEvent::Target { label, .. } => format!("evaluating {label}"),
                crate::eval::EvalEvent::Prompt {
                    index,
                    count,
                    prompt,
                    ..
                } => format!("prompt {}/{count}: {prompt}", index + 1),
                crate::eval::EvalEvent::Report { path, .. } => format!("wrote {}", path.display()),
            };
            let _ = tx.send(EngineEvent::EvalProgress {
                concept: concept.clone(),
                text,
            });
            if inbox.drain(rx, Phase::Evaluating) {
                crate::eval::EvalControl::Stop
            } else {
                crate::eval::EvalControl::Continue
            }
        });
        match result {
            Ok(reports) => self.emit(EngineEvent::EvalDone {
                concept: concept.clone(),
                table: crate::eval::table_lines(&reports),
            }),
            Err(e) => fail(self, e.to_string()),
        }
    }

    fn run_job(&mut self, job: GenerateJob) {
        self.emit(EngineEvent::GenerateStarted {
            id: job.id,
            source: job.source.clone(),
        });
        let bank = match word_bank(self.ws) {
            Ok(b) => b,
            Err(e) => {
                self.emit(EngineEvent::GenerateFailed {
                    id: job.id,
                    source: job.source.clone(),
                    error: crate::errtext::chain(&e),
                });
                return;
            }
        };
        let mut cancelled = false;
        let result = {
            let tx = self.tx.clone();
            let rx = &self.rx;
            let sd = self.sd;
            let hash = sd.model_hash();
            let inbox = &mut self.inbox;
            let phase = Phase::Generating {
                source: &job.source,
            };
            let r = generate_each(
                sd,
                &bank,
                &job.request,
                |p| {
                    let _ = tx.send(EngineEvent::GenerateProgress {
                        id: job.id,
                        index: p.index,
                        count: p.count,
                        step: p.step,
                        steps: p.steps,
                    });
                    if inbox.drain(rx, phase) {
                        cancelled = true;
                    }
                    if cancelled {
                        StepControl::Cancel
                    } else {
                        StepControl::Continue
                    }
                },
                // Each image is written as soon as it is decoded.
                |g| {
                    let path = save_sample(
                        sd,
                        &hash,
                        &job.request,
                        &g,
                        Destination::Numbered(&job.out_dir),
                        &[],
                    )
                    .map_err(GenerateError::Output)?;
                    let _ = tx.send(EngineEvent::Sample {
                        id: job.id,
                        source: job.source.clone(),
                        path,
                        seed: g.seed,
                    });
                    Ok(())
                },
            );
            r
        };
        match result {
            Ok(()) => self.emit(EngineEvent::GenerateDone {
                id: job.id,
                source: job.source.clone(),
                cancelled,
            }),
            Err(e) => self.emit(EngineEvent::GenerateFailed {
                id: job.id,
                source: job.source.clone(),
                error: e.to_string(),
            }),
        }
    }

    fn run_training(&mut self, req: TrainRequest) {
        let sd = self.sd;
        let ws = self.ws;
        let tx = self.tx.clone();
        let mut paused = false;
        let mut stop = false;
        let mut save = false;
        // The run's folder, to mark it paused for anyone reading it.
        let mut run: Option<RunDir> = None;
        // Commands arriving during training: controls act at the next step;
        // generation jobs are served between steps.
        let result = {
            let this = &mut *self;
            train(sd, ws, &req, |ev| {
                let _ = tx.send(EngineEvent::Train(ev.clone()));
                if let TrainEvent::Started {
                    run_id, run_dir, ..
                } = ev
                {
                    if let Some(concept_dir) = run_dir.parent().and_then(Path::parent) {
                        run = Some(RunDir::at(concept_dir, run_id));
                    }
                }
                if !matches!(ev, TrainEvent::Step(_)) {
                    return TrainControl::Continue;
                }
                loop {
                    let cmd = if paused {
                        match this.rx.recv_timeout(Duration::from_millis(100)) {
                            Ok(c) => Some(c),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => Some(EngineCommand::Shutdown),
                        }
                    } else {
                        this.rx.try_recv().ok()
                    };
                    if let Some(cmd) = cmd {
                        match this.inbox.handle(cmd, Phase::Training { paused }) {
                            Reaction::Pause => {
                                paused = true;
                                mark_paused(run.as_ref(), true);
                                let _ = tx.send(EngineEvent::Paused);
                            }
                            Reaction::Resume => {
                                paused = false;
                                mark_paused(run.as_ref(), false);
                                let _ = tx.send(EngineEvent::Resumed);
                            }
                            Reaction::Stop => {
                                stop = true;
                                paused = false;
                                mark_paused(run.as_ref(), false);
                            }
                            Reaction::Save => save = true,
                            Reaction::Continue | Reaction::Cancel => {}
                        }
                        // More may be waiting: take them all before the next step.
                        if !paused && !stop {
                            continue;
                        }
                    }
                    while let Some(job) = this.inbox.queue.pop_front() {
                        this.run_job(job);
                    }
                    // A shutdown that arrived during one of those jobs.
                    if this.inbox.shutdown {
                        stop = true;
                        paused = false;
                    }
                    if !paused || stop {
                        break;
                    }
                }
                if stop {
                    TrainControl::Stop
                } else if std::mem::take(&mut save) {
                    TrainControl::SaveCheckpoint
                } else {
                    TrainControl::Continue
                }
            })
        };
        if let Err(e) = result {
            self.emit(EngineEvent::TrainFailed(e.to_string()));
        }
    }
}

/// Marks the run paused or running in its folder (best effort: the session
/// removes the mark when it ends anyway).
fn mark_paused(run: Option<&RunDir>, paused: bool) {
    if let Some(r) = run {
        let _ = r.set_paused(paused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, source: Option<&str>) -> EngineCommand {
        EngineCommand::Generate(Box::new(GenerateJob {
            id,
            source: source.map(PathBuf::from),
            request: GenerateRequest::default(),
            out_dir: PathBuf::new(),
        }))
    }

    #[test]
    fn one_handler_decides_for_every_phase() {
        let mut inbox = Inbox::default();
        let a = Some(PathBuf::from("a.toml"));
        // Latest wins: a pending job of the same file is replaced…
        assert_eq!(
            inbox.handle(job(1, Some("a.toml")), Phase::Idle),
            Reaction::Continue
        );
        assert_eq!(
            inbox.handle(job(2, Some("a.toml")), Phase::Idle),
            Reaction::Continue
        );
        assert_eq!(
            inbox.queue.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![2]
        );
        // …and a running one cancelled; other files and one-off jobs queue up.
        let running = Phase::Generating { source: &a };
        assert_eq!(
            inbox.handle(job(3, Some("a.toml")), running),
            Reaction::Cancel
        );
        assert_eq!(
            inbox.handle(job(4, Some("b.toml")), running),
            Reaction::Continue
        );
        assert_eq!(inbox.handle(job(5, None), running), Reaction::Continue);
        assert_eq!(inbox.queue.len(), 3);
        assert_eq!(
            inbox.handle(EngineCommand::CancelGenerate, running),
            Reaction::Cancel
        );
        assert!(inbox.queue.is_empty());
        assert_eq!(
            inbox.handle(EngineCommand::CancelGenerate, Phase::Evaluating),
            Reaction::Cancel
        );
        // Training controls act only on a run, and only when they change something.
        for (cmd, phase, want) in [
            (
                EngineCommand::Pause,
                Phase::Training { paused: false },
                Reaction::Pause,
            ),
            (
                EngineCommand::Pause,
                Phase::Training { paused: true },
                Reaction::Continue,
            ),
            (
                EngineCommand::Resume,
                Phase::Training { paused: true },
                Reaction::Resume,
            ),
            (
                EngineCommand::Stop,
                Phase::Training { paused: false },
                Reaction::Stop,
            ),
            (
                EngineCommand::SaveNow,
                Phase::Training { paused: false },
                Reaction::Save,
            ),
            (EngineCommand::Stop, Phase::Idle, Reaction::Continue),
            (EngineCommand::Pause, running, Reaction::Continue),
        ] {
            assert_eq!(inbox.handle(cmd, phase), want);
        }
        // Shutdown stops a run, cancels other work, and drops pending jobs.
        inbox.handle(job(6, None), Phase::Idle);
        assert_eq!(
            inbox.handle(EngineCommand::Shutdown, Phase::Training { paused: false }),
            Reaction::Stop
        );
        assert!(inbox.shutdown && inbox.queue.is_empty());
    }
}
