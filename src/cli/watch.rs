//! `dreamartist watch`: regenerate a prompt file whenever it is saved.
//!
//! The `prompts/` folder is watched (not the files: editors save by writing a
//! temporary file and renaming it), bursts of saves are debounced, and a newer
//! save of the same file cancels the render in progress at its next step
//! (latest wins). An invalid file prints its error and the watcher waits for
//! the next save.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::engine::{Engine, EngineCommand, EngineEvent, GenerateJob};
use crate::workspace::watch::{Debouncer, PromptWatch, WatchNotice};
use crate::workspace::Workspace;

fn say(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub fn run(workspace: &Path, json: bool) -> Result<ExitCode> {
    let ws = Workspace::open(workspace)?;
    let prompts = ws.prompts_dir();
    std::fs::create_dir_all(&prompts)
        .with_context(|| format!("{}: cannot create", prompts.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let engine = Engine::spawn(ws.clone());
    loop {
        if stop.load(Ordering::SeqCst) {
            engine.shutdown();
            return Ok(ExitCode::SUCCESS);
        }
        match engine.recv_timeout(Duration::from_millis(100)) {
            Some(EngineEvent::Ready {
                model,
                device,
                family,
            }) => {
                say(
                    json,
                    serde_json::json!({"event": "ready", "model": model, "device": device, "family": family}),
                    format!(
                        "watching {} (model {model}, {family}, on {device}); Ctrl-C to stop",
                        prompts.display()
                    ),
                );
                break;
            }
            Some(EngineEvent::LoadFailed(e)) => bail!(e),
            _ => {}
        }
    }

    let (fs_tx, fs_rx) = mpsc::channel::<PathBuf>();
    let watcher = PromptWatch::start(&prompts, fs_tx, move |n| {
        let event = match &n {
            WatchNotice::Lost(_) => "folder_lost",
            WatchNotice::Rearmed(_) => "folder_rearmed",
            WatchNotice::Failed(..) => "folder_failed",
        };
        say(
            json,
            serde_json::json!({"event": event, "message": n.to_string()}),
            n.to_string(),
        )
    })
    .with_context(|| format!("{}: cannot watch", prompts.display()))?;

    let mut next_id = 1u64;
    let mut debouncer = Debouncer::default();
    while !stop.load(Ordering::SeqCst) {
        while let Ok(path) = fs_rx.recv_timeout(Duration::from_millis(20)) {
            debouncer.record(path, Instant::now());
        }
        for path in debouncer.due(Instant::now()) {
            if !path.is_file() {
                continue;
            }
            match GenerateJob::from_prompt_file(next_id, &path, &ws) {
                Ok(job) => {
                    engine.send(EngineCommand::Generate(Box::new(job)));
                    next_id += 1;
                }
                Err(e) => say(
                    json,
                    serde_json::json!({"event": "invalid", "source": path, "error": e.to_string()}),
                    format!("error: {e}"),
                ),
            }
        }
        while let Some(ev) = engine.try_recv() {
            match ev {
                EngineEvent::Sample {
                    source, path, seed, ..
                } => say(
                    json,
                    serde_json::json!({"event": "sample", "source": source, "path": path, "seed": seed}),
                    format!(
                        "{} -> {} (seed {seed})",
                        source.map(|s| s.display().to_string()).unwrap_or_default(),
                        path.display()
                    ),
                ),
                EngineEvent::GenerateFailed { source, error, .. } => say(
                    json,
                    serde_json::json!({"event": "failed", "source": source, "error": error}),
                    format!(
                        "error: {}: {error}",
                        source.map(|s| s.display().to_string()).unwrap_or_default()
                    ),
                ),
                EngineEvent::GenerateDone {
                    source,
                    cancelled: true,
                    ..
                } => say(
                    json,
                    serde_json::json!({"event": "cancelled", "source": source}),
                    format!(
                        "{}: superseded by a newer save",
                        source.map(|s| s.display().to_string()).unwrap_or_default()
                    ),
                ),
                _ => {}
            }
        }
    }
    drop(watcher);
    engine.shutdown();
    say(
        json,
        serde_json::json!({"event": "stopped"}),
        "stopped".into(),
    );
    Ok(ExitCode::SUCCESS)
}
