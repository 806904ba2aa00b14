//! Prompts: the files in `prompts/`, watch state, last render and errors.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::frame;
use crate::tui::app::{App, PaneId, PromptStatus};
use crate::tui::keymap::Action;

pub fn render(app: &App, area: Rect, f: &mut Frame) {
    let title = format!(
        "Prompts · watch {}",
        if app.watch_on { "on" } else { "off" }
    );
    let block = frame(app, PaneId::Prompts, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.prompts.is_empty() {
        f.render_widget(
            Paragraph::new(format!(
                "No prompt files. Press {} to create one.",
                app.key(Action::NewPrompt)
            ))
            .style(app.theme.muted())
            .wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    }
    let items: Vec<ListItem> = app
        .prompts
        .iter()
        .map(|r| {
            let name = r
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let (status, style) = match &r.status {
                PromptStatus::Idle => (String::new(), app.theme.muted()),
                PromptStatus::Queued => ("queued".into(), app.theme.muted()),
                PromptStatus::Rendering {
                    step,
                    steps,
                    index,
                    count,
                } => (
                    format!("rendering {}/{count} step {step}/{steps}", index + 1),
                    app.theme.accent(),
                ),
                PromptStatus::Done { images } => (format!("done ({images})"), app.theme.ok()),
                PromptStatus::Cancelled => ("superseded".into(), app.theme.muted()),
                PromptStatus::Error(_) => ("error".into(), app.theme.error()),
            };
            ListItem::new(Line::from(vec![
                Span::raw(format!("{name} ")),
                Span::styled(status, style),
            ]))
        })
        .collect();
    let error = app
        .prompts
        .get(app.sel_prompt)
        .and_then(|r| match &r.status {
            PromptStatus::Error(e) => Some(e.clone()),
            _ => None,
        });
    let err_h = if error.is_some() {
        3.min(inner.height / 2)
    } else {
        0
    };
    let [list_area, err_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(err_h)]).areas(inner);
    let mut state = ListState::default().with_selected(Some(app.sel_prompt));
    f.render_stateful_widget(
        List::new(items)
            .highlight_style(app.theme.selected())
            .highlight_symbol("> "),
        list_area,
        &mut state,
    );
    if let Some(e) = error {
        f.render_widget(
            Paragraph::new(e)
                .style(app.theme.error())
                .wrap(Wrap { trim: true }),
            err_area,
        );
    }
}
