//! The workbench's state and its update function. `update` turns messages
//! (keys, engine events, file changes, ticks) into state changes and
//! [`Effect`]s for the runtime to carry out; it never blocks and never touches
//! the terminal or candle, so flows are tested by feeding messages.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tracing::Level;

use super::keymap::{Action, Keymap};
use super::logbuf::LogBuffer;
use super::metrics::History;
use super::theme::Theme;
use crate::concept::{self, Concept, NewConcept, Preset};
use crate::engine::{EngineCommand, EngineEvent, GenerateJob};
use crate::generate::promptfile::load_prompt_file;
use crate::train::{MetricsTail, RunDir, StepMetrics};
use crate::train::{TrainEvent, TrainRequest};
use crate::workspace::watch::Debouncer;
use crate::workspace::Workspace;

/// The panes, in focus order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaneId {
    References,
    Concepts,
    Training,
    Samples,
    Prompts,
    Logs,
}

impl PaneId {
    pub const ORDER: [PaneId; 6] = [
        PaneId::References,
        PaneId::Concepts,
        PaneId::Training,
        PaneId::Samples,
        PaneId::Prompts,
        PaneId::Logs,
    ];
}

/// Where an image preview is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageSlot {
    Reference,
    Sample,
    SampleReference,
}

#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Engine(EngineEvent),
    PromptChanged(PathBuf),
    Tick(Instant),
    /// The terminal was resized: redraw.
    Redraw,
}

/// What the runtime must do for the app.
#[derive(Debug)]
pub enum Effect {
    Engine(EngineCommand),
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

#[derive(Debug, Clone, PartialEq)]
pub enum EngineState {
    Loading,
    Ready {
        model: String,
        device: String,
        family: String,
    },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainStatus {
    Starting,
    Running,
    Paused,
    Stopping,
    Finished,
    Failed(String),
    /// Following a run started elsewhere (a headless `dreamartist train`).
    Attached,
}

#[derive(Debug, Clone)]
pub struct TrainingView {
    pub concept: String,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub status: TrainStatus,
    pub history: History,
    pub last_checkpoint: Option<u64>,
    /// Reads an attached run's new metrics lines.
    pub follow: Option<MetricsTail>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SampleOrigin {
    Training { concept: String, step: u64 },
    Prompt { file: PathBuf },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SampleEntry {
    pub path: PathBuf,
    pub origin: SampleOrigin,
    pub prompt: String,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptStatus {
    Idle,
    Queued,
    Rendering {
        step: usize,
        steps: usize,
        index: usize,
        count: usize,
    },
    Done {
        images: usize,
    },
    Cancelled,
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub path: PathBuf,
    pub status: PromptStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConceptRow {
    pub name: String,
    pub pos: usize,
    pub neg: usize,
    pub preset: String,
    pub trained: bool,
    pub last_run: Option<String>,
    pub references: Vec<PathBuf>,
}

/// The fields of the new-concept form.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptForm {
    pub fields: [String; 5],
    pub focus: usize,
    pub reference: PathBuf,
}

impl ConceptForm {
    pub const LABELS: [&'static str; 5] = [
        "name",
        "preset",
        "positive vectors",
        "negative vectors",
        "init text",
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Help {
        scroll: u16,
    },
    Palette {
        query: String,
        selected: usize,
    },
    AddReference {
        path: String,
    },
    NewConcept(ConceptForm),
    ConfirmQuit,
    Error(String),
    Fullscreen,
    /// The selected concept's CLIP evaluations; Enter runs a new one.
    Eval {
        concept: String,
        lines: Vec<String>,
        status: String,
    },
}

pub struct App {
    pub ws: Workspace,
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
    pub samples: Vec<SampleEntry>,
    pub sel_sample: usize,
    pub prompts: Vec<PromptRow>,
    pub sel_prompt: usize,
    pub watch_on: bool,
    pub debouncer: Debouncer,
    pub quit_after_stop: Option<bool>,
    pub frame_time: Option<std::time::Duration>,
    next_job: u64,
    /// Generation job id → its prompt file, for progress events.
    jobs: std::collections::HashMap<u64, PathBuf>,
    last_refresh: Option<Instant>,
}

fn is_image(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    !name.starts_with('.')
        && !name.contains("_mask.")
        && [".png", ".jpg", ".jpeg", ".webp"]
            .iter()
            .any(|e| name.ends_with(e))
}

fn sorted_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .collect();
    v.sort();
    v
}

fn clamp_sel(sel: usize, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        sel.min(len - 1)
    }
}

impl App {
    pub fn new(
        ws: Workspace,
        keymap: Keymap,
        theme: Theme,
        logs: LogBuffer,
        image_protocol: &str,
    ) -> Self {
        let mut app = Self {
            ws,
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
            samples: Vec::new(),
            sel_sample: 0,
            prompts: Vec::new(),
            sel_prompt: 0,
            watch_on: true,
            debouncer: Debouncer::default(),
            quit_after_stop: None,
            frame_time: None,
            next_job: 1,
            jobs: std::collections::HashMap::new(),
            last_refresh: None,
        };
        app.refresh();
        app
    }

    /// Re-reads the workspace folders (cheap: a few directory listings).
    pub fn refresh(&mut self) {
        self.references = sorted_files(&self.ws.references_dir(), is_image);
        self.sel_reference = clamp_sel(self.sel_reference, self.references.len());
        let mut rows = Vec::new();
        for name in concept::list(&self.ws) {
            if let Ok(c) = Concept::load(&self.ws, &name) {
                let dir = self.ws.concept_dir(&name);
                rows.push(ConceptRow {
                    trained: dir.join(format!("{name}.safetensors")).is_file(),
                    last_run: RunDir::ids(&dir).pop(),
                    references: c.reference_paths(&self.ws),
                    name,
                    pos: c.pos_vectors,
                    neg: c.neg_vectors,
                    preset: c.preset,
                });
            }
        }
        self.concepts = rows;
        self.sel_concept = clamp_sel(self.sel_concept, self.concepts.len());
        let files = sorted_files(&self.ws.prompts_dir(), |p| {
            p.extension().is_some_and(|e| e == "toml")
        });
        let old = std::mem::take(&mut self.prompts);
        self.prompts = files
            .into_iter()
            .map(|path| {
                let status = old
                    .iter()
                    .find(|r| r.path == path)
                    .map(|r| r.status.clone())
                    .unwrap_or(PromptStatus::Idle);
                PromptRow { path, status }
            })
            .collect();
        self.sel_prompt = clamp_sel(self.sel_prompt, self.prompts.len());
    }

    pub fn selected_concept(&self) -> Option<&ConceptRow> {
        self.concepts.get(self.sel_concept)
    }

    pub fn selected_sample(&self) -> Option<&SampleEntry> {
        self.samples.get(self.sel_sample)
    }

    fn log(&self, level: Level, text: impl Into<String>) {
        self.logs.push(level, text);
    }

    fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.log(Level::ERROR, text.clone());
        self.popup = Some(Popup::Error(text));
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

    /// The image effects for the current selection.
    fn image_effects(&self) -> Vec<Effect> {
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
        vec![
            Effect::ShowImage(ImageSlot::Reference, reference),
            Effect::ShowImage(ImageSlot::Sample, sample.map(|s| s.path)),
            Effect::ShowImage(ImageSlot::SampleReference, sample_ref),
        ]
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
        }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        for path in self.debouncer.due(now) {
            if self.watch_on && path.is_file() {
                fx.extend(self.generate_file(&path, None));
            }
        }
        let first = self.last_refresh.is_none();
        let stale = self
            .last_refresh
            .is_none_or(|t| now.duration_since(t).as_secs_f64() >= 2.0);
        if stale {
            self.last_refresh = Some(now);
            let before = (self.references.len(), self.prompts.len());
            self.refresh();
            self.follow_attached(now);
            if first || before != (self.references.len(), self.prompts.len()) {
                fx.extend(self.image_effects());
            }
        }
        fx
    }

    /// Follows the metrics of a run this process did not start.
    fn follow_attached(&mut self, now: Instant) {
        if self.is_training() {
            return;
        }
        let Some(c) = self.selected_concept().cloned() else {
            return;
        };
        let Some(run_id) = c.last_run.clone() else {
            return;
        };
        let run = RunDir::at(&self.ws.concept_dir(&c.name), &run_id);
        match self.training.as_ref() {
            // A run this dashboard drove already has its history from events.
            Some(t) if t.run_dir == run.path() && t.status != TrainStatus::Attached => return,
            Some(t) if t.run_dir == run.path() => {}
            _ => {
                self.training = Some(TrainingView {
                    concept: c.name.clone(),
                    run_id,
                    run_dir: run.path().to_path_buf(),
                    status: TrainStatus::Attached,
                    history: History::new(0, run.total_steps()),
                    last_checkpoint: None,
                    follow: Some(run.tail()),
                });
            }
        }
        if let Some(t) = self.training.as_mut() {
            let lines: Vec<StepMetrics> =
                t.follow.as_mut().map(MetricsTail::poll).unwrap_or_default();
            for m in lines {
                t.history.push(m, now);
            }
        }
    }

    fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if let Some(p) = self.popup.clone() {
            return self.on_popup_key(p, k);
        }
        match self.keymap.action_for(&k) {
            Some(a) => self.run_action(a),
            None => Vec::new(),
        }
    }

    /// Palette entries matching a query, best first: the action's name
    /// starting with the query, then containing it, then its description.
    pub fn palette_matches(&self, query: &str) -> Vec<Action> {
        let q = query.to_lowercase();
        let hidden = |a: &Action| {
            matches!(
                a,
                Action::Up | Action::Down | Action::Left | Action::Right | Action::Palette
            )
        };
        let mut scored: Vec<(u8, usize, Action)> = Action::ALL
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, a)| !hidden(a))
            .filter_map(|(i, a)| {
                let name = a.id().replace('_', " ");
                let score = if q.is_empty() || name.starts_with(&q) {
                    0
                } else if name.contains(&q) {
                    1
                } else if self.keymap.desc(a).to_lowercase().contains(&q) {
                    2
                } else {
                    return None;
                };
                Some((score, i, a))
            })
            .collect();
        scored.sort();
        scored.into_iter().map(|(_, _, a)| a).collect()
    }

    fn on_popup_key(&mut self, popup: Popup, k: KeyEvent) -> Vec<Effect> {
        let esc = k.code == KeyCode::Esc;
        match popup {
            Popup::Help { scroll } => {
                self.popup = match k.code {
                    KeyCode::Down | KeyCode::Char('j') => Some(Popup::Help { scroll: scroll + 1 }),
                    KeyCode::Up | KeyCode::Char('k') => Some(Popup::Help {
                        scroll: scroll.saturating_sub(1),
                    }),
                    _ => None,
                };
                Vec::new()
            }
            Popup::Error(_) | Popup::Fullscreen => {
                if esc
                    || matches!(
                        k.code,
                        KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('f')
                    )
                {
                    self.popup = None;
                }
                Vec::new()
            }
            Popup::Palette {
                mut query,
                mut selected,
            } => {
                let matches = self.palette_matches(&query);
                match k.code {
                    KeyCode::Esc => self.popup = None,
                    KeyCode::Enter => {
                        self.popup = None;
                        if let Some(a) = matches.get(selected) {
                            return self.run_action(*a);
                        }
                    }
                    KeyCode::Up => {
                        selected = selected.saturating_sub(1);
                        self.popup = Some(Popup::Palette { query, selected });
                    }
                    KeyCode::Down => {
                        selected = clamp_sel(selected + 1, matches.len());
                        self.popup = Some(Popup::Palette { query, selected });
                    }
                    KeyCode::Backspace => {
                        query.pop();
                        self.popup = Some(Popup::Palette { query, selected: 0 });
                    }
                    KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                        query.push(c);
                        self.popup = Some(Popup::Palette { query, selected: 0 });
                    }
                    _ => {}
                }
                Vec::new()
            }
            Popup::AddReference { mut path } => {
                match k.code {
                    KeyCode::Esc => self.popup = None,
                    KeyCode::Enter => {
                        self.popup = None;
                        let p = PathBuf::from(shell_expand(path.trim()));
                        // Check the image before copying anything into the workspace.
                        let imported = crate::train::data::open_image(&p)
                            .map_err(anyhow::Error::from)
                            .and_then(|_| concept::create::import_reference(&self.ws, &p));
                        match imported {
                            Ok(rel) => {
                                self.log(Level::INFO, format!("added reference {rel}"));
                                self.refresh();
                                if let Some(i) =
                                    self.references.iter().position(|r| r.ends_with(&rel))
                                {
                                    self.sel_reference = i;
                                }
                                self.focus = PaneId::References;
                                return self.image_effects();
                            }
                            Err(e) => self.error(format!("{e:#}")),
                        }
                    }
                    KeyCode::Backspace => {
                        path.pop();
                        self.popup = Some(Popup::AddReference { path });
                    }
                    KeyCode::Char(c) => {
                        path.push(c);
                        self.popup = Some(Popup::AddReference { path });
                    }
                    _ => {}
                }
                Vec::new()
            }
            Popup::NewConcept(mut form) => {
                match k.code {
                    KeyCode::Esc => self.popup = None,
                    KeyCode::Tab | KeyCode::Down => {
                        form.focus = (form.focus + 1) % form.fields.len();
                        self.popup = Some(Popup::NewConcept(form));
                    }
                    KeyCode::BackTab | KeyCode::Up => {
                        form.focus = (form.focus + form.fields.len() - 1) % form.fields.len();
                        self.popup = Some(Popup::NewConcept(form));
                    }
                    KeyCode::Backspace => {
                        form.fields[form.focus].pop();
                        self.popup = Some(Popup::NewConcept(form));
                    }
                    KeyCode::Char(c) => {
                        form.fields[form.focus].push(c);
                        self.popup = Some(Popup::NewConcept(form));
                    }
                    KeyCode::Enter => {
                        self.popup = None;
                        return self.create_concept(form);
                    }
                    _ => {}
                }
                Vec::new()
            }
            Popup::Eval { concept, lines, .. } => {
                match k.code {
                    KeyCode::Enter if self.is_training() => {
                        self.error("stop the training first: evaluation shares the engine");
                    }
                    KeyCode::Enter => {
                        let clip = self
                            .ws
                            .config
                            .clip
                            .clone()
                            .unwrap_or_else(|| crate::eval::DEFAULT_CLIP.to_string());
                        self.popup = Some(Popup::Eval {
                            concept: concept.clone(),
                            lines,
                            status: format!("running with {clip}…"),
                        });
                        return vec![Effect::Engine(EngineCommand::Eval {
                            concept,
                            clip,
                            settings: crate::eval::EvalSettings::default(),
                        })];
                    }
                    _ => self.popup = None,
                }
                Vec::new()
            }
            Popup::ConfirmQuit => {
                match k.code {
                    KeyCode::Char('s') => {
                        self.popup = None;
                        self.quit_after_stop = Some(false);
                        self.set_train_status(TrainStatus::Stopping);
                        return vec![Effect::Engine(EngineCommand::Stop)];
                    }
                    KeyCode::Char('k') => {
                        self.popup = None;
                        self.quit_after_stop = Some(true);
                        self.set_train_status(TrainStatus::Stopping);
                        return vec![Effect::Engine(EngineCommand::Stop)];
                    }
                    KeyCode::Esc | KeyCode::Char('c') => self.popup = None,
                    _ => {}
                }
                Vec::new()
            }
        }
    }

    fn set_train_status(&mut self, s: TrainStatus) {
        if let Some(t) = self.training.as_mut() {
            t.status = s;
        }
    }

    fn create_concept(&mut self, form: ConceptForm) -> Vec<Effect> {
        let parse = |s: &str, what: &str| -> Result<Option<usize>, String> {
            if s.trim().is_empty() {
                Ok(None)
            } else {
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{what} must be a number, not `{s}`"))
            }
        };
        let (pos, neg) = match (
            parse(&form.fields[2], "positive vectors"),
            parse(&form.fields[3], "negative vectors"),
        ) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(e), _) | (_, Err(e)) => {
                self.error(e);
                return Vec::new();
            }
        };
        let new = NewConcept {
            name: form.fields[0].trim().to_string(),
            references: vec![form.reference.clone()],
            preset: form.fields[1].trim().to_string(),
            pos_vectors: pos,
            neg_vectors: neg,
            init_text: form.fields[4].clone(),
            class: None,
        };
        match concept::add(&self.ws, &new) {
            Ok(c) => {
                self.log(
                    Level::INFO,
                    format!("created concept {}", c.positive_word()),
                );
                self.refresh();
                if let Some(i) = self.concepts.iter().position(|r| r.name == c.name) {
                    self.sel_concept = i;
                }
                self.focus = PaneId::Concepts;
            }
            Err(e) => self.error(format!("{e:#}")),
        }
        Vec::new()
    }

    fn generate_file(&mut self, path: &Path, seed: Option<i64>) -> Vec<Effect> {
        let row = self.prompts.iter().position(|r| r.path == path);
        match GenerateJob::from_prompt_file(self.next_job, path, &self.ws) {
            Ok(mut job) => {
                if let Some(s) = seed {
                    job.request.seed = s;
                }
                if let Some(i) = row {
                    self.prompts[i].status = PromptStatus::Queued;
                }
                self.next_job += 1;
                self.jobs.insert(job.id, path.to_path_buf());
                vec![Effect::Engine(EngineCommand::Generate(Box::new(job)))]
            }
            Err(e) => {
                let text = e.to_string();
                self.log(Level::WARN, text.clone());
                if let Some(i) = row {
                    self.prompts[i].status = PromptStatus::Error(text);
                }
                Vec::new()
            }
        }
    }

    fn move_selection(&mut self, delta: isize) -> Vec<Effect> {
        let step = |sel: usize, len: usize| -> usize {
            if len == 0 {
                0
            } else {
                (sel as isize + delta).clamp(0, len as isize - 1) as usize
            }
        };
        match self.focus {
            PaneId::References => {
                self.sel_reference = step(self.sel_reference, self.references.len())
            }
            PaneId::Concepts => {
                self.sel_concept = step(self.sel_concept, self.concepts.len());
                if !self.is_training() {
                    self.training = None;
                    self.follow_attached(Instant::now());
                }
            }
            PaneId::Samples | PaneId::Training => {
                self.sel_sample = step(self.sel_sample, self.samples.len())
            }
            PaneId::Prompts => self.sel_prompt = step(self.sel_prompt, self.prompts.len()),
            PaneId::Logs => {}
        }
        self.image_effects()
    }

    fn train_request(&mut self, resume: bool) -> Vec<Effect> {
        if self.is_training() {
            self.error("a training run is already going; stop it first (s)");
            return Vec::new();
        }
        if !matches!(self.engine, EngineState::Ready { .. }) {
            self.error("the model is still loading (or failed to load); see the logs");
            return Vec::new();
        }
        let Some(row) = self.selected_concept().cloned() else {
            self.error("no concept selected; create one with n (from a reference)");
            return Vec::new();
        };
        let concept = match Concept::load(&self.ws, &row.name) {
            Ok(c) => c,
            Err(e) => {
                self.error(e.to_string());
                return Vec::new();
            }
        };
        if resume && row.last_run.is_none() {
            self.error(format!(
                "{} has no run to resume; start one with t",
                concept.positive_word()
            ));
            return Vec::new();
        }
        self.training = Some(TrainingView {
            concept: row.name.clone(),
            run_id: String::new(),
            run_dir: PathBuf::new(),
            status: TrainStatus::Starting,
            history: History::new(0, concept.train.steps),
            last_checkpoint: None,
            follow: None,
        });
        self.focus = PaneId::Training;
        let mut config = concept.train.clone();
        // The dashboard shows the concept appearing: preview about every tenth
        // of the run unless the concept sets its own cadence.
        if config.sample_every == 0 {
            config.sample_every = (config.steps / 10).max(1);
        }
        vec![Effect::Engine(EngineCommand::Train(Box::new(
            TrainRequest {
                concept,
                config,
                resume: resume.then(|| "latest".to_string()),
            },
        )))]
    }

    pub fn run_action(&mut self, a: Action) -> Vec<Effect> {
        match a {
            Action::Help => self.popup = Some(Popup::Help { scroll: 0 }),
            Action::Palette => {
                self.popup = Some(Popup::Palette {
                    query: String::new(),
                    selected: 0,
                })
            }
            Action::Quit => {
                if self.is_training() {
                    self.popup = Some(Popup::ConfirmQuit);
                } else {
                    return vec![Effect::Quit];
                }
            }
            Action::Suspend => return vec![Effect::Suspend],
            Action::NextPane | Action::PrevPane => {
                let i = PaneId::ORDER
                    .iter()
                    .position(|p| *p == self.focus)
                    .unwrap_or(0);
                let n = PaneId::ORDER.len();
                let j = if a == Action::NextPane {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.focus = PaneId::ORDER[j];
            }
            Action::Up => return self.move_selection(-1),
            Action::Down => return self.move_selection(1),
            Action::Left => {
                self.sel_sample = self.sel_sample.saturating_sub(1);
                return self.image_effects();
            }
            Action::Right => {
                self.sel_sample = clamp_sel(self.sel_sample + 1, self.samples.len());
                return self.image_effects();
            }
            Action::AddReference => {
                self.popup = Some(Popup::AddReference {
                    path: String::new(),
                })
            }
            Action::NewConcept => match self.references.get(self.sel_reference).cloned() {
                None => self.error("add a reference image first (a)"),
                Some(r) => {
                    let stem: String = r
                        .file_stem()
                        .map(|s| s.to_string_lossy().to_string())
                        .unwrap_or_default()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                                c.to_ascii_lowercase()
                            } else {
                                '-'
                            }
                        })
                        .collect();
                    let (p, n) = Preset::Photo.vectors();
                    self.popup = Some(Popup::NewConcept(ConceptForm {
                        fields: [
                            stem,
                            "photo".into(),
                            p.to_string(),
                            n.to_string(),
                            "*".into(),
                        ],
                        focus: 0,
                        reference: r,
                    }));
                }
            },
            Action::Train => return self.train_request(false),
            Action::Resume => return self.train_request(true),
            Action::Pause => match self.training.as_ref().map(|t| t.status.clone()) {
                Some(TrainStatus::Running) => return vec![Effect::Engine(EngineCommand::Pause)],
                Some(TrainStatus::Paused) => return vec![Effect::Engine(EngineCommand::Resume)],
                _ => self.log(Level::WARN, "nothing to pause: no training is running"),
            },
            Action::Stop => {
                if self.is_training() {
                    self.set_train_status(TrainStatus::Stopping);
                    return vec![Effect::Engine(EngineCommand::Stop)];
                }
                self.log(Level::WARN, "nothing to stop: no training is running");
            }
            Action::SaveNow => {
                if self.is_training() {
                    return vec![Effect::Engine(EngineCommand::SaveNow)];
                }
                self.log(Level::WARN, "nothing to save: no training is running");
            }
            Action::Generate | Action::Reroll => {
                match self.prompts.get(self.sel_prompt).map(|r| r.path.clone()) {
                    Some(p) => return self.generate_file(&p, (a == Action::Reroll).then_some(-1)),
                    None => self.error("no prompt file selected; create one with N"),
                }
            }
            Action::EditPrompt => match self.prompts.get(self.sel_prompt) {
                Some(r) => return vec![Effect::OpenEditor(r.path.clone())],
                None => self.error("no prompt file selected; create one with N"),
            },
            Action::NewPrompt => return self.new_prompt(),
            Action::ToggleWatch => {
                self.watch_on = !self.watch_on;
                self.log(
                    Level::INFO,
                    format!("watch {}", if self.watch_on { "on" } else { "off" }),
                );
            }
            Action::Export => self.export_selected(),
            Action::Fullscreen => {
                if self.selected_sample().is_some() {
                    self.popup = Some(Popup::Fullscreen);
                }
            }
            Action::History => self.show_full_history = !self.show_full_history,
            Action::Eval => match self.selected_concept().map(|c| c.name.clone()) {
                Some(concept) => {
                    let reports = crate::eval::concept_evals(&self.ws.concept_dir(&concept));
                    let lines = if reports.is_empty() {
                        vec!["No evaluation yet. Press Enter to run one (CLIP, 4 samples per prompt).".to_string()]
                    } else {
                        crate::eval::table_lines(&reports)
                    };
                    self.popup = Some(Popup::Eval {
                        concept,
                        lines,
                        status: String::new(),
                    });
                }
                None => self.error("no concept selected"),
            },
            Action::LogLevel => {
                self.log_level = match self.log_level {
                    Level::ERROR => Level::WARN,
                    Level::WARN => Level::INFO,
                    Level::INFO => Level::DEBUG,
                    _ => Level::ERROR,
                }
            }
        }
        Vec::new()
    }

    fn new_prompt(&mut self) -> Vec<Effect> {
        let name = self
            .selected_concept()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "prompt".into());
        let dir = self.ws.prompts_dir();
        let _ = std::fs::create_dir_all(&dir);
        let mut path = dir.join(format!("{name}.toml"));
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("{name}-{n}.toml"));
            n += 1;
        }
        let word = if self.selected_concept().is_some() {
            format!("<{name}>")
        } else {
            "a cat".into()
        };
        let text = format!(
            "# Saved changes re-render this file while watch is on.\nprompt = \"a photo of {word} on the beach\"\nnegative = \"\"\nseed = 1\ncount = 1\nsteps = 20\ncfg = 5.0\nscheduler = \"dpmpp_2m_karras\"\n"
        );
        if let Err(e) = crate::workspace::write_atomic(&path, text.as_bytes()) {
            self.error(format!("{}: {e}", path.display()));
            return Vec::new();
        }
        self.refresh();
        if let Some(i) = self.prompts.iter().position(|r| r.path == path) {
            self.sel_prompt = i;
        }
        self.focus = PaneId::Prompts;
        vec![Effect::OpenEditor(path)]
    }

    /// Exports the selected concept's pair as A1111 safetensors into `exports/a1111/`.
    fn export_selected(&mut self) {
        let Some(c) = self.selected_concept().cloned() else {
            self.error("no concept selected");
            return;
        };
        let format = crate::interop::export::ExportFormat::A1111;
        let out = self.ws.root.join("exports").join("a1111");
        match crate::interop::workspace::export(&self.ws, &c.name, format, &out) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                self.log(
                    Level::INFO,
                    format!("exported <{}>: {}", c.name, names.join(", ")),
                );
            }
            Err(e) => self.error(e.to_string()),
        }
    }

    fn on_engine(&mut self, ev: EngineEvent) -> Vec<Effect> {
        match ev {
            EngineEvent::Ready {
                model,
                device,
                family,
            } => {
                self.log(
                    Level::INFO,
                    format!("model {model} ({family}) loaded on {device}"),
                );
                self.engine = EngineState::Ready {
                    model,
                    device,
                    family,
                };
            }
            EngineEvent::LoadFailed(e) => {
                self.engine = EngineState::Failed(e.clone());
                self.error(format!("the model could not be loaded: {e}"));
            }
            EngineEvent::Train(t) => return self.on_train(t),
            EngineEvent::TrainFailed(e) => {
                self.set_train_status(TrainStatus::Failed(e.clone()));
                self.error(format!("training failed: {e}"));
                self.quit_after_stop = None;
            }
            EngineEvent::Paused => {
                self.set_train_status(TrainStatus::Paused);
                self.log(Level::INFO, "training paused");
            }
            EngineEvent::Resumed => {
                self.set_train_status(TrainStatus::Running);
                self.log(Level::INFO, "training resumed");
            }
            EngineEvent::GenerateStarted { source, .. } => {
                self.set_prompt_status(&source, PromptStatus::Queued)
            }
            EngineEvent::GenerateProgress {
                id,
                index,
                count,
                step,
                steps,
            } => {
                let source = self.jobs.get(&id).cloned();
                self.set_prompt_status(
                    &source,
                    PromptStatus::Rendering {
                        step,
                        steps,
                        index,
                        count,
                    },
                );
            }
            EngineEvent::Sample {
                source, path, seed, ..
            } => {
                let prompt = source
                    .as_ref()
                    .and_then(|s| load_prompt_file(s, &self.ws.root).ok())
                    .map(|r| r.prompt)
                    .unwrap_or_default();
                self.log(
                    Level::INFO,
                    format!("rendered {} (seed {seed})", path.display()),
                );
                self.samples.push(SampleEntry {
                    path,
                    origin: SampleOrigin::Prompt {
                        file: source.unwrap_or_default(),
                    },
                    prompt,
                    seed,
                });
                self.sel_sample = self.samples.len() - 1;
                return self.image_effects();
            }
            EngineEvent::GenerateDone {
                source, cancelled, ..
            } => {
                let n = source
                    .as_ref()
                    .map(|s| {
                        self.samples
                            .iter()
                            .filter(|x| x.origin == SampleOrigin::Prompt { file: s.clone() })
                            .count()
                    })
                    .unwrap_or(0);
                self.set_prompt_status(
                    &source,
                    if cancelled {
                        PromptStatus::Cancelled
                    } else {
                        PromptStatus::Done { images: n }
                    },
                );
            }
            EngineEvent::GenerateFailed { source, error, .. } => {
                self.log(Level::ERROR, error.clone());
                self.set_prompt_status(&source, PromptStatus::Error(error));
            }
            EngineEvent::EvalProgress { concept, text } => {
                if let Some(Popup::Eval {
                    concept: c, status, ..
                }) = self.popup.as_mut()
                {
                    if *c == concept {
                        *status = text;
                    }
                }
            }
            EngineEvent::EvalDone { concept, table } => {
                self.log(Level::INFO, format!("evaluated <{concept}>"));
                if let Some(Popup::Eval {
                    concept: c,
                    lines,
                    status,
                }) = self.popup.as_mut()
                {
                    if *c == concept {
                        *lines = table;
                        *status = "done".into();
                    }
                }
            }
            EngineEvent::EvalFailed { concept, error } => {
                self.error(format!("evaluation of <{concept}> failed: {error}"));
            }
            EngineEvent::Stopped => {}
        }
        Vec::new()
    }

    fn set_prompt_status(&mut self, source: &Option<PathBuf>, status: PromptStatus) {
        if let Some(s) = source {
            if let Some(r) = self.prompts.iter_mut().find(|r| &r.path == s) {
                r.status = status;
            }
        }
    }

    fn on_train(&mut self, ev: TrainEvent) -> Vec<Effect> {
        let now = Instant::now();
        match ev {
            TrainEvent::Started {
                run_id,
                run_dir,
                start_step,
                total_steps,
            } => {
                self.log(
                    Level::INFO,
                    format!("run {run_id}: steps {start_step}..{total_steps}"),
                );
                if let Some(t) = self.training.as_mut() {
                    t.run_id = run_id;
                    t.run_dir = run_dir;
                    t.status = TrainStatus::Running;
                    t.history = History::new(start_step, total_steps);
                }
            }
            TrainEvent::Step(m) => {
                if let Some(t) = self.training.as_mut() {
                    if t.status == TrainStatus::Starting {
                        t.status = TrainStatus::Running;
                    }
                    t.history.push(m, now);
                }
            }
            TrainEvent::Checkpoint { step, path } => {
                self.log(
                    Level::INFO,
                    format!("checkpoint at step {step}: {}", path.display()),
                );
                if let Some(t) = self.training.as_mut() {
                    t.last_checkpoint = Some(step);
                }
            }
            TrainEvent::Sample {
                step,
                path,
                prompt,
                seed,
            } => {
                let concept = self
                    .training
                    .as_ref()
                    .map(|t| t.concept.clone())
                    .unwrap_or_default();
                self.samples.push(SampleEntry {
                    path,
                    origin: SampleOrigin::Training { concept, step },
                    prompt,
                    seed,
                });
                self.sel_sample = self.samples.len() - 1;
                return self.image_effects();
            }
            TrainEvent::Finished(o) => {
                self.log(
                    Level::INFO,
                    format!(
                        "run {} {} at step {}: {}",
                        o.run_id,
                        if o.interrupted { "stopped" } else { "finished" },
                        o.steps,
                        o.positive.display()
                    ),
                );
                let total = self
                    .training
                    .as_ref()
                    .map_or(o.steps, |t| t.history.total_steps);
                let concept = self
                    .training
                    .as_ref()
                    .map(|t| t.concept.clone())
                    .unwrap_or_default();
                self.set_train_status(TrainStatus::Finished);
                self.refresh();
                match self.quit_after_stop.take() {
                    Some(true) if o.interrupted => {
                        return vec![Effect::QuitKeepTraining {
                            concept,
                            run_id: o.run_id,
                            total_steps: total,
                        }]
                    }
                    Some(_) => return vec![Effect::Quit],
                    None => {}
                }
            }
        }
        Vec::new()
    }
}

/// `~/x` → `$HOME/x` for typed paths.
fn shell_expand(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}
