//! References: the workspace's reference images, with a preview of the selected one.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{List, ListItem, ListState};
use ratatui::Frame;

use super::frame;
use crate::tui::app::{App, ImageSlot, PaneId};
use crate::tui::images::Images;
use crate::tui::keymap::Action;

pub fn render(app: &App, images: &mut Images, area: Rect, f: &mut Frame) {
    let block = frame(
        app,
        PaneId::References,
        format!("References ({})", app.references.len()),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.references.is_empty() {
        f.render_widget(
            ratatui::widgets::Paragraph::new(format!(
                "No reference images.\nPress {} to add one.",
                app.key(Action::AddReference)
            ))
            .style(app.theme.muted())
            .wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    }
    let list_h = (app.references.len() as u16 + 1)
        .min(inner.height / 2)
        .max(1);
    let [list_area, preview] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(0)]).areas(inner);
    let items: Vec<ListItem> = app
        .references
        .iter()
        .map(|p| {
            ListItem::new(
                p.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.sel_reference));
    f.render_stateful_widget(
        List::new(items)
            .highlight_style(app.theme.selected())
            .highlight_symbol("> "),
        list_area,
        &mut state,
    );
    if preview.height > 1 {
        images.render(
            ImageSlot::Reference,
            preview,
            f.buffer_mut(),
            app.theme.muted(),
        );
    }
}
