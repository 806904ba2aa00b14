//! The selected concept's CLIP evaluations (read on the worker), and running
//! a new one on the engine.

use ratatui::crossterm::event::KeyEvent;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome, Request};
use crate::tui::app::App;
use crate::tui::keymap::{EvalKey, Keymap};

#[derive(Debug, Clone, PartialEq)]
pub struct EvalPopup {
    pub concept: String,
    /// The evaluations table; `None` while it is being read, empty when
    /// the concept has none yet.
    pub table: Option<Vec<String>>,
    /// Progress of a running evaluation; empty shows the key hints.
    pub status: String,
}

impl EvalPopup {
    pub fn new(concept: String) -> Self {
        Self {
            concept,
            table: None,
            status: "reading evaluations…".into(),
        }
    }

    /// Run asks the app (which knows whether the engine is free); any other key closes.
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.eval.action_for(key) {
            Some(EvalKey::Run) => Outcome::Ask(Request::RunEval(self.concept.clone())),
            Some(EvalKey::Close) | None => Outcome::Close,
        }
    }

    pub fn hints(keymap: &Keymap) -> String {
        format!(
            "{} runs an evaluation · any other key closes",
            keymap.eval.key(EvalKey::Run)
        )
    }

    /// What the popup lists: the table, or how to make the first evaluation.
    fn lines(&self, keymap: &Keymap) -> Vec<String> {
        match &self.table {
            None => Vec::new(),
            Some(t) if t.is_empty() => vec![format!(
                "No evaluation yet. Press {} to run one (CLIP, 4 samples per prompt).",
                keymap.eval.key(EvalKey::Run)
            )],
            Some(t) => t.clone(),
        }
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let area = f.area();
        let lines = self.lines(&app.keymap);
        let r = centered(
            area,
            area.width.saturating_sub(6),
            (lines.len() as u16 + 5).min(area.height),
        );
        f.render_widget(Clear, r);
        let mut text: Vec<Line> = lines.into_iter().map(Line::from).collect();
        text.push(Line::from(""));
        text.push(Line::from(Span::styled(
            if self.status.is_empty() {
                Self::hints(&app.keymap)
            } else {
                self.status.clone()
            },
            app.theme.muted(),
        )));
        f.render_widget(
            Paragraph::new(text).block(popup_block(app, &format!("Evaluation <{}>", self.concept))),
            r,
        );
    }
}
