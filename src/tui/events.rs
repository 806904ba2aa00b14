//! Engine events coming back to the app: the model loading, training steps,
//! checkpoints and previews, generation progress and samples, evaluations.

use std::path::PathBuf;
use std::time::Instant;

use tracing::Level;

use super::app::{
    App, Effect, EngineState, Popup, PromptStatus, SampleEntry, SampleOrigin, TrainStatus,
};
use super::metrics::History;
use crate::engine::EngineEvent;
use crate::train::TrainEvent;

impl App {
    pub(super) fn on_engine(&mut self, ev: EngineEvent) -> Vec<Effect> {
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
                let source = self.jobs.get(&id).map(|(file, _)| file.clone());
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
                id,
                source,
                path,
                seed,
            } => {
                // The prompt the job was made from (read with it, on the worker).
                let prompt = self
                    .jobs
                    .get(&id)
                    .map(|(_, prompt)| prompt.clone())
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
                if let Some(Popup::Eval(p)) = self.popup.as_mut() {
                    if p.concept == concept {
                        p.status = text;
                    }
                }
            }
            EngineEvent::EvalDone { concept, table } => {
                self.log(Level::INFO, format!("evaluated <{concept}>"));
                if let Some(Popup::Eval(p)) = self.popup.as_mut() {
                    if p.concept == concept {
                        p.table = Some(table);
                        p.status = "done".into();
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
                match self.quit_after_stop.take() {
                    Some(true) if o.interrupted => {
                        return vec![Effect::QuitKeepTraining {
                            concept,
                            run_id: o.run_id,
                            total_steps: total,
                        }]
                    }
                    Some(_) => return vec![Effect::Quit],
                    // The run's pair and folder are new: list them (even if a
                    // listing is under way, it may have read too early).
                    None => {
                        self.scanning = true;
                        return vec![Effect::Task(super::tasks::Task::Scan)];
                    }
                }
            }
        }
        Vec::new()
    }
}
