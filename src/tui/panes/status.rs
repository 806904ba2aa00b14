//! The status bar (device, model, image protocol, engine state) and the
//! command bar generated from the keymap.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::app::{App, EngineState};
use crate::tui::keymap::Action;

pub fn render_status(app: &App, area: Rect, f: &mut Frame) {
    let (engine, style) = match &app.engine {
        EngineState::Loading => ("loading model…".to_string(), app.theme.warning()),
        EngineState::Ready {
            model,
            device,
            family,
        } => (format!("{device} · {model} ({family})"), app.theme.ok()),
        EngineState::Failed(_) => ("model failed to load".to_string(), app.theme.error()),
    };
    let mut spans = vec![
        Span::styled(" dreamartist ", app.theme.accent()),
        Span::styled(engine, style),
        Span::styled(
            format!(" │ images {}", app.image_protocol),
            app.theme.muted(),
        ),
        Span::styled(
            format!(" │ watch {}", if app.watch_on { "on" } else { "off" }),
            app.theme.muted(),
        ),
        Span::styled(format!(" │ {}", app.ws_name), app.theme.muted()),
    ];
    if let Some(ft) = app.frame_time {
        spans.push(Span::styled(
            format!(" │ frame {:.2} ms", ft.as_secs_f64() * 1e3),
            app.theme.muted(),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub fn render_commands(app: &App, area: Rect, f: &mut Frame) {
    let mut spans = Vec::new();
    for a in Action::BAR {
        let keys = app.keymap.keys_label(a);
        if keys.is_empty() {
            continue;
        }
        spans.push(Span::styled(format!(" {keys} "), app.theme.selected()));
        spans.push(Span::styled(
            format!(" {} ", a.id().replace('_', " ")),
            app.theme.muted(),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
