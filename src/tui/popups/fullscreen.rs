//! The selected sample over the whole screen, with its metadata.

use ratatui::crossterm::event::KeyEvent;
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{popup_block, Outcome};
use crate::tui::app::App;
use crate::tui::images::Images;
use crate::tui::keymap::{FullscreenKey, Keymap};
use crate::tui::panes;
use crate::tui::state::ImageSlot;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fullscreen;

impl Fullscreen {
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.fullscreen.action_for(key) {
            Some(FullscreenKey::Close) => Outcome::Close,
            None => Outcome::Stay,
        }
    }

    pub fn draw(&self, app: &App, images: &mut Images, f: &mut Frame) {
        let r = f.area();
        f.render_widget(Clear, r);
        let title = format!(
            "Sample ({} closes)",
            app.keymap.fullscreen.key(FullscreenKey::Close)
        );
        let block = popup_block(app, &title);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let Some(s) = app.selected_sample() else {
            images.render(
                ImageSlot::Fullscreen,
                inner,
                f.buffer_mut(),
                app.theme.muted(),
            );
            return;
        };
        let (pic, meta, lines) = panes::samples::with_metadata(app, s, inner);
        images.render(
            ImageSlot::Fullscreen,
            pic,
            f.buffer_mut(),
            app.theme.muted(),
        );
        f.render_widget(Paragraph::new(lines), meta);
    }
}
