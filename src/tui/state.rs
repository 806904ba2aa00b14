//! The workbench's data: what the panes show (rows of the workspace's folders,
//! the training run, samples, prompt files) and the engine's state. Plain data,
//! changed only by [`super::app::App::update`].

use std::path::PathBuf;

use super::metrics::History;
use crate::concept::{ConceptStatus, RunState};
use crate::train::MetricsTail;

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
    /// A followed run whose process is gone: how it ended (its files say).
    Ended(RunState),
}

impl TrainStatus {
    /// A run this dashboard follows rather than drives.
    pub fn is_followed(&self) -> bool {
        matches!(self, TrainStatus::Attached | TrainStatus::Ended(_))
    }
}

#[derive(Debug, Clone)]
pub struct TrainingView {
    pub concept: String,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub status: TrainStatus,
    pub history: History,
    pub last_checkpoint: Option<u64>,
    /// Reads an attached run's new metrics lines (away on the worker while it reads).
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
    /// `train.steps` of its concept.toml when listed (the engine gets a fresh read).
    pub steps: u64,
    /// From its latest run's files (`new` only without runs or a pair).
    pub status: ConceptStatus,
    pub last_run: Option<String>,
    pub references: Vec<PathBuf>,
}

/// Keeps a selection inside a list of `len` rows.
pub fn clamp_sel(sel: usize, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        sel.min(len - 1)
    }
}
