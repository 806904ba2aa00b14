//! The help popup: every layer of the keymap, the main screen first, so it
//! always says what the keys do (including a user's own bindings).

use ratatui::crossterm::event::KeyEvent;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome};
use crate::tui::app::App;
use crate::tui::keymap::{HelpKey, Keymap};
use crate::tui::text::hanging;

/// The keys column: right-aligned keys and two spaces.
const KEYS_WIDTH: usize = 16;

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
        let sections = app.keymap.help_sections();
        let title = format!("Help · keys ({})", Self::hints(&app.keymap));
        // As wide as the longest row (keys column, description, borders) or the
        // title, as far as the screen allows; longer descriptions wrap.
        let widest = sections
            .iter()
            .flat_map(|s| s.rows.iter())
            .map(|(_, desc)| KEYS_WIDTH + desc.chars().count())
            .chain([title.chars().count() + 2])
            .max()
            .unwrap_or(0);
        let w = (widest as u16 + 2)
            .min(area.width.saturating_sub(4))
            .max(20);
        let r = centered(area, w, area.height.saturating_sub(4));
        let inner_w = usize::from(w.saturating_sub(2));
        let mut lines: Vec<Line> = Vec::new();
        for (i, section) in sections.into_iter().enumerate() {
            // The main screen's keys come first, without a heading.
            if i > 0 {
                lines.push(Line::from(""));
                lines.push(Line::from(Span::styled(
                    format!("{:>w$}{}", "", section.title, w = KEYS_WIDTH),
                    app.theme.muted(),
                )));
            }
            for (keys, desc) in section.rows {
                lines.extend(hanging(
                    &format!("{keys:>w$}  ", w = KEYS_WIDTH - 2),
                    app.theme.accent(),
                    KEYS_WIDTH,
                    &desc,
                    app.theme.text(),
                    inner_w,
                ));
            }
        }
        let visible = r.height.saturating_sub(2);
        let max_scroll = (lines.len() as u16).saturating_sub(visible);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(lines)
                .block(popup_block(app, &title))
                .scroll((self.scroll.min(max_scroll), 0)),
            r,
        );
    }
}
