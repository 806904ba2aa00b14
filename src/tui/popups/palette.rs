//! The command palette: every main-screen action by name or description,
//! generated from the keymap.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, List, ListItem, ListState, Paragraph};
use ratatui::Frame;

use super::{centered, popup_block, Outcome, Request};
use crate::tui::app::App;
use crate::tui::keymap::{Action, Keymap, PaletteKey};
use crate::tui::state::clamp_sel;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Palette {
    pub query: String,
    pub selected: usize,
}

/// Actions matching a query, best first: the action's name starting with the
/// query, then containing it, then its description. Moving and the palette
/// itself are left out: they mean nothing from here.
pub fn matches(keymap: &Keymap, query: &str) -> Vec<Action> {
    let q = query.to_lowercase();
    let hidden = |a: &Action| {
        matches!(
            a,
            Action::Up | Action::Down | Action::Left | Action::Right | Action::Palette
        )
    };
    let mut scored: Vec<(u8, usize, Action)> = Action::ALL
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, a)| !hidden(a))
        .filter_map(|(i, a)| {
            let name = a.id().replace('_', " ");
            let score = if q.is_empty() || name.starts_with(&q) {
                0
            } else if name.contains(&q) {
                1
            } else if keymap.desc(a).to_lowercase().contains(&q) {
                2
            } else {
                return None;
            };
            Some((score, i, a))
        })
        .collect();
    scored.sort();
    scored.into_iter().map(|(_, _, a)| a).collect()
}

impl Palette {
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> Outcome {
        let found = matches(keymap, &self.query);
        match keymap.palette.action_for(key) {
            Some(PaletteKey::Close) => return Outcome::Close,
            Some(PaletteKey::Run) => {
                return match found.get(self.selected) {
                    Some(a) => Outcome::Submit(Request::Run(*a)),
                    None => Outcome::Close,
                }
            }
            Some(PaletteKey::Up) => self.selected = self.selected.saturating_sub(1),
            Some(PaletteKey::Down) => self.selected = clamp_sel(self.selected + 1, found.len()),
            Some(PaletteKey::Delete) => {
                self.query.pop();
                self.selected = 0;
            }
            None => match key.code {
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.query.push(c);
                    self.selected = 0;
                }
                _ => {}
            },
        }
        Outcome::Stay
    }

    pub fn draw(&self, app: &App, f: &mut Frame) {
        let r = centered(f.area(), 64, 18);
        f.render_widget(Clear, r);
        let block = popup_block(app, "Command palette");
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [q, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(": ", app.theme.accent()),
                Span::raw(self.query.clone()),
            ])),
            q,
        );
        let items: Vec<ListItem> = matches(&app.keymap, &self.query)
            .iter()
            .map(|a| {
                ListItem::new(Line::from(vec![
                    Span::raw(format!("{:<22}", app.keymap.desc(*a))),
                    Span::styled(format!(" {}", app.keymap.keys_label(*a)), app.theme.muted()),
                ]))
            })
            .collect();
        let mut state = ListState::default().with_selected(Some(self.selected));
        f.render_stateful_widget(
            List::new(items)
                .highlight_style(app.theme.selected())
                .highlight_symbol("> "),
            list,
            &mut state,
        );
    }
}
