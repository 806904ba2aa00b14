//! Training: live loss chart (raw + smoothed, recent window or full history,
//! linear or log scale, its y range from robust statistics of what is shown:
//! [`crate::tui::chart`]), step gauge, learning rate, gradient norms, speed and ETA.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, Gauge, GraphType, Paragraph, Wrap};
use ratatui::Frame;

use super::frame;
use crate::train::eta::format_eta;
use crate::tui::app::{App, ChartScale, PaneId, TrainStatus};
use crate::tui::chart;
use crate::tui::keymap::Action;

fn status_label(s: &TrainStatus) -> &'static str {
    match s {
        TrainStatus::Starting => "starting",
        TrainStatus::Running => "running",
        TrainStatus::Paused => "paused",
        TrainStatus::Stopping => "stopping",
        TrainStatus::Finished => "finished",
        TrainStatus::Failed(_) => "failed",
        TrainStatus::Attached => "attached",
        TrainStatus::Ended(s) => s.label(),
    }
}

pub fn render(app: &App, area: Rect, f: &mut Frame) {
    let Some(t) = &app.training else {
        let block = frame(app, PaneId::Training, "Training");
        let inner = block.inner(area);
        f.render_widget(block, area);
        f.render_widget(
            Paragraph::new(format!(
                "Not training. Select a concept and press {} ({} resumes its latest run).",
                app.key(Action::Train),
                app.key(Action::Resume)
            ))
            .style(app.theme.muted())
            .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let h = &t.history;
    let title = format!(
        "Training <{}> · run {} · {}{}{}",
        t.concept,
        if t.run_id.is_empty() {
            "…"
        } else {
            &t.run_id
        },
        status_label(&t.status),
        if app.show_full_history {
            " · full history"
        } else {
            " · recent"
        },
        match app.chart_scale {
            ChartScale::Linear => "",
            ChartScale::Log => " · log",
        }
    );
    let block = frame(app, PaneId::Training, title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [chart_area, stats_area, gauge_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);

    let scale = app.chart_scale;
    let (raw, smooth) = if app.show_full_history {
        (chart::plotted(&h.full, scale), Vec::new())
    } else {
        let recent: Vec<(f64, f64)> = h.recent.iter().copied().collect();
        let recent_smooth: Vec<(f64, f64)> = h.recent_smooth.iter().copied().collect();
        (
            chart::plotted(&recent, scale),
            chart::plotted(&recent_smooth, scale),
        )
    };
    if raw.is_empty() {
        f.render_widget(
            Paragraph::new("waiting for the first step…").style(app.theme.muted()),
            chart_area,
        );
    } else {
        let [x0, x1] = chart::x_range(&raw);
        let [y0, y1] = chart::y_range(&raw, &smooth);
        let mut sets = vec![Dataset::default()
            .name("loss")
            .marker(Marker::Braille)
            .graph_type(GraphType::Scatter)
            .style(app.theme.series(false))
            .data(&raw)];
        if !smooth.is_empty() {
            sets.push(
                Dataset::default()
                    .name("smoothed")
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(app.theme.series(true))
                    .data(&smooth),
            );
        }
        let chart = Chart::new(sets)
            .x_axis(
                Axis::default()
                    .bounds([x0, x1])
                    .labels(
                        chart::x_labels([x0, x1], chart_area.width)
                            .into_iter()
                            .map(Span::raw)
                            .collect::<Vec<_>>(),
                    )
                    .style(app.theme.muted()),
            )
            .y_axis(
                Axis::default()
                    .bounds([y0, y1])
                    .labels(
                        chart::y_labels([y0, y1], scale)
                            .into_iter()
                            .map(Span::raw)
                            .collect::<Vec<_>>(),
                    )
                    .style(app.theme.muted()),
            );
        f.render_widget(chart, chart_area);
    }

    let stats = match &h.last {
        Some(m) => {
            let eta = format_eta(h.eta());
            let mut spans = vec![
                Span::styled("loss ", app.theme.muted()),
                Span::raw(format!("{:.4}", m.loss)),
                Span::styled("  smoothed ", app.theme.muted()),
                Span::raw(format!("{:.4}", h.smoothed().unwrap_or(m.loss))),
                Span::styled("  lr ", app.theme.muted()),
                Span::raw(format!("{:.2e}", m.lr)),
                Span::styled("  |g+| ", app.theme.muted()),
                Span::raw(format!("{:.3}", m.grad_norm_pos)),
                Span::styled(" |g-| ", app.theme.muted()),
                Span::raw(format!("{:.3}", m.grad_norm_neg)),
                Span::styled("  ", app.theme.muted()),
                Span::raw(format!("{:.2} it/s", m.it_s)),
                Span::styled("  ETA ", app.theme.muted()),
                Span::raw(eta),
            ];
            if let Some(c) = t.last_checkpoint {
                spans.push(Span::styled(format!("  saved @{c}"), app.theme.muted()));
            }
            Line::from(spans)
        }
        None => Line::from(Span::styled("no steps yet", app.theme.muted())),
    };
    f.render_widget(Paragraph::new(stats), stats_area);
    let total = h.total_steps.max(1);
    let step = h.step().min(total);
    let style = match t.status {
        TrainStatus::Failed(_) => app.theme.error(),
        TrainStatus::Paused => app.theme.warning(),
        _ => app.theme.accent(),
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(style)
            .ratio(step as f64 / total as f64)
            .label(format!("{step}/{total}")),
        gauge_area,
    );
}
