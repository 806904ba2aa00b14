//! One file per pane; each draws itself from the [`App`] state.

pub mod concepts;
pub mod logs;
pub mod prompts;
pub mod references;
pub mod samples;
pub mod status;
pub mod training;

use ratatui::text::Span;
use ratatui::widgets::{Block, BorderType, Borders};

use super::app::{App, PaneId};

/// A pane's frame: focused panes get the accent border.
pub fn frame<'a>(app: &App, pane: PaneId, title: impl Into<String>) -> Block<'a> {
    let focused = app.focus == pane && app.popup.is_none();
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Plain
        })
        .border_style(app.theme.border(focused))
        .title(Span::styled(
            format!(" {} ", title.into()),
            if focused {
                app.theme.accent()
            } else {
                app.theme.muted()
            },
        ))
}
