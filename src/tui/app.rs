//! The workbench's state and its update function. `update` turns messages
//! (keys, engine events, file changes, ticks, finished tasks) into state
//! changes and [`Effect`]s for the runtime to carry out. It never blocks:
//! anything that touches files becomes an [`Effect::Task`] run on the worker
//! thread ([`super::tasks`]), whose result comes back as [`Msg::Done`]; it
//! never touches the terminal or candle either, so flows are tested by
//! feeding messages. Main-screen actions live in `actions.rs`, engine events
//! in `events.rs`, task results in `done.rs`, popups in `popups/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::KeyEvent;
use tracing::Level;

use super::keymap::{Action, Keymap};
use super::logbuf::LogBuffer;
use super::popups::{ErrorPopup, Outcome, Request};
use super::scan::Scan;
use super::tasks::{Done, Task};
use super::theme::Theme;
use crate::engine::{EngineCommand, EngineEvent};
use crate::workspace::watch::Debouncer;
use crate::workspace::Workspace;

pub use super::popups::Popup;
pub use super::state::{
    clamp_sel, grid_window, ChartScale, ConceptRow, EngineState, ImageSlot, PaneId, PromptRow,
    PromptStatus, SampleEntry, SampleOrigin, TrainStatus, TrainingView,
};

/// How often the folders are listed again (files added by hand, headless runs).
const RESCAN: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Engine(EngineEvent),
    PromptChanged(PathBuf),
    Tick(Instant),
    /// The terminal was resized: redraw.
    Redraw,
    /// A task finished on the worker thread.
    Done(Done),
}

/// What the runtime must do for the app.
#[derive(Debug)]
pub enum Effect {
    Engine(EngineCommand),
    /// Slow work for the worker thread; its result comes back as [`Msg::Done`].
    Task(Task),
    OpenEditor(PathBuf),
    ShowImage(ImageSlot, Option<PathBuf>),
    Suspend,
    Quit,
    /// Quit and continue this run in a detached headless `dreamartist train`.
    QuitKeepTraining {
        concept: String,
        run_id: String,
        total_steps: u64,
    },
}

pub struct App {
    pub ws: Workspace,
    /// The workspace folder's name for the status bar (resolved once, not per frame).
    pub ws_name: String,
    pub keymap: Keymap,
    pub theme: Theme,
    pub logs: LogBuffer,
    pub log_level: Level,
    pub focus: PaneId,
    pub popup: Option<Popup>,
    pub engine: EngineState,
    pub image_protocol: String,
    pub references: Vec<PathBuf>,
    pub sel_reference: usize,
    pub concepts: Vec<ConceptRow>,
    pub sel_concept: usize,
    pub training: Option<TrainingView>,
    pub show_full_history: bool,
    pub chart_scale: ChartScale,
    pub samples: Vec<SampleEntry>,
    pub sel_sample: usize,
    /// The samples pane shows a grid of the latest samples instead of one.
    pub sample_grid: bool,
    pub prompts: Vec<PromptRow>,
    pub sel_prompt: usize,
    pub watch_on: bool,
    pub debouncer: Debouncer,
    pub quit_after_stop: Option<bool>,
    pub frame_time: Option<std::time::Duration>,
    pub(super) next_job: u64,
    /// Generation job id → its prompt file and prompt, for progress and samples.
    pub(super) jobs: HashMap<u64, (PathBuf, String)>,
    last_refresh: Option<Instant>,
    /// A [`Task::Scan`] is on the worker: don't queue another.
    pub(super) scanning: bool,
    /// A [`Task::PollRun`] is on the worker (it holds the run's tail).
    pub(super) polling: bool,
    /// A [`Task::LoadRuns`] is on the worker: the browser's refresh waits.
    pub(super) loading_runs: bool,
}

impl App {
    /// The app over a workspace. Lists its folders once, here, so the first
    /// frame has something to show; later listings run on the worker.
    pub fn new(
        ws: Workspace,
        keymap: Keymap,
        theme: Theme,
        logs: LogBuffer,
        image_protocol: &str,
    ) -> Self {
        let ws_name = ws
            .root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| ws.root.display().to_string());
        let scan = Scan::read(&ws);
        let mut app = Self {
            ws,
            ws_name,
            keymap,
            theme,
            logs,
            log_level: Level::INFO,
            focus: PaneId::Concepts,
            popup: None,
            engine: EngineState::Loading,
            image_protocol: image_protocol.to_string(),
            references: Vec::new(),
            sel_reference: 0,
            concepts: Vec::new(),
            sel_concept: 0,
            training: None,
            show_full_history: false,
            chart_scale: ChartScale::Linear,
            samples: Vec::new(),
            sel_sample: 0,
            sample_grid: false,
            prompts: Vec::new(),
            sel_prompt: 0,
            watch_on: true,
            debouncer: Debouncer::default(),
            quit_after_stop: None,
            frame_time: None,
            next_job: 1,
            jobs: HashMap::new(),
            last_refresh: None,
            scanning: false,
            polling: false,
            loading_runs: false,
        };
        app.apply_scan(scan);
        app
    }

    /// Takes a listing of the folders, keeping selections and prompt statuses.
    pub(super) fn apply_scan(&mut self, scan: Scan) {
        self.references = scan.references;
        self.sel_reference = clamp_sel(self.sel_reference, self.references.len());
        self.concepts = scan.concepts;
        self.sel_concept = clamp_sel(self.sel_concept, self.concepts.len());
        let old = std::mem::take(&mut self.prompts);
        self.prompts = scan
            .prompts
            .into_iter()
            .map(|path| {
                let status = old
                    .iter()
                    .find(|r| r.path == path)
                    .map_or(PromptStatus::Idle, |r| r.status.clone());
                PromptRow { path, status }
            })
            .collect();
        self.sel_prompt = clamp_sel(self.sel_prompt, self.prompts.len());
    }

    /// A main-screen action's first key, for messages that name it.
    pub fn key(&self, action: Action) -> String {
        self.keymap.main.key(action)
    }

    pub fn selected_concept(&self) -> Option<&ConceptRow> {
        self.concepts.get(self.sel_concept)
    }

    pub fn selected_sample(&self) -> Option<&SampleEntry> {
        self.samples.get(self.sel_sample)
    }

    pub(super) fn log(&self, level: Level, text: impl Into<String>) {
        self.logs.push(level, text);
    }

    /// Logs an error and shows it (replacing any popup).
    pub(super) fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.log(Level::ERROR, text.clone());
        self.popup = Some(Popup::Error(ErrorPopup::new(text)));
    }

    pub fn is_training(&self) -> bool {
        matches!(
            self.training.as_ref().map(|t| &t.status),
            Some(
                TrainStatus::Starting
                    | TrainStatus::Running
                    | TrainStatus::Paused
                    | TrainStatus::Stopping
            )
        )
    }

    pub(super) fn set_train_status(&mut self, s: TrainStatus) {
        if let Some(t) = self.training.as_mut() {
            t.status = s;
        }
    }

    /// The image effects for the current selection (and the grid's cells
    /// while the grid is on).
    pub fn image_effects(&self) -> Vec<Effect> {
        let reference = self.references.get(self.sel_reference).cloned();
        let sample = self.selected_sample().cloned();
        let sample_ref = match &sample {
            Some(SampleEntry {
                origin: SampleOrigin::Training { concept, .. },
                ..
            }) => self
                .concepts
                .iter()
                .find(|c| &c.name == concept)
                .and_then(|c| c.references.first().cloned()),
            _ => None,
        };
        let sample = sample.map(|s| s.path);
        let mut fx = vec![
            Effect::ShowImage(ImageSlot::Reference, reference),
            Effect::ShowImage(ImageSlot::Sample, sample.clone()),
            Effect::ShowImage(ImageSlot::SampleReference, sample_ref),
        ];
        if matches!(self.popup, Some(Popup::Fullscreen(_))) {
            fx.push(Effect::ShowImage(ImageSlot::Fullscreen, sample));
        }
        if self.sample_grid {
            fx.extend(self.grid_effects());
        }
        fx.extend(self.compare_effects());
        fx
    }

    /// The compared runs' samples at the comparison's step (all slots cleared
    /// when no comparison is open).
    pub(super) fn compare_effects(&self) -> Vec<Effect> {
        let paths = match &self.popup {
            Some(Popup::Compare(c)) => c.sample_paths(),
            _ => Vec::new(),
        };
        (0..super::popups::runs::MAX_COMPARE)
            .map(|i| Effect::ShowImage(ImageSlot::Compare(i), paths.get(i).cloned().flatten()))
            .collect()
    }

    /// Reads the concept's runs on the worker (unless a listing is under way).
    pub(super) fn load_runs(&mut self, concept: String) -> Vec<Effect> {
        if std::mem::replace(&mut self.loading_runs, true) {
            return Vec::new();
        }
        vec![Effect::Task(Task::LoadRuns { concept })]
    }

    /// Sets the runs browser's status line (it stays open on errors).
    pub(super) fn runs_status(&mut self, text: String) {
        match self.popup.as_mut() {
            Some(Popup::Runs(b)) => b.status = text,
            Some(Popup::Compare(c)) => c.back.status = text,
            _ => {}
        }
    }

    /// Each grid cell's image (cells past the window cleared).
    pub(super) fn grid_effects(&self) -> Vec<Effect> {
        let window = grid_window(self.samples.len(), self.sel_sample);
        (0..super::state::GRID_MAX)
            .map(|i| {
                let path = (self.sample_grid && window.start + i < window.end)
                    .then(|| self.samples[window.start + i].path.clone());
                Effect::ShowImage(ImageSlot::Grid(i), path)
            })
            .collect()
    }

    /// Lists the folders again on the worker (unless a listing is under way).
    pub(super) fn rescan(&mut self) -> Vec<Effect> {
        if std::mem::replace(&mut self.scanning, true) {
            return Vec::new();
        }
        vec![Effect::Task(Task::Scan)]
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => self.on_key(k),
            Msg::Engine(ev) => self.on_engine(ev),
            Msg::PromptChanged(p) => {
                if self.watch_on {
                    self.debouncer.record(p, Instant::now());
                }
                Vec::new()
            }
            Msg::Tick(now) => self.on_tick(now),
            Msg::Redraw => Vec::new(),
            Msg::Done(done) => self.on_done(done),
        }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        for path in self.debouncer.due(now) {
            if self.watch_on {
                fx.push(Effect::Task(Task::LoadPrompt {
                    path,
                    seed: None,
                    watched: true,
                }));
            }
        }
        let first = self.last_refresh.is_none();
        if self
            .last_refresh
            .is_none_or(|t| now.duration_since(t) >= RESCAN)
        {
            self.last_refresh = Some(now);
            fx.extend(self.rescan());
            // The browser follows runs that change (a sweep's queue, a live run).
            if let Some(Popup::Runs(b)) = &self.popup {
                let concept = b.concept.clone();
                fx.extend(self.load_runs(concept));
            }
        }
        if first {
            fx.extend(self.image_effects());
        }
        fx
    }

    fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Some(popup) = self.popup.as_mut() else {
            return match self.keymap.action_for(&k) {
                Some(a) => self.run_action(a),
                None => Vec::new(),
            };
        };
        if let Popup::Compare(c) = popup {
            let (outcome, moved) = c.on_key(&self.keymap, &k);
            if matches!(outcome, Outcome::Close) {
                if let Some(Popup::Compare(c)) = self.popup.take() {
                    self.popup = Some(Popup::Runs(*c.back));
                }
                return self.compare_effects();
            }
            return if moved {
                self.compare_effects()
            } else {
                Vec::new()
            };
        }
        match popup.on_key(&self.keymap, &k) {
            Outcome::Stay => Vec::new(),
            Outcome::Close => {
                self.popup = None;
                Vec::new()
            }
            Outcome::Submit(request) => {
                self.popup = None;
                self.on_request(request)
            }
            Outcome::Ask(request) => self.on_request(request),
        }
    }

    /// Does what a popup asked for.
    fn on_request(&mut self, request: Request) -> Vec<Effect> {
        match request {
            Request::Run(action) => return self.run_action(action),
            Request::AddReference(path) => return vec![Effect::Task(Task::ImportReference(path))],
            Request::CreateConcept(new) => return vec![Effect::Task(Task::CreateConcept(new))],
            Request::Error(text) => self.error(text),
            Request::RunEval(_) if self.is_training() => {
                self.error("stop the training first: evaluation shares the engine");
            }
            Request::RunEval(concept) => {
                let clip = self
                    .ws
                    .config
                    .clip
                    .clone()
                    .unwrap_or_else(|| crate::eval::DEFAULT_CLIP.to_string());
                if let Some(Popup::Eval(p)) = self.popup.as_mut() {
                    p.status = format!("running with {clip}…");
                }
                return vec![Effect::Engine(EngineCommand::Eval {
                    concept,
                    clip,
                    settings: crate::eval::EvalSettings::default(),
                })];
            }
            Request::RefreshRuns(concept) => {
                self.runs_status("reading runs…".into());
                return self.load_runs(concept);
            }
            Request::SaveRunNote {
                concept,
                run,
                note,
                tags,
            } => {
                return vec![Effect::Task(Task::SaveRunNote {
                    concept,
                    run,
                    note,
                    tags,
                })]
            }
            Request::PromoteRun { .. } if self.is_training() => {
                self.runs_status("stop the training first: it writes the concept's pair".into());
            }
            Request::PromoteRun { concept, run, step } => {
                return vec![Effect::Task(Task::PromoteRun { concept, run, step })]
            }
            Request::ExportRun {
                concept,
                run,
                step,
                format,
            } => {
                return vec![Effect::Task(Task::ExportRun {
                    concept,
                    run,
                    step,
                    format,
                })]
            }
            Request::CompareRuns { concept, runs } => {
                if let Some(Popup::Runs(b)) = self.popup.take() {
                    let ids = runs.iter().map(|r| r.id.clone()).collect();
                    self.popup = Some(Popup::Compare(super::popups::ComparePopup::new(
                        concept.clone(),
                        runs,
                        b,
                    )));
                    return vec![Effect::Task(Task::LoadCompare { concept, runs: ids })];
                }
            }
            Request::CancelSlurmTask {
                concept,
                run,
                job,
                index,
            } => {
                return vec![Effect::Task(Task::CancelSlurmTask {
                    concept,
                    run,
                    job,
                    index,
                })]
            }
            Request::OpenSweepForm => {
                self.popup = Some(Popup::Sweep(super::popups::SweepForm::default()));
            }
            Request::StartSweep(typed) => {
                self.log(Level::INFO, format!("starting sweep {typed}…"));
                return vec![Effect::Task(Task::StartSweep { typed })];
            }
            Request::Quit { keep_training } => {
                self.quit_after_stop = Some(keep_training);
                self.set_train_status(TrainStatus::Stopping);
                return vec![Effect::Engine(EngineCommand::Stop)];
            }
        }
        Vec::new()
    }
}
