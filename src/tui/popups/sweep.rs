//! The sweep form: a sweep file to run (`sweeps/grid.toml`, `grid`, or any
//! path). The app checks it and starts it in a background process on the
//! worker.

use ratatui::crossterm::event::KeyEvent;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::runs::typed;
use super::{centered, popup_block, Outcome, Request};
use crate::tui::app::App;
use crate::tui::keymap::{FormKey, Keymap};

#[derive(Debug, Clone, PartialEq)]
pub struct SweepForm {
    pub path: String,
}

impl Default for SweepForm {
    fn default() -> Self {
        Self {
            path: "sweeps/".into(),
        }
    }
}

impl SweepForm {
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.form.action_for(key) {
            Some(FormKey::Submit) => {
                return Outcome::Submit(Request::StartSweep(self.path.clone()))
            }
            Some(FormKey::Cancel) => return Outcome::Close,
            Some(FormKey::Delete) => {
                self.path.pop();
            }
            Some(FormKey::NextField | FormKey::PrevField) => {}
            None => {
                if let Some(c) = typed(key) {
                    self.path.push(c);
                }
            }
        }
        Outcome::Stay
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let r = centered(f.area(), 72, 5);
        f.render_widget(Clear, r);
        let k = &app.keymap.form;
        f.render_widget(
            Paragraph::new(vec![
                Line::from(vec![
                    Span::styled("sweep file: ", app.theme.accent()),
                    Span::raw(format!("{}_", self.path)),
                ]),
                Line::from(Span::styled(
                    format!(
                        "{} runs it in the background (dreamartist sweep), {} cancels",
                        k.key(FormKey::Submit),
                        k.key(FormKey::Cancel)
                    ),
                    app.theme.muted(),
                )),
            ])
            .block(popup_block(app, "Run a sweep")),
            r,
        );
    }
}
