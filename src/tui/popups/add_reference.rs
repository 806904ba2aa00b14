//! The add-a-reference form: one path, typed (`~/` expands to `$HOME`).

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome, Request};
use crate::tui::app::App;
use crate::tui::keymap::{FormKey, Keymap};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddReference {
    pub path: String,
}

impl AddReference {
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.form.action_for(key) {
            Some(FormKey::Submit) => {
                return Outcome::Submit(Request::AddReference(PathBuf::from(shell_expand(
                    self.path.trim(),
                ))))
            }
            Some(FormKey::Cancel) => return Outcome::Close,
            Some(FormKey::Delete) => {
                self.path.pop();
            }
            // One field: nowhere to move.
            Some(FormKey::NextField | FormKey::PrevField) => {}
            None => {
                if let KeyCode::Char(c) = key.code {
                    self.path.push(c);
                }
            }
        }
        Outcome::Stay
    }

    pub fn hints(keymap: &Keymap) -> String {
        format!(
            "{} adds (copied into references/), {} cancels",
            keymap.form.key(FormKey::Submit),
            keymap.form.key(FormKey::Cancel)
        )
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let r = centered(f.area(), 72, 5);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(vec![
                Line::from(vec![
                    Span::styled("path: ", app.theme.accent()),
                    Span::raw(format!("{}_", self.path)),
                ]),
                Line::from(Span::styled(Self::hints(&app.keymap), app.theme.muted())),
            ])
            .block(popup_block(app, "Add a reference image")),
            r,
        );
    }
}

/// `~/x` → `$HOME/x` for typed paths.
fn shell_expand(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}
