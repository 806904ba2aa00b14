//! Layout of the workbench and its popups.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, ImageSlot, Popup};
use super::images::Images;
use super::keymap::Action;
use super::panes;

/// Below this the workbench cannot be laid out usefully.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn draw(app: &App, images: &mut Images, f: &mut Frame) {
    let area = f.area();
    f.render_widget(Block::default().style(app.theme.text()), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "Terminal too small: {}x{}\nThe workbench needs at least {MIN_WIDTH}x{MIN_HEIGHT}.\nEnlarge the window (q quits).",
            area.width, area.height
        );
        let [mid] = Layout::vertical([Constraint::Length(3)])
            .flex(Flex::Center)
            .areas(area);
        f.render_widget(
            Paragraph::new(msg).centered().style(app.theme.warning()),
            mid,
        );
        return;
    }
    let [body, status, commands] = Layout::vertical([
        Constraint::Min(10),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let logs_h = (body.height / 5).clamp(4, 12);
    let [top, logs] =
        Layout::vertical([Constraint::Min(8), Constraint::Length(logs_h)]).areas(body);
    let left_w = (top.width / 4).clamp(28, 48);
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_w), Constraint::Min(40)]).areas(top);
    let [refs, concepts] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(left);
    let [training, lower] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(right);
    let [samples, prompts] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(lower);

    panes::references::render(app, images, refs, f);
    panes::concepts::render(app, concepts, f);
    panes::training::render(app, training, f);
    panes::samples::render(app, images, samples, f);
    panes::prompts::render(app, prompts, f);
    panes::logs::render(app, logs, f);
    panes::status::render_status(app, status, f);
    panes::status::render_commands(app, commands, f);

    if let Some(p) = &app.popup {
        draw_popup(app, images, p, f);
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [c] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    c
}

fn popup_block<'a>(app: &App, title: &str) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(true))
        .title(Span::styled(format!(" {title} "), app.theme.accent()))
        .style(app.theme.text())
}

fn draw_popup(app: &App, images: &mut Images, popup: &Popup, f: &mut Frame) {
    let area = f.area();
    match popup {
        Popup::Help { scroll } => {
            let r = centered(area, 72, area.height.saturating_sub(4));
            let lines: Vec<Line> = app
                .keymap
                .bindings
                .iter()
                .map(|(a, _, d)| {
                    Line::from(vec![
                        Span::styled(
                            format!("{:>14}  ", app.keymap.keys_label(*a)),
                            app.theme.accent(),
                        ),
                        Span::raw(d.clone()),
                    ])
                })
                .collect();
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines)
                    .block(popup_block(app, "Help · keys (Esc closes, j/k scroll)"))
                    .scroll((*scroll, 0)),
                r,
            );
        }
        Popup::Palette { query, selected } => {
            let r = centered(area, 64, 18);
            f.render_widget(Clear, r);
            let block = popup_block(app, "Command palette");
            let inner = block.inner(r);
            f.render_widget(block, r);
            let [q, list] =
                Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
            f.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::styled(": ", app.theme.accent()),
                    Span::raw(query.clone()),
                ])),
                q,
            );
            let matches = app.palette_matches(query);
            let items: Vec<ListItem> = matches
                .iter()
                .map(|a: &Action| {
                    ListItem::new(Line::from(vec![
                        Span::raw(format!("{:<22}", app.keymap.desc(*a))),
                        Span::styled(format!(" {}", app.keymap.keys_label(*a)), app.theme.muted()),
                    ]))
                })
                .collect();
            let mut state = ListState::default().with_selected(Some(*selected));
            f.render_stateful_widget(
                List::new(items)
                    .highlight_style(app.theme.selected())
                    .highlight_symbol("> "),
                list,
                &mut state,
            );
        }
        Popup::AddReference { path } => {
            let r = centered(area, 72, 5);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from(vec![
                        Span::styled("path: ", app.theme.accent()),
                        Span::raw(format!("{path}_")),
                    ]),
                    Line::from(Span::styled(
                        "Enter adds (copied into references/), Esc cancels",
                        app.theme.muted(),
                    )),
                ])
                .block(popup_block(app, "Add a reference image")),
                r,
            );
        }
        Popup::NewConcept(form) => {
            let r = centered(area, 64, 10);
            f.render_widget(Clear, r);
            let mut lines: Vec<Line> = form
                .fields
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let label = super::app::ConceptForm::LABELS[i];
                    let cursor = if i == form.focus { "_" } else { "" };
                    let style = if i == form.focus {
                        app.theme.selected()
                    } else {
                        app.theme.text()
                    };
                    Line::from(vec![
                        Span::styled(format!("{label:>17}: "), app.theme.muted()),
                        Span::styled(format!("{v}{cursor}"), style),
                    ])
                })
                .collect();
            lines.push(Line::from(Span::styled(
                format!(
                    "reference {} · presets photo, anime, style",
                    form.reference
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                ),
                app.theme.muted(),
            )));
            lines.push(Line::from(Span::styled(
                "Tab next field · Enter create · Esc cancel",
                app.theme.muted(),
            )));
            f.render_widget(
                Paragraph::new(lines).block(popup_block(app, "New concept")),
                r,
            );
        }
        Popup::ConfirmQuit => {
            let r = centered(area, 60, 7);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from("A training run is going."),
                    Line::from(""),
                    Line::from(vec![
                        Span::styled(" s ", app.theme.selected()),
                        Span::raw(" stop, save a checkpoint and quit"),
                    ]),
                    Line::from(vec![
                        Span::styled(" k ", app.theme.selected()),
                        Span::raw(" keep training headless and quit"),
                    ]),
                    Line::from(vec![
                        Span::styled(" c ", app.theme.selected()),
                        Span::raw(" cancel"),
                    ]),
                ])
                .block(popup_block(app, "Quit?")),
                r,
            );
        }
        Popup::Error(msg) => {
            let r = centered(area, 70, 9);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from(Span::styled(msg.clone(), app.theme.error())),
                    Line::from(""),
                    Line::from(Span::styled("Enter or Esc to dismiss", app.theme.muted())),
                ])
                .wrap(Wrap { trim: true })
                .block(popup_block(app, "Error")),
                r,
            );
        }
        Popup::Eval {
            concept,
            lines,
            status,
        } => {
            let r = centered(
                area,
                area.width.saturating_sub(6),
                (lines.len() as u16 + 5).min(area.height),
            );
            f.render_widget(Clear, r);
            let mut text: Vec<Line> = lines.iter().map(|l| Line::from(l.clone())).collect();
            text.push(Line::from(""));
            text.push(Line::from(Span::styled(
                if status.is_empty() {
                    "Enter runs an evaluation · any other key closes".to_string()
                } else {
                    status.clone()
                },
                app.theme.muted(),
            )));
            f.render_widget(
                Paragraph::new(text).block(popup_block(app, &format!("Evaluation <{concept}>"))),
                r,
            );
        }
        Popup::Fullscreen => {
            let r = area;
            f.render_widget(Clear, r);
            let block = popup_block(app, "Sample (Esc closes)");
            let inner = block.inner(r);
            f.render_widget(block, r);
            let [pic, meta] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(inner);
            images.render(ImageSlot::Sample, pic, f.buffer_mut(), app.theme.muted());
            if let Some(s) = app.selected_sample() {
                f.render_widget(Paragraph::new(panes::samples::metadata(app, s)), meta);
            }
        }
    }
}
