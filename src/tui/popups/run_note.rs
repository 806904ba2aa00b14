//! The small form the runs browser opens on a run: its note and its tags
//! (space- or comma-separated). The browser sends what it holds to the app,
//! which writes it through the run folder's own note/tag functions.

use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::runs::typed;
use crate::runs::RunSummary;
use crate::tui::app::App;
use crate::tui::keymap::{FormKey, Keymap};

#[derive(Debug, Clone, PartialEq)]
pub struct NoteForm {
    pub run: String,
    pub note: String,
    pub tags: String,
    /// 0: the note, 1: the tags.
    pub field: usize,
}

/// What a key did to the form: `None` stay, `Some(None)` cancelled,
/// `Some(Some((note, tags)))` submitted.
pub type FormResult = Option<Option<(String, Vec<String>)>>;

impl NoteForm {
    pub fn new(run: &RunSummary) -> Self {
        Self {
            run: run.id.clone(),
            // One line to type in; a multi-line note keeps its lines joined.
            note: run.note.lines().collect::<Vec<_>>().join(" "),
            tags: run.tags.join(" "),
            field: 0,
        }
    }

    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> FormResult {
        let field = if self.field == 0 {
            &mut self.note
        } else {
            &mut self.tags
        };
        match keymap.form.action_for(key) {
            Some(FormKey::Submit) => {
                return Some(Some((self.note.trim().to_string(), self.tag_list())))
            }
            Some(FormKey::Cancel) => return Some(None),
            Some(FormKey::NextField | FormKey::PrevField) => self.field = 1 - self.field,
            Some(FormKey::Delete) => {
                field.pop();
            }
            None => {
                if let Some(c) = typed(key) {
                    field.push(c);
                }
            }
        }
        None
    }

    /// The tags as typed: split on spaces and commas, empty ones dropped
    /// (the library checks each one).
    pub fn tag_list(&self) -> Vec<String> {
        self.tags
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn draw(&self, app: &App, area: Rect, f: &mut Frame) {
        f.render_widget(Clear, area);
        let cursor = |i: usize| if self.field == i { "_" } else { "" };
        let k = &app.keymap.form;
        f.render_widget(
            Paragraph::new(vec![
                Line::from(vec![
                    Span::styled("note: ", app.theme.accent()),
                    Span::raw(format!("{}{}", self.note, cursor(0))),
                ]),
                Line::from(vec![
                    Span::styled("tags: ", app.theme.accent()),
                    Span::raw(format!("{}{}", self.tags, cursor(1))),
                    Span::styled(
                        format!(
                            "   ({} next field, {} saves, {} cancels)",
                            k.key(FormKey::NextField),
                            k.key(FormKey::Submit),
                            k.key(FormKey::Cancel)
                        ),
                        app.theme.muted(),
                    ),
                ]),
            ])
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .border_style(app.theme.border(true))
                    .title(format!(" Note and tags of run {} ", self.run)),
            ),
            area,
        );
    }
}
