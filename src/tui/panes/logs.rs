//! Logs: the tail of the tracing ring buffer, filtered by level.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use tracing::Level;

use super::frame;
use crate::tui::app::{App, PaneId};

pub fn render(app: &App, area: Rect, f: &mut Frame) {
    let block = frame(
        app,
        PaneId::Logs,
        format!("Logs · {} and above", app.log_level),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let lines: Vec<Line> = app
        .logs
        .tail(app.log_level, inner.height as usize)
        .into_iter()
        .map(|l| {
            let style = match l.level {
                Level::ERROR => app.theme.error(),
                Level::WARN => app.theme.warning(),
                _ => app.theme.text(),
            };
            Line::from(vec![
                Span::styled(format!("{} {:<5} ", l.time, l.level), app.theme.muted()),
                Span::styled(l.text, style),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}
