//! Comparing 2–4 marked runs, full screen: their smoothed loss curves on one
//! chart (one colour each, a legend naming the runs; the y range and log
//! scale of [`crate::tui::chart`]), their preview samples at a matching step
//! side by side, and the options that differ between them. Closing goes back
//! to the runs browser it came from.

use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Clear, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::runs::RunsBrowser;
use super::{popup_block, Outcome};
use crate::runs::RunSummary;
use crate::tui::app::{App, ChartScale, ImageSlot};
use crate::tui::chart;
use crate::tui::compare::{matching_steps, option_diff, sample_at, RunCurve};
use crate::tui::images::Images;
use crate::tui::keymap::{CompareKey, Keymap};

#[derive(Debug, Clone, PartialEq)]
pub struct ComparePopup {
    pub concept: String,
    /// The compared runs' summaries, in marking order.
    pub runs: Vec<RunSummary>,
    /// Their curves and samples; `None` while the worker reads them.
    pub curves: Option<Vec<RunCurve>>,
    /// An index into the matching sample steps.
    pub step: usize,
    pub scale: ChartScale,
    /// The browser to go back to.
    pub back: Box<RunsBrowser>,
}

impl ComparePopup {
    pub fn new(concept: String, runs: Vec<RunSummary>, back: RunsBrowser) -> Self {
        Self {
            concept,
            runs,
            curves: None,
            step: 0,
            scale: ChartScale::Linear,
            back: Box::new(back),
        }
    }

    /// Takes the curves and shows the latest matching step.
    pub fn set_curves(&mut self, curves: Vec<RunCurve>) {
        self.step = matching_steps(&curves).len().saturating_sub(1);
        self.curves = Some(curves);
    }

    pub fn steps(&self) -> Vec<u64> {
        self.curves
            .as_deref()
            .map(matching_steps)
            .unwrap_or_default()
    }

    /// Each run's sample at the selected step (for the image slots).
    pub fn sample_paths(&self) -> Vec<Option<std::path::PathBuf>> {
        let step = self.steps().get(self.step).copied();
        self.curves
            .iter()
            .flatten()
            .map(|c| step.and_then(|s| sample_at(c, s)).map(|(_, p)| p))
            .collect()
    }

    /// `true`: the selected step changed (the previews need updating).
    pub fn on_key(&mut self, keymap: &Keymap, key: &KeyEvent) -> (Outcome, bool) {
        let n = self.steps().len();
        match keymap.compare.action_for(key) {
            Some(CompareKey::Close) => return (Outcome::Close, false),
            Some(CompareKey::PrevStep) if self.step > 0 => {
                self.step -= 1;
                return (Outcome::Stay, true);
            }
            Some(CompareKey::NextStep) if self.step + 1 < n => {
                self.step += 1;
                return (Outcome::Stay, true);
            }
            Some(CompareKey::Scale) => self.scale = self.scale.next(),
            _ => {}
        }
        (Outcome::Stay, false)
    }

    pub fn draw(&self, app: &App, images: &mut Images, f: &mut Frame) {
        let area = f.area();
        f.render_widget(Clear, area);
        let ids: Vec<&str> = self.runs.iter().map(|r| r.id.as_str()).collect();
        let block = popup_block(
            app,
            &format!("Compare <{}> · {}", self.concept, ids.join(" vs ")),
        );
        let inner = block.inner(area);
        f.render_widget(block, area);
        let diff = option_diff(&self.runs);
        let diff_h = (diff.len() as u16 + 3).clamp(4, 10);
        let [chart_area, legend, samples, diff_area, footer] = Layout::vertical([
            Constraint::Percentage(45),
            Constraint::Length(1),
            Constraint::Min(6),
            Constraint::Length(diff_h),
            Constraint::Length(1),
        ])
        .areas(inner);
        self.draw_chart(app, chart_area, f);
        let mut spans = vec![Span::styled("legend: ", app.theme.muted())];
        for (i, r) in self.runs.iter().enumerate() {
            spans.push(Span::styled(
                format!("{} ", marker(i)),
                app.theme.run_series(i),
            ));
            spans.push(Span::raw(format!("{}  ", r.id)));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), legend);
        self.draw_samples(app, images, samples, f);
        draw_diff(app, &self.runs, &diff, diff_area, f);
        let k = &app.keymap.compare;
        f.render_widget(
            Paragraph::new(Span::styled(
                format!(
                    "{}/{} step · {} linear/log · {} back to the runs",
                    k.key(CompareKey::PrevStep),
                    k.key(CompareKey::NextStep),
                    k.key(CompareKey::Scale),
                    k.key(CompareKey::Close)
                ),
                app.theme.muted(),
            )),
            footer,
        );
    }

    fn draw_chart(&self, app: &App, area: Rect, f: &mut Frame) {
        let title = match self.scale {
            ChartScale::Linear => " smoothed loss ",
            ChartScale::Log => " smoothed loss · log ",
        };
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(app.theme.border(false))
            .title(title);
        let inner = block.inner(area);
        f.render_widget(block, area);
        let Some(curves) = &self.curves else {
            f.render_widget(
                Paragraph::new("reading the runs' metrics…").style(app.theme.muted()),
                inner,
            );
            return;
        };
        let raw: Vec<(f64, f64)> = curves
            .iter()
            .flat_map(|c| chart::plotted(&c.raw, self.scale))
            .collect();
        if raw.is_empty() {
            f.render_widget(
                Paragraph::new("no metrics in these runs yet").style(app.theme.muted()),
                inner,
            );
            return;
        }
        let smooth: Vec<Vec<(f64, f64)>> = curves
            .iter()
            .map(|c| chart::plotted(&c.smooth, self.scale))
            .collect();
        let all_smooth: Vec<(f64, f64)> = smooth.iter().flatten().copied().collect();
        let [x0, x1] = chart::x_range(&raw);
        let [y0, y1] = chart::y_range(&raw, &all_smooth);
        let sets: Vec<Dataset> = curves
            .iter()
            .zip(&smooth)
            .enumerate()
            .map(|(i, (c, s))| {
                Dataset::default()
                    .name(c.id.clone())
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(app.theme.run_series(i))
                    .data(s)
            })
            .collect();
        let labels = |v: Vec<String>| v.into_iter().map(Span::raw).collect::<Vec<_>>();
        let chart = Chart::new(sets)
            // The legend line under the chart names the runs.
            .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)))
            .x_axis(
                Axis::default()
                    .bounds([x0, x1])
                    .labels(labels(chart::x_labels([x0, x1], inner.width)))
                    .style(app.theme.muted()),
            )
            .y_axis(
                Axis::default()
                    .bounds([y0, y1])
                    .labels(labels(chart::y_labels([y0, y1], self.scale)))
                    .style(app.theme.muted()),
            );
        f.render_widget(chart, inner);
    }

    fn draw_samples(&self, app: &App, images: &mut Images, area: Rect, f: &mut Frame) {
        let steps = self.steps();
        let step = steps.get(self.step).copied();
        let n = self.runs.len().max(1) as u32;
        let cols = Layout::horizontal((0..n).map(|_| Constraint::Ratio(1, n))).split(area);
        for (i, (run, col)) in self.runs.iter().zip(cols.iter()).enumerate() {
            let shown = self
                .curves
                .as_ref()
                .and_then(|c| c.get(i))
                .zip(step)
                .and_then(|(c, s)| sample_at(c, s));
            let title = match &shown {
                Some((s, _)) => format!(" {} {} · step {s} ", marker(i), run.id),
                None => format!(" {} {} · no sample ", marker(i), run.id),
            };
            let block = Block::default()
                .borders(Borders::ALL)
                .border_style(app.theme.border(false))
                .title(Span::styled(title, app.theme.run_series(i)));
            let inner = block.inner(*col);
            f.render_widget(block, *col);
            if shown.is_some() {
                images.render(
                    ImageSlot::Compare(i),
                    inner,
                    f.buffer_mut(),
                    app.theme.muted(),
                );
            }
        }
    }
}

/// A run's mark in the legend and the sample titles (it tells runs apart
/// without colour too).
fn marker(i: usize) -> String {
    format!("━ {}", letter(i))
}

fn letter(i: usize) -> char {
    char::from(b'A' + (i % 26) as u8)
}

/// The options that differ: a row per option, a column per run.
fn draw_diff(
    app: &App,
    runs: &[RunSummary],
    diff: &[(String, Vec<String>)],
    area: Rect,
    f: &mut Frame,
) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(false))
        .title(" options that differ ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let key_w = diff
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let col_w = (usize::from(inner.width).saturating_sub(key_w + 2) / runs.len().max(1)).max(8);
    let cell = |s: &str| {
        let s: String = s.chars().take(col_w.saturating_sub(1)).collect();
        format!("{s:<col_w$}")
    };
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "{:<key_w$}  {}",
            "",
            runs.iter()
                .enumerate()
                .map(|(i, r)| cell(&format!("{} {}", letter(i), r.id)))
                .collect::<String>()
        ),
        app.theme.accent(),
    ))];
    if diff.is_empty() {
        lines.push(Line::from(Span::styled(
            "the runs have the same options",
            app.theme.muted(),
        )));
    }
    for (k, values) in diff {
        lines.push(Line::from(format!(
            "{k:<key_w$}  {}",
            values.iter().map(|v| cell(v)).collect::<String>()
        )));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
