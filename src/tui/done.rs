//! Results of the worker's tasks coming back to the app, and following a run
//! this process did not start (its metrics are read on the worker).

use std::path::PathBuf;

use tracing::Level;

use super::app::{App, Effect, PaneId, Popup, PromptStatus, TrainStatus, TrainingView};
use super::metrics::History;
use super::tasks::{Done, Task, TaskError};
use crate::concept::Concept;
use crate::engine::{EngineCommand, GenerateJob};
use crate::train::{RunDir, TrainRequest};

impl App {
    pub(super) fn on_done(&mut self, done: Done) -> Vec<Effect> {
        match done {
            Done::Scanned(scan) => {
                self.scanning = false;
                let before = (self.references.len(), self.prompts.len());
                self.apply_scan(scan);
                let mut fx = self.follow_attached();
                if before != (self.references.len(), self.prompts.len()) {
                    fx.extend(self.image_effects());
                }
                return fx;
            }
            Done::ReferenceImported(Ok((rel, scan))) => {
                self.log(Level::INFO, format!("added reference {rel}"));
                self.apply_scan(scan);
                if let Some(i) = self.references.iter().position(|r| r.ends_with(&rel)) {
                    self.sel_reference = i;
                }
                self.focus = PaneId::References;
                return self.image_effects();
            }
            Done::ConceptCreated(Ok((name, scan))) => {
                self.log(Level::INFO, format!("created concept <{name}>"));
                self.apply_scan(scan);
                if let Some(i) = self.concepts.iter().position(|r| r.name == name) {
                    self.sel_concept = i;
                }
                self.focus = PaneId::Concepts;
            }
            Done::PromptCreated(Ok((path, scan))) => {
                self.apply_scan(scan);
                if let Some(i) = self.prompts.iter().position(|r| r.path == path) {
                    self.sel_prompt = i;
                }
                self.focus = PaneId::Prompts;
                return vec![Effect::OpenEditor(path)];
            }
            Done::ReferenceImported(Err(e))
            | Done::ConceptCreated(Err(e))
            | Done::PromptCreated(Err(e)) => self.error(e.to_string()),
            Done::Exported { concept, result } => match result {
                Ok(files) => {
                    let names: Vec<String> =
                        files.iter().map(|f| f.display().to_string()).collect();
                    self.log(
                        Level::INFO,
                        format!("exported <{concept}>: {}", names.join(", ")),
                    );
                }
                Err(e) => self.error(e.to_string()),
            },
            Done::EvalsLoaded { concept, lines } => {
                if let Some(Popup::Eval(p)) = self.popup.as_mut() {
                    // An evaluation started meanwhile keeps its status line.
                    if p.concept == concept && p.table.is_none() {
                        p.table = Some(lines);
                        p.status.clear();
                    }
                }
            }
            Done::ConceptLoaded { resume, result } => return self.start_training(resume, result),
            Done::PromptLoaded { path, result } => return self.send_job(path, result),
            Done::RunPolled {
                concept,
                run,
                total_steps,
                tail,
                lines,
                at,
                state,
            } => {
                self.polling = false;
                if self.is_training() || !self.follows(&concept, &run) {
                    return Vec::new();
                }
                let view = match self.training.as_mut() {
                    // A run this dashboard drove has its history from events.
                    Some(t) if t.run_dir == run.path() && !t.status.is_followed() => {
                        return Vec::new()
                    }
                    // The tail read on from where it was: add its lines.
                    Some(t) if t.run_dir == run.path() && total_steps.is_none() => t,
                    // Read from the start: a new view.
                    _ => self.training.insert(TrainingView {
                        concept,
                        run_id: run.id().to_string(),
                        run_dir: run.path().to_path_buf(),
                        status: TrainStatus::Attached,
                        history: History::new(0, total_steps.unwrap_or(0)),
                        last_checkpoint: None,
                        follow: None,
                    }),
                };
                // Attached only while a process trains it; otherwise what
                // its files say became of it (stopped, crashed, …).
                view.status = if state.is_live() {
                    TrainStatus::Attached
                } else {
                    TrainStatus::Ended(state)
                };
                view.follow = Some(tail);
                for m in lines {
                    view.history.push(m, at);
                }
            }
            Done::RunsLoaded { concept, result } => {
                self.loading_runs = false;
                let browser = match self.popup.as_mut() {
                    Some(Popup::Runs(b)) if b.concept == concept => b,
                    _ => return Vec::new(),
                };
                match result {
                    Ok((runs, sweeps, slurm)) => {
                        if browser.status == "reading runs…" {
                            browser.status.clear();
                        }
                        browser.set_runs(runs, sweeps, slurm);
                    }
                    Err(e) => {
                        browser.status = e.to_string();
                        self.log(Level::ERROR, e.to_string());
                    }
                }
            }
            Done::RunsAction {
                concept,
                result,
                rescan,
            } => {
                let text = match result {
                    Ok(text) => {
                        self.log(Level::INFO, text.clone());
                        text
                    }
                    Err(e) => {
                        self.log(Level::ERROR, e.to_string());
                        format!("error: {e}")
                    }
                };
                self.runs_status(text);
                let mut fx = if rescan { self.rescan() } else { Vec::new() };
                if matches!(&self.popup, Some(Popup::Runs(b)) if b.concept == concept) {
                    fx.extend(self.load_runs(concept));
                }
                return fx;
            }
            Done::CompareLoaded { concept, curves } => {
                if let Some(Popup::Compare(c)) = self.popup.as_mut() {
                    if c.concept == concept && c.curves.is_none() {
                        c.set_curves(curves);
                        return self.compare_effects();
                    }
                }
            }
            Done::SweepStarted(Ok((concept, text))) => {
                // The sweep's queue shows in its concept's runs browser.
                self.log(Level::INFO, text.clone());
                let mut b = super::popups::RunsBrowser::new(concept.clone());
                b.status = text;
                self.popup = Some(Popup::Runs(b));
                return self.load_runs(concept);
            }
            Done::SweepStarted(Err(e)) => self.error(e.to_string()),
            Done::Nothing => {}
        }
        Vec::new()
    }

    /// Sends the training request for a concept read fresh from its file.
    fn start_training(
        &mut self,
        resume: bool,
        loaded: Result<Box<Concept>, TaskError>,
    ) -> Vec<Effect> {
        match self.training.as_ref().map(|t| &t.status) {
            Some(TrainStatus::Starting) => {}
            // Stopped (or quit) before the engine had it: nothing will finish.
            Some(TrainStatus::Stopping) => {
                self.training = None;
                self.log(Level::INFO, "training stopped before it started");
                return match self.quit_after_stop.take() {
                    Some(_) => vec![Effect::Quit],
                    None => Vec::new(),
                };
            }
            _ => return Vec::new(),
        }
        let concept = match loaded {
            Ok(c) => *c,
            Err(e) => {
                self.training = None;
                self.error(e.to_string());
                return Vec::new();
            }
        };
        if let Some(t) = self.training.as_mut() {
            t.history = History::new(0, concept.train.steps);
        }
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

    /// Numbers a prompt file's job and sends it to the engine.
    fn send_job(
        &mut self,
        path: PathBuf,
        loaded: Result<Box<GenerateJob>, TaskError>,
    ) -> Vec<Effect> {
        let row = self.prompts.iter().position(|r| r.path == path);
        match loaded {
            Ok(mut job) => {
                if let Some(i) = row {
                    self.prompts[i].status = PromptStatus::Queued;
                }
                job.id = self.next_job;
                self.next_job += 1;
                self.jobs.insert(job.id, (path, job.request.prompt.clone()));
                vec![Effect::Engine(EngineCommand::Generate(job))]
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

    /// Whether `run` of `concept` is the selected concept's latest run.
    fn follows(&self, concept: &str, run: &RunDir) -> bool {
        self.selected_concept()
            .is_some_and(|c| c.name == concept && c.last_run.as_deref() == Some(run.id()))
    }

    /// Follows the metrics of the selected concept's latest run when this
    /// dashboard is not training: a run started elsewhere (a headless
    /// `dreamartist train`) shows as attached.
    pub(super) fn follow_attached(&mut self) -> Vec<Effect> {
        if self.is_training() || self.polling {
            return Vec::new();
        }
        let Some(c) = self.selected_concept() else {
            return Vec::new();
        };
        let Some(run_id) = c.last_run.as_deref() else {
            return Vec::new();
        };
        let concept = c.name.clone();
        let run = RunDir::at(&self.ws.concept_dir(&concept), run_id);
        let tail = match self.training.as_mut() {
            // A run this dashboard drove already has its history from events.
            Some(t) if t.run_dir == run.path() && !t.status.is_followed() => return Vec::new(),
            Some(t) if t.run_dir == run.path() => t.follow.take(),
            _ => None,
        };
        self.polling = true;
        vec![Effect::Task(Task::PollRun { concept, run, tail })]
    }
}
