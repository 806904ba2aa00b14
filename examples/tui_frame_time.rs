//! Measures the workbench's frame render time at 200×60 during training: a
//! 1500-step history on the chart, samples, prompts and logs, drawn into
//! ratatui's TestBackend (widget and layout cost; the terminal write is extra,
//! see `dreamartist tui --debug-fps` for the live figure).
//!
//! ```text
//! cargo run --release --example tui_frame_time
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use dreamartist::engine::EngineEvent;
use dreamartist::train::run::StepMetrics;
use dreamartist::train::TrainEvent;
use dreamartist::tui::app::{App, Msg};
use dreamartist::tui::images::Images;
use dreamartist::tui::keymap::Keymap;
use dreamartist::tui::logbuf::LogBuffer;
use dreamartist::tui::theme::Theme;
use dreamartist::tui::view;
use dreamartist::workspace::Workspace;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = Workspace::open(root)?;
    let logs = LogBuffer::default();
    for i in 0..200 {
        logs.push(tracing::Level::INFO, format!("log line {i}"));
    }
    let mut app = App::new(ws, Keymap::default_map(), Theme::dark(), logs, "halfblocks");
    app.update(Msg::Engine(EngineEvent::Ready {
        model: "tiny-sd1".into(),
        device: "cpu".into(),
        family: "SD 1.x".into(),
    }));
    app.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('t'),
        KeyModifiers::NONE,
    )));
    app.update(Msg::Engine(EngineEvent::Train(TrainEvent::Started {
        run_id: "bench".into(),
        run_dir: root.join("concepts/cat/runs/bench"),
        start_step: 0,
        total_steps: 3000,
    })));
    for step in 1..=1500u64 {
        let loss = 1.0 + 0.3 * (step as f64 * 0.37).sin() * (-(step as f64) / 800.0).exp();
        app.update(Msg::Engine(EngineEvent::Train(TrainEvent::Step(
            StepMetrics {
                step,
                loss,
                mse: loss,
                rec: None,
                lr: 0.005,
                lr_neg: 0.005,
                grad_norm_pos: 0.3,
                grad_norm_neg: 0.2,
                it_s: 4.0,
            },
        ))));
    }
    let mut images = Images::off();
    let mut term = Terminal::new(TestBackend::new(200, 60))?;
    let mut times: Vec<Duration> = Vec::new();
    for full in [false, true] {
        app.show_full_history = full;
        for _ in 0..300 {
            let t = Instant::now();
            term.draw(|f| view::draw(&app, &mut images, f))?;
            times.push(t.elapsed());
        }
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "frame render at 200x60 (training, 1500-step history): mean {:.3} ms, median {:.3} ms, p95 {:.3} ms over {} frames",
        mean.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 95 / 100].as_secs_f64() * 1e3,
        times.len()
    );
    Ok(())
}
