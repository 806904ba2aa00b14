//! The new-concept form: name, preset, vector counts and init text for a
//! concept made from the selected reference.

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome, Request};
use crate::concept::{NewConcept, Preset};
use crate::tui::app::App;
use crate::tui::keymap::{FormKey, Keymap};

/// The fields of the new-concept form.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptForm {
    pub fields: [String; 6],
    pub focus: usize,
    pub reference: PathBuf,
}

impl ConceptForm {
    pub const LABELS: [&'static str; 6] = [
        "name",
        "preset",
        "positive vectors",
        "negative vectors",
        "init text",
        "method",
    ];

    /// The form for a reference: its file name as the concept's name (made a
    /// valid one), the photo preset and its vector counts.
    pub fn for_reference(reference: PathBuf) -> Self {
        let name: String = reference
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if crate::concept::name::is_name_char(c) {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let (p, n) = Preset::Photo.vectors();
        Self {
            fields: [
                name,
                "photo".into(),
                p.to_string(),
                n.to_string(),
                "*".into(),
                "dreamartist".into(),
            ],
            focus: 0,
            reference,
        }
    }

    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        let n = self.fields.len();
        match keymap.form.action_for(key) {
            Some(FormKey::Submit) => {
                return Outcome::Submit(match self.to_new_concept() {
                    Ok(new) => Request::CreateConcept(new),
                    Err(e) => Request::Error(e),
                })
            }
            Some(FormKey::Cancel) => return Outcome::Close,
            Some(FormKey::NextField) => self.focus = (self.focus + 1) % n,
            Some(FormKey::PrevField) => self.focus = (self.focus + n - 1) % n,
            Some(FormKey::Delete) => {
                self.fields[self.focus].pop();
            }
            None => {
                if let KeyCode::Char(c) = key.code {
                    self.fields[self.focus].push(c);
                }
            }
        }
        Outcome::Stay
    }

    /// The concept the form describes; empty counts take the preset's. The
    /// rest (name, preset, counts' range) is checked when it is created.
    pub fn to_new_concept(&self) -> Result<NewConcept, String> {
        let count = |s: &str, what: &str| -> Result<Option<usize>, String> {
            if s.trim().is_empty() {
                Ok(None)
            } else {
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{what} must be a number, not `{s}`"))
            }
        };
        Ok(NewConcept {
            name: self.fields[0].trim().to_string(),
            references: vec![self.reference.clone()],
            preset: self.fields[1].trim().to_string(),
            pos_vectors: count(&self.fields[2], "positive vectors")?,
            neg_vectors: count(&self.fields[3], "negative vectors")?,
            init_text: self.fields[4].clone(),
            class: None,
            method: Some(self.fields[5].trim().to_string()).filter(|m| !m.is_empty()),
        })
    }

    pub fn hints(keymap: &Keymap) -> String {
        let l = &keymap.form;
        format!(
            "{} next field · {} create · {} cancel",
            l.key(FormKey::NextField),
            l.key(FormKey::Submit),
            l.key(FormKey::Cancel)
        )
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let r = centered(f.area(), 64, 11);
        f.render_widget(Clear, r);
        let mut lines: Vec<Line> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let label = Self::LABELS[i];
                let cursor = if i == self.focus { "_" } else { "" };
                let style = if i == self.focus {
                    app.theme.selected()
                } else {
                    app.theme.text()
                };
                Line::from(vec![
                    Span::styled(format!("{label:>17}: "), app.theme.muted()),
                    Span::styled(format!("{v}{cursor}"), style),
                ])
            })
            .collect();
        lines.push(Line::from(Span::styled(
            format!(
                "reference {} · presets photo, anime, style",
                self.reference
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ),
            app.theme.muted(),
        )));
        lines.push(Line::from(Span::styled(
            "methods dreamartist, dreamartist++ (words + LoRA adapters), ti",
            app.theme.muted(),
        )));
        lines.push(Line::from(Span::styled(
            Self::hints(&app.keymap),
            app.theme.muted(),
        )));
        f.render_widget(
            Paragraph::new(lines).block(popup_block(app, "New concept")),
            r,
        );
    }
}
