//! The help popup: every layer of the keymap, the main screen first, so it
//! always says what the keys do (including a user's own bindings).

use ratatui::crossterm::event::KeyEvent;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome};
use crate::tui::app::App;
use crate::tui::keymap::{HelpKey, Keymap};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Help {
    pub scroll: u16,
}

impl Help {
    /// Scroll keys scroll; any other key closes (help is a glance).
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        match keymap.help.action_for(key) {
            Some(HelpKey::ScrollDown) => self.scroll += 1,
            Some(HelpKey::ScrollUp) => self.scroll = self.scroll.saturating_sub(1),
            Some(HelpKey::Close) | None => return Outcome::Close,
        }
        Outcome::Stay
    }

    pub fn hints(keymap: &Keymap) -> String {
        let l = &keymap.help;
        format!(
            "{} closes, {}/{} scroll",
            l.key(HelpKey::Close),
            l.key(HelpKey::ScrollDown),
            l.key(HelpKey::ScrollUp)
        )
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let area = f.area();
        let r = centered(area, 72, area.height.saturating_sub(4));
        let mut lines: Vec<Line> = Vec::new();
        for (i, section) in app.keymap.help_sections().into_iter().enumerate() {
            // The main screen's keys come first, without a heading.
            if i > 0 {
                lines.push(Line::from(""));
                lines.push(Line::from(Span::styled(
                    format!("{:>14}  {}", "", section.title),
                    app.theme.muted(),
                )));
            }
            for (keys, desc) in section.rows {
                lines.push(Line::from(vec![
                    Span::styled(format!("{keys:>14}  "), app.theme.accent()),
                    Span::raw(desc),
                ]));
            }
        }
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines)
                .block(popup_block(
                    app,
                    &format!("Help · keys ({})", Self::hints(&app.keymap)),
                ))
                .scroll((self.scroll, 0)),
            r,
        );
    }
}
