//! The popups, one component per file: each owns its state, turns keys into an
//! [`Outcome`] through its own layer of the keymap, draws itself and generates
//! its key hints from the keymap. A popup never touches the app: what it wants
//! done comes back as a [`Request`] that [`App`] carries out.

pub mod add_reference;
pub mod compare;
pub mod confirm_quit;
pub mod error;
pub mod eval;
pub mod fullscreen;
pub mod help;
pub mod new_concept;
pub mod palette;
pub mod run_note;
pub mod runs;
pub mod sweep;

use std::path::PathBuf;

use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

pub use add_reference::AddReference;
pub use compare::ComparePopup;
pub use confirm_quit::ConfirmQuit;
pub use error::ErrorPopup;
pub use eval::EvalPopup;
pub use fullscreen::Fullscreen;
pub use help::Help;
pub use new_concept::ConceptForm;
pub use palette::Palette;
pub use run_note::NoteForm;
pub use runs::RunsBrowser;
pub use sweep::SweepForm;

use super::app::App;
use super::images::Images;
use super::keymap::{Action, Keymap};
use crate::concept::NewConcept;
use crate::runs::RunSummary;

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Help(Help),
    Palette(Palette),
    AddReference(AddReference),
    NewConcept(ConceptForm),
    ConfirmQuit(ConfirmQuit),
    Error(ErrorPopup),
    Fullscreen(Fullscreen),
    /// The selected concept's CLIP evaluations; Enter runs a new one.
    Eval(EvalPopup),
    /// The selected concept's runs (full screen).
    Runs(RunsBrowser),
    /// Marked runs side by side (full screen); closing returns to the browser.
    Compare(ComparePopup),
    /// A sweep file to run in the background.
    Sweep(SweepForm),
}

/// What a key did to a popup.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Handled or ignored; the popup stays.
    Stay,
    Close,
    /// The popup closes and asks the app for something.
    Submit(Request),
    /// The popup stays and asks the app for something.
    Ask(Request),
}

/// What a popup asks the app to do.
#[derive(Debug, Clone)]
pub enum Request {
    /// A main-screen action (chosen in the palette).
    Run(Action),
    AddReference(PathBuf),
    CreateConcept(NewConcept),
    /// Run a CLIP evaluation of the concept.
    RunEval(String),
    /// Stop the training and quit; `keep_training`: continue it headless.
    Quit {
        keep_training: bool,
    },
    /// Show an error instead (a form's field that does not parse).
    Error(String),
    /// Read the concept's runs again.
    RefreshRuns(String),
    SaveRunNote {
        concept: String,
        run: String,
        note: String,
        tags: Vec<String>,
    },
    /// Make a run's pair (or checkpoint `step`) the concept's active pair.
    PromoteRun {
        concept: String,
        run: String,
        step: Option<u64>,
    },
    ExportRun {
        concept: String,
        run: String,
        step: Option<u64>,
        format: String,
    },
    /// Compare these runs (the browser stays underneath).
    CompareRuns {
        concept: String,
        runs: Vec<RunSummary>,
    },
    OpenSweepForm,
    /// Cancel a run's Slurm task (asked first in the browser).
    CancelSlurmTask {
        concept: String,
        run: String,
        job: String,
        index: usize,
    },
    /// Start the sweep file typed (a path, or a name under `sweeps/`).
    StartSweep(String),
}

impl Popup {
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match self {
            Popup::Help(p) => p.on_key(keymap, key),
            Popup::Palette(p) => p.on_key(keymap, key),
            Popup::AddReference(p) => p.on_key(keymap, key),
            Popup::NewConcept(p) => p.on_key(keymap, key),
            Popup::ConfirmQuit(p) => p.on_key(keymap, key),
            Popup::Error(p) => p.on_key(keymap, key),
            Popup::Fullscreen(p) => p.on_key(keymap, key),
            Popup::Eval(p) => p.on_key(keymap, key),
            Popup::Runs(p) => p.on_key(keymap, key),
            Popup::Compare(p) => p.on_key(keymap, key).0,
            Popup::Sweep(p) => p.on_key(keymap, key),
        }
    }

    pub fn draw(&self, app: &App, images: &mut Images, f: &mut Frame) {
        match self {
            Popup::Help(p) => p.draw(app, f),
            Popup::Palette(p) => p.draw(app, f),
            Popup::AddReference(p) => p.draw(app, f),
            Popup::NewConcept(p) => p.draw(app, f),
            Popup::ConfirmQuit(p) => p.draw(app, f),
            Popup::Error(p) => p.draw(app, f),
            Popup::Fullscreen(p) => p.draw(app, images, f),
            Popup::Eval(p) => p.draw(app, f),
            Popup::Runs(p) => p.draw(app, f),
            Popup::Compare(p) => p.draw(app, images, f),
            Popup::Sweep(p) => p.draw(app, f),
        }
    }
}

/// A `w`×`h` rectangle in the middle of `area` (clipped to it).
pub(crate) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [c] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    c
}

/// The frame every popup draws in.
pub(crate) fn popup_block<'a>(app: &App, title: &str) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(true))
        .title(Span::styled(format!(" {title} "), app.theme.accent()))
        .style(app.theme.text())
}
