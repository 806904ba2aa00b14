//! Samples: previews from training (by step, with the reference beside them)
//! and from prompt files, with their metadata; or a grid of the latest
//! samples (`G`), the selected one marked.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::frame;
use crate::tui::app::{grid_window, App, ImageSlot, PaneId, SampleEntry, SampleOrigin};
use crate::tui::images::Images;
use crate::tui::text::hanging;

/// The key column of the metadata.
const KEY_WIDTH: usize = 8;

/// A sample's metadata wrapped to `width` columns (every line of it: the
/// caller gives them the room).
pub fn metadata(app: &App, s: &SampleEntry, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width);
    let kv =
        |k: &str, v: String| hanging(k, app.theme.muted(), KEY_WIDTH, &v, app.theme.text(), width);
    let mut lines = kv("prompt", s.prompt.clone());
    lines.extend(kv("seed", s.seed.to_string()));
    match &s.origin {
        SampleOrigin::Training { concept, step } => {
            lines.extend(kv("step", step.to_string()));
            lines.extend(kv("concept", format!("<{concept}>")));
        }
        SampleOrigin::Prompt { file } => lines.extend(kv(
            "file",
            file.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        )),
    }
    let shown = s.path.strip_prefix(&app.ws.root).unwrap_or(&s.path);
    lines.extend(kv("path", shown.display().to_string()));
    lines
}

/// Splits `area` into the picture and the metadata below it, the metadata
/// getting every line it needs (the picture keeps at least 3 rows).
pub fn with_metadata(app: &App, s: &SampleEntry, area: Rect) -> (Rect, Rect, Vec<Line<'static>>) {
    let lines = metadata(app, s, area.width);
    let h = (lines.len() as u16).min(area.height.saturating_sub(3));
    let [pics, meta] = Layout::vertical([Constraint::Min(0), Constraint::Length(h)]).areas(area);
    (pics, meta, lines)
}

pub fn render(app: &App, images: &mut Images, area: Rect, f: &mut Frame) {
    let title = match (app.samples.is_empty(), app.sample_grid) {
        (true, _) => "Samples".to_string(),
        (false, false) => format!("Samples {}/{}", app.sel_sample + 1, app.samples.len()),
        (false, true) => {
            let w = grid_window(app.samples.len(), app.sel_sample);
            format!(
                "Samples {}–{} of {} · grid",
                w.start + 1,
                w.end,
                app.samples.len()
            )
        }
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
    if app.sample_grid {
        render_grid(app, images, inner, f);
        return;
    }
    let (pics, meta, lines) = with_metadata(app, s, inner);
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
    f.render_widget(Paragraph::new(lines), meta);
}

/// Columns × rows for `n` pictures in `area` that gives each the largest
/// square (a cell is about twice as tall as wide; one row per cell is its caption).
pub fn grid_shape(n: usize, area: Rect) -> (u16, u16) {
    let n = n.max(1) as u16;
    (1..=n)
        .map(|cols| {
            let rows = n.div_ceil(cols);
            let w = area.width / cols;
            let h = (area.height / rows).saturating_sub(1);
            // Side of the largest square picture, in half-cell units.
            (w.min(h * 2), cols, rows)
        })
        .max_by_key(|&(side, cols, _)| (side, u16::MAX - cols))
        .map_or((1, 1), |(_, c, r)| (c, r))
}

fn caption(s: &SampleEntry) -> String {
    match &s.origin {
        SampleOrigin::Training { step, .. } => format!("step {step}"),
        // The seed first: it is what tells a prompt file's samples apart.
        SampleOrigin::Prompt { file } => format!(
            "seed {} · {}",
            s.seed,
            file.file_stem()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ),
    }
}

fn render_grid(app: &App, images: &mut Images, area: Rect, f: &mut Frame) {
    let window = grid_window(app.samples.len(), app.sel_sample);
    let (cols, rows) = grid_shape(window.len(), area);
    let row_areas =
        Layout::vertical(vec![Constraint::Ratio(1, u32::from(rows)); rows.into()]).split(area);
    for (i, index) in window.clone().enumerate() {
        let (r, c) = (i / usize::from(cols), i % usize::from(cols));
        let Some(row) = row_areas.get(r) else { break };
        let cells = Layout::horizontal(vec![Constraint::Ratio(1, u32::from(cols)); cols.into()])
            .split(*row);
        let Some(cell) = cells.get(c) else { break };
        let [label, pic] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(*cell);
        let selected = index == app.sel_sample;
        let (mark, style) = if selected {
            ("> ", app.theme.accent())
        } else {
            ("  ", app.theme.muted())
        };
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(
                format!("{mark}{}", caption(&app.samples[index])),
                style,
            ))),
            label,
        );
        images.render(ImageSlot::Grid(i), pic, f.buffer_mut(), app.theme.muted());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_gives_each_picture_the_largest_square() {
        // A wide pane: one row.
        assert_eq!(grid_shape(3, Rect::new(0, 0, 90, 16)), (3, 1));
        // A tall one: one column.
        assert_eq!(grid_shape(3, Rect::new(0, 0, 30, 60)), (1, 3));
        // Six in a roomy pane: 3 × 2.
        assert_eq!(grid_shape(6, Rect::new(0, 0, 120, 40)), (3, 2));
        assert_eq!(grid_shape(1, Rect::new(0, 0, 10, 10)), (1, 1));
    }
}
