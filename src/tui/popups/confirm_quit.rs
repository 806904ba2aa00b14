//! Quitting while a training run is going: stop and save, keep it training
//! headless, or stay.

use ratatui::crossterm::event::KeyEvent;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome, Request};
use crate::tui::app::App;
use crate::tui::keymap::{ConfirmQuitKey, Keymap};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfirmQuit;

impl ConfirmQuit {
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.confirm_quit.action_for(key) {
            Some(ConfirmQuitKey::Stop) => Outcome::Submit(Request::Quit {
                keep_training: false,
            }),
            Some(ConfirmQuitKey::Keep) => Outcome::Submit(Request::Quit {
                keep_training: true,
            }),
            Some(ConfirmQuitKey::Cancel) => Outcome::Close,
            // A stray key must not decide what happens to the run.
            None => Outcome::Stay,
        }
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let r = centered(f.area(), 60, 7);
        f.render_widget(Clear, r);
        let layer = &app.keymap.confirm_quit;
        let mut lines = vec![Line::from("A training run is going."), Line::from("")];
        for a in ConfirmQuitKey::ALL {
            lines.push(Line::from(vec![
                Span::styled(format!(" {} ", layer.key(*a)), app.theme.selected()),
                Span::raw(format!(" {}", layer.desc(*a))),
            ]));
        }
        f.render_widget(Paragraph::new(lines).block(popup_block(app, "Quit?")), r);
    }
}
