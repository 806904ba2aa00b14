//! Layout of the workbench: the panes, then the open popup (which draws itself).

use ratatui::layout::{Constraint, Flex, Layout};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::app::{App, Popup};
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
            "Terminal too small: {}x{}\nThe workbench needs at least {MIN_WIDTH}x{MIN_HEIGHT}.\nEnlarge the window ({} quits).",
            area.width,
            area.height,
            app.key(Action::Quit)
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
    // The full-screen views (a sample, the runs, a comparison) cover everything:
    // the panes under them are not drawn.
    if let Some(p @ (Popup::Fullscreen(_) | Popup::Runs(_) | Popup::Compare(_))) = &app.popup {
        p.draw(app, images, f);
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
        p.draw(app, images, f);
    }
}
