//! An error message, until dismissed.

use ratatui::crossterm::event::KeyEvent;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::{centered, popup_block, Outcome};
use crate::tui::app::App;
use crate::tui::keymap::{ErrorKey, Keymap};

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorPopup {
    pub message: String,
}

impl ErrorPopup {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Only the dismiss keys close it, so a key meant for the screen behind
    /// does not act before the error was read.
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.error.action_for(key) {
            Some(ErrorKey::Dismiss) => Outcome::Close,
            None => Outcome::Stay,
        }
    }

    /// The first two dismiss keys ("Enter or Esc to dismiss").
    pub fn hints(keymap: &Keymap) -> String {
        let keys = keymap.error.labels(ErrorKey::Dismiss);
        format!(
            "{} to dismiss",
            keys.into_iter().take(2).collect::<Vec<_>>().join(" or ")
        )
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let r = centered(f.area(), 70, 9);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(vec![
                Line::from(Span::styled(self.message.clone(), app.theme.error())),
                Line::from(""),
                Line::from(Span::styled(Self::hints(&app.keymap), app.theme.muted())),
            ])
            .wrap(Wrap { trim: true })
            .block(popup_block(app, "Error")),
            r,
        );
    }
}
