//! One planned run of a sweep in this process: start it, resume it or leave
//! it (see [`super::state::Next`]), through the trainer's library API, then
//! evaluate it when the sweep asks for `[eval]`.

use candle_core::Device;

use super::spec::{PlannedRun, SweepPlan};
use super::state::{Next, SweepDir};
use super::SweepError;
use crate::concept::{RunDir, RunState};
use crate::eval::report::{eval_dir, EVAL_FILE};
use crate::eval::{evaluate, ClipModel, EvalControl, EvalReport, EvalRequest, Target, Which};
use crate::sd::StableDiffusion;
use crate::train::{train, TrainControl, TrainEvent, TrainRequest};
use crate::workspace::Workspace;

/// What a sweep run reports as it goes.
#[derive(Debug)]
pub enum SweepEvent<'a> {
    /// Left as it is: finished, diverged or failed before, or trained by a
    /// live process elsewhere.
    Skipped {
        run: &'a PlannedRun,
        run_id: &'a str,
        state: RunState,
    },
    /// Training starts (`resume`: the run folder it continues).
    Starting {
        run: &'a PlannedRun,
        resume: Option<&'a str>,
    },
    /// An event of the trainer.
    Train {
        run: &'a PlannedRun,
        event: &'a TrainEvent,
    },
    /// The run's training ended (`error`: why, when it did not finish).
    Ended {
        run: &'a PlannedRun,
        run_id: Option<&'a str>,
        state: RunState,
        error: Option<&'a str>,
    },
    /// Its CLIP evaluation starts.
    Evaluating {
        run: &'a PlannedRun,
        run_id: &'a str,
    },
    Evaluated {
        run: &'a PlannedRun,
        report: &'a EvalReport,
    },
}

/// How a planned run ended in this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub run_id: Option<String>,
    pub state: RunState,
    /// Stopped by the caller (Ctrl-C): the sweep should stop too.
    pub interrupted: bool,
}

/// The sweep's CLIP model, loaded the first time a run needs it.
pub struct LazyClip {
    spec: Option<String>,
    device: Device,
    model: Option<ClipModel>,
}

impl LazyClip {
    /// `spec` `None`: the sweep has no `[eval]`.
    pub fn new(spec: Option<String>, device: Device) -> Self {
        Self {
            spec,
            device,
            model: None,
        }
    }

    /// Loads it now (to fail before training, not after the first run).
    pub fn load(&mut self) -> Result<Option<&ClipModel>, SweepError> {
        let Some(spec) = &self.spec else {
            return Ok(None);
        };
        if self.model.is_none() {
            self.model = Some(ClipModel::load(spec, &self.device)?);
        }
        Ok(self.model.as_ref())
    }
}

/// Runs planned run `index` (see [`Next`]) and, with `[eval]`, evaluates it
/// once it has finished. `on_event` sees every event; returning
/// [`TrainControl::Stop`] from a training event interrupts the run (a
/// checkpoint is saved; the next call resumes it).
pub fn run_planned(
    sd: &StableDiffusion,
    ws: &Workspace,
    plan: &SweepPlan,
    dir: &SweepDir,
    clip: &mut LazyClip,
    index: usize,
    mut on_event: impl FnMut(&SweepEvent) -> TrainControl,
) -> Result<RunOutcome, SweepError> {
    let Some(run) = plan.runs.get(index) else {
        return Err(SweepError::Invalid {
            path: plan.file.clone(),
            message: format!(
                "there is no run {index}: the sweep has runs 0 to {}",
                plan.runs.len().saturating_sub(1)
            ),
        });
    };
    let (resume, skip) = match dir.next(index) {
        Next::Start => (None, None),
        Next::Resume(id) => (Some(id), None),
        Next::Done(id, state) => (None, Some((id, state))),
        // Paused counts as live too; either way, not ours to touch.
        Next::Busy(id) => (None, Some((id, RunState::Running))),
    };
    if let Some((id, state)) = skip {
        on_event(&SweepEvent::Skipped {
            run,
            run_id: &id,
            state,
        });
        if state == RunState::Finished {
            evaluate_run(sd, ws, plan, clip, run, &id, &mut on_event)?;
        }
        return Ok(RunOutcome {
            run_id: Some(id),
            state,
            interrupted: false,
        });
    }
    on_event(&SweepEvent::Starting {
        run,
        resume: resume.as_deref(),
    });
    let req = TrainRequest {
        concept: plan.concept.clone(),
        config: run.config.clone(),
        resume: resume.clone(),
    };
    let mut run_id: Option<String> = None;
    let mut record_error: Option<SweepError> = None;
    let result = train(sd, ws, &req, |ev| {
        if let TrainEvent::Started { run_id: id, .. } = ev {
            run_id = Some(id.clone());
            if let Err(e) = dir.set_record(run, id) {
                // Without its record a rerun would start it over: stop now.
                record_error = Some(e);
                return TrainControl::Stop;
            }
        }
        on_event(&SweepEvent::Train { run, event: ev })
    });
    if let Some(e) = record_error {
        return Err(e);
    }
    let (state, interrupted, error) = match &result {
        Ok(o) if o.interrupted => (RunState::Stopped, true, None),
        Ok(_) => (RunState::Finished, false, None),
        Err(e) => {
            // The run folder says what it was (diverged, failed); a run
            // refused before it started has none.
            let state = run_id
                .as_deref()
                .map(|id| RunDir::at(dir.concept_dir(), id).state())
                .unwrap_or(RunState::Failed);
            (state, false, Some(e.to_string()))
        }
    };
    on_event(&SweepEvent::Ended {
        run,
        run_id: run_id.as_deref(),
        state,
        error: error.as_deref(),
    });
    if let (RunState::Finished, Some(id)) = (state, &run_id) {
        evaluate_run(sd, ws, plan, clip, run, id, &mut on_event)?;
    }
    Ok(RunOutcome {
        run_id,
        state,
        interrupted,
    })
}

/// Whether planned run `index` has finished but still lacks the evaluation
/// the sweep's `[eval]` asks for.
pub fn eval_pending(plan: &SweepPlan, dir: &SweepDir, index: usize) -> bool {
    if plan.eval.is_none() {
        return false;
    }
    match dir.next(index) {
        Next::Done(id, RunState::Finished) => {
            let target = Target {
                run: id.clone(),
                which: Which::Final,
            };
            let folder = RunDir::at(dir.concept_dir(), &id);
            !eval_dir(folder.path(), &target).join(EVAL_FILE).is_file()
        }
        _ => false,
    }
}

/// Evaluates a finished run's pair with the sweep's `[eval]`, unless it has
/// been evaluated already.
fn evaluate_run(
    sd: &StableDiffusion,
    ws: &Workspace,
    plan: &SweepPlan,
    clip: &mut LazyClip,
    run: &PlannedRun,
    run_id: &str,
    on_event: &mut impl FnMut(&SweepEvent) -> TrainControl,
) -> Result<(), SweepError> {
    let Some(spec) = &plan.eval else {
        return Ok(());
    };
    let target = Target {
        run: run_id.to_string(),
        which: Which::Final,
    };
    let folder = RunDir::at(&ws.concept_dir(&plan.concept.name), run_id);
    if eval_dir(folder.path(), &target).join(EVAL_FILE).is_file() {
        return Ok(());
    }
    let base = plan.file.parent().unwrap_or(std::path::Path::new("."));
    let settings = spec.settings(base).map_err(|message| SweepError::Invalid {
        path: plan.file.clone(),
        message,
    })?;
    let Some(model) = clip.load()? else {
        return Ok(());
    };
    on_event(&SweepEvent::Evaluating { run, run_id });
    let req = EvalRequest {
        concept: plan.concept.name.clone(),
        targets: vec![target],
        settings,
    };
    let reports = evaluate(sd, model, ws, &req, |_| EvalControl::Continue)?;
    for report in &reports {
        on_event(&SweepEvent::Evaluated { run, report });
    }
    Ok(())
}
