//! Concepts: pseudo-word pairs with vector counts, last run and status.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph};
use ratatui::Frame;

use super::frame;
use crate::concept::ConceptStatus;
use crate::tui::app::{App, PaneId, TrainStatus};
use crate::tui::keymap::Action;

pub fn render(app: &App, area: Rect, f: &mut Frame) {
    let block = frame(
        app,
        PaneId::Concepts,
        format!("Concepts ({})", app.concepts.len()),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.concepts.is_empty() {
        f.render_widget(
            Paragraph::new(format!(
                "No concepts yet.\nSelect a reference and press {}.",
                app.key(Action::NewConcept)
            ))
            .style(app.theme.muted())
            .wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    }
    let items: Vec<ListItem> = app
        .concepts
        .iter()
        .map(|c| {
            let live = app
                .training
                .as_ref()
                .filter(|t| t.concept == c.name && app.is_training());
            let (status, style) = match live.map(|t| &t.status) {
                Some(TrainStatus::Paused) => ("paused".to_string(), app.theme.warning()),
                Some(_) => ("training".to_string(), app.theme.accent()),
                None => (
                    c.status.label().to_string(),
                    match c.status {
                        ConceptStatus::Trained => app.theme.ok(),
                        ConceptStatus::New => app.theme.muted(),
                        _ => app.theme.warning(),
                    },
                ),
            };
            let run = c
                .last_run
                .as_deref()
                .map(|r| format!(" run {r}"))
                .unwrap_or_default();
            // The default method goes unsaid; the others are named.
            let method = match c.method.parse::<crate::concept::Method>() {
                Ok(crate::concept::Method::DreamArtistPlusPlus) => " DA++",
                Ok(crate::concept::Method::TextualInversion) => " TI",
                _ => "",
            };
            ListItem::new(Line::from(vec![
                Span::raw(format!("<{}> ", c.name)),
                Span::styled(format!("{}+{} ", c.pos, c.neg), app.theme.muted()),
                Span::styled(status, style),
                Span::styled(method, app.theme.accent()),
                Span::styled(format!(" {}{run}", c.preset), app.theme.muted()),
            ]))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.sel_concept));
    f.render_stateful_widget(
        List::new(items)
            .highlight_style(app.theme.selected())
            .highlight_symbol("> "),
        inner,
        &mut state,
    );
}
