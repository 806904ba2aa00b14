//! What the main screen's actions do. Each returns at once: file work goes
//! to the worker as a [`Task`] and finishes in `done.rs`.

use tracing::Level;

use super::app::{clamp_sel, App, Effect, EngineState, ImageSlot, PaneId, Popup, TrainStatus};
use super::keymap::Action;
use super::popups::{
    AddReference, ConceptForm, ConfirmQuit, EvalPopup, Fullscreen, Help, Palette, RunsBrowser,
    SweepForm,
};
use super::tasks::Task;
use crate::engine::EngineCommand;

impl App {
    pub fn run_action(&mut self, a: Action) -> Vec<Effect> {
        match a {
            Action::Help => self.popup = Some(Popup::Help(Help::default())),
            Action::Palette => self.popup = Some(Popup::Palette(Palette::default())),
            Action::Quit => {
                if self.is_training() {
                    self.popup = Some(Popup::ConfirmQuit(ConfirmQuit));
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
            Action::AddReference => self.popup = Some(Popup::AddReference(AddReference::default())),
            Action::NewConcept => match self.references.get(self.sel_reference).cloned() {
                None => self.error(format!(
                    "add a reference image first ({})",
                    self.key(Action::AddReference)
                )),
                Some(r) => self.popup = Some(Popup::NewConcept(ConceptForm::for_reference(r))),
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
                    Some(path) => {
                        return vec![Effect::Task(Task::LoadPrompt {
                            path,
                            seed: (a == Action::Reroll).then_some(-1),
                            watched: false,
                        })]
                    }
                    None => self.error(format!(
                        "no prompt file selected; create one with {}",
                        self.key(Action::NewPrompt)
                    )),
                }
            }
            Action::EditPrompt => match self.prompts.get(self.sel_prompt) {
                Some(r) => return vec![Effect::OpenEditor(r.path.clone())],
                None => self.error(format!(
                    "no prompt file selected; create one with {}",
                    self.key(Action::NewPrompt)
                )),
            },
            Action::NewPrompt => {
                let (stem, word) = match self.selected_concept() {
                    Some(c) => (c.name.clone(), format!("<{}>", c.name)),
                    None => ("prompt".into(), "a cat".into()),
                };
                return vec![Effect::Task(Task::NewPrompt { stem, word })];
            }
            Action::ToggleWatch => {
                self.watch_on = !self.watch_on;
                self.log(
                    Level::INFO,
                    format!("watch {}", if self.watch_on { "on" } else { "off" }),
                );
            }
            Action::Export => match self.selected_concept() {
                Some(c) => {
                    let concept = c.name.clone();
                    return vec![Effect::Task(Task::Export { concept })];
                }
                None => self.error("no concept selected"),
            },
            Action::Fullscreen => {
                if let Some(s) = self.selected_sample() {
                    let path = s.path.clone();
                    self.popup = Some(Popup::Fullscreen(Fullscreen));
                    return vec![Effect::ShowImage(ImageSlot::Fullscreen, Some(path))];
                }
            }
            Action::Grid => {
                self.sample_grid = !self.sample_grid;
                return self.grid_effects();
            }
            Action::History => self.show_full_history = !self.show_full_history,
            Action::ChartScale => self.chart_scale = self.chart_scale.next(),
            Action::Eval => match self.selected_concept().map(|c| c.name.clone()) {
                Some(concept) => {
                    self.popup = Some(Popup::Eval(EvalPopup::new(concept.clone())));
                    return vec![Effect::Task(Task::LoadEvals { concept })];
                }
                None => self.error("no concept selected"),
            },
            Action::Runs => match self.selected_concept().map(|c| c.name.clone()) {
                Some(concept) => {
                    self.popup = Some(Popup::Runs(RunsBrowser::new(concept.clone())));
                    return self.load_runs(concept);
                }
                None => self.error("no concept selected"),
            },
            Action::Sweep => self.popup = Some(Popup::Sweep(SweepForm::default())),
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

    fn move_selection(&mut self, delta: isize) -> Vec<Effect> {
        let step = |sel: usize, len: usize| -> usize {
            if len == 0 {
                0
            } else {
                (sel as isize + delta).clamp(0, len as isize - 1) as usize
            }
        };
        let mut fx = Vec::new();
        match self.focus {
            PaneId::References => {
                self.sel_reference = step(self.sel_reference, self.references.len())
            }
            PaneId::Concepts => {
                self.sel_concept = step(self.sel_concept, self.concepts.len());
                if !self.is_training() {
                    self.training = None;
                    fx.extend(self.follow_attached());
                }
            }
            PaneId::Samples | PaneId::Training => {
                self.sel_sample = step(self.sel_sample, self.samples.len())
            }
            PaneId::Prompts => self.sel_prompt = step(self.sel_prompt, self.prompts.len()),
            PaneId::Logs => {}
        }
        fx.extend(self.image_effects());
        fx
    }

    /// Checks what can be checked without files, shows the run as starting,
    /// and reads the concept fresh on the worker (`done.rs` sends it to the engine).
    fn train_request(&mut self, resume: bool) -> Vec<Effect> {
        if self.is_training() {
            self.error(format!(
                "a training run is already going; stop it first ({})",
                self.key(Action::Stop)
            ));
            return Vec::new();
        }
        if !matches!(self.engine, EngineState::Ready { .. }) {
            self.error("the model is still loading (or failed to load); see the logs");
            return Vec::new();
        }
        let Some(row) = self.selected_concept().cloned() else {
            self.error(format!(
                "no concept selected; create one with {} (from a reference)",
                self.key(Action::NewConcept)
            ));
            return Vec::new();
        };
        if resume && row.last_run.is_none() {
            self.error(format!(
                "<{}> has no run to resume; start one with {}",
                row.name,
                self.key(Action::Train)
            ));
            return Vec::new();
        }
        self.training = Some(super::state::TrainingView {
            concept: row.name.clone(),
            run_id: String::new(),
            run_dir: std::path::PathBuf::new(),
            status: TrainStatus::Starting,
            history: super::metrics::History::new(0, row.steps),
            last_checkpoint: None,
            follow: None,
        });
        self.focus = PaneId::Training;
        vec![Effect::Task(Task::LoadConcept {
            name: row.name,
            resume,
        })]
    }
}
