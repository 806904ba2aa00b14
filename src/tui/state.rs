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

/// Where an image preview is shown. Each slot is drawn in one place at one
/// size: a slot drawn at two sizes in a frame would be re-encoded for each,
/// every frame, and never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageSlot {
    Reference,
    Sample,
    SampleReference,
    /// One cell of the samples grid (0 = the grid's first, oldest shown).
    Grid(usize),
    /// The full-screen sample (its own slot: the samples pane keeps its size).
    Fullscreen,
    /// One compared run's sample (0..4, in marking order).
    Compare(usize),
}

/// The loss chart's y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChartScale {
    #[default]
    Linear,
    Log,
}

impl ChartScale {
    pub fn next(self) -> Self {
        match self {
            ChartScale::Linear => ChartScale::Log,
            ChartScale::Log => ChartScale::Linear,
        }
    }
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
    /// `train.method` of its concept.toml (`dreamartist`, `dreamartist++`, `ti`).
    pub method: String,
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

/// The most samples the grid shows at once.
pub const GRID_MAX: usize = 6;

/// The samples the grid shows: pages of [`GRID_MAX`] counted from the newest
/// (so the first page is "the latest"), the page holding the selection.
pub fn grid_window(len: usize, sel: usize) -> std::ops::Range<usize> {
    if len == 0 {
        return 0..0;
    }
    let sel = sel.min(len - 1);
    let page = (len - 1 - sel) / GRID_MAX;
    let end = len - page * GRID_MAX;
    end.saturating_sub(GRID_MAX)..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_pages_from_the_newest_sample() {
        assert_eq!(grid_window(0, 0), 0..0);
        assert_eq!(grid_window(3, 2), 0..3);
        assert_eq!(grid_window(10, 9), 4..10);
        assert_eq!(grid_window(10, 4), 4..10);
        assert_eq!(grid_window(10, 3), 0..4);
        assert_eq!(grid_window(10, 0), 0..4);
        assert_eq!(grid_window(10, 99), 4..10);
    }
}
