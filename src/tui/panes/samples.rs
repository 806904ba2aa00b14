//! Samples: previews from training (by step, with the reference beside them)
//! and from prompt files, with their metadata.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::frame;
use crate::tui::app::{App, ImageSlot, PaneId, SampleEntry, SampleOrigin};
use crate::tui::images::Images;

pub fn metadata(app: &App, s: &SampleEntry) -> Vec<Line<'static>> {
    let kv = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<7}"), app.theme.muted()),
            Span::raw(v),
        ])
    };
    let mut lines = vec![
        kv("prompt", s.prompt.clone()),
        kv("seed", s.seed.to_string()),
    ];
    match &s.origin {
        SampleOrigin::Training { concept, step } => {
            lines.push(kv("step", step.to_string()));
            lines.push(kv("concept", format!("<{concept}>")));
        }
        SampleOrigin::Prompt { file } => lines.push(kv(
            "file",
            file.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        )),
    }
    let shown = s.path.strip_prefix(&app.ws.root).unwrap_or(&s.path);
    lines.push(kv("path", shown.display().to_string()));
    lines
}

pub fn render(app: &App, images: &mut Images, area: Rect, f: &mut Frame) {
    let title = if app.samples.is_empty() {
        "Samples".to_string()
    } else {
        format!("Samples {}/{}", app.sel_sample + 1, app.samples.len())
    };
    let block = frame(app, PaneId::Samples, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(s) = app.selected_sample() else {
        f.render_widget(
            Paragraph::new(
                "No samples yet: training previews and rendered prompt files show here.",
            )
            .style(app.theme.muted())
            .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let [pics, meta] = Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(inner);
    if matches!(s.origin, SampleOrigin::Training { .. }) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(pics);
        images.render(
            ImageSlot::SampleReference,
            left,
            f.buffer_mut(),
            app.theme.muted(),
        );
        images.render(ImageSlot::Sample, right, f.buffer_mut(), app.theme.muted());
    } else {
        images.render(ImageSlot::Sample, pics, f.buffer_mut(), app.theme.muted());
    }
    f.render_widget(
        Paragraph::new(metadata(app, s)).wrap(Wrap { trim: true }),
        meta,
    );
}
