//! The ratatui workbench: a dashboard over a workspace with live training,
//! in-terminal previews and prompt files that re-render on save.
//!
//! Threads: this one owns the terminal and the [`App`] (drains every pending
//! message, then draws once, at most ~30 fps, inside synchronized updates); an
//! input thread reads crossterm events; the engine thread owns the models; a
//! worker thread does the app's file work ([`tasks`]); a file watcher reports
//! saves in `prompts/`; image threads decode and encode previews.

mod actions;
pub mod app;
pub mod chart;
pub mod compare;
mod done;
mod events;
pub mod images;
pub mod keymap;
pub mod logbuf;
pub mod metrics;
pub mod panes;
pub mod popups;
pub mod scan;
pub mod state;
pub mod sweeps;
pub mod tasks;
pub mod terminal;
pub mod text;
pub mod theme;
pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{BeginSynchronizedUpdate, EndSynchronizedUpdate};
use ratatui::Terminal;
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use self::app::{App, Effect, Msg};
use self::images::{Images, ProtocolChoice};
use self::keymap::Keymap;
use self::logbuf::{BufferLayer, LogBuffer};
use self::tasks::Worker;
use self::theme::Theme;
use crate::engine::Engine;
use crate::workspace::Workspace;

/// Options of `dreamartist tui`.
#[derive(Debug, Clone)]
pub struct TuiOptions {
    pub workspace: PathBuf,
    pub image_protocol: ProtocolChoice,
    pub theme: Option<String>,
    pub debug_fps: bool,
}

/// ~30 fps: enough for a loss chart, cheap over SSH.
const FRAME: Duration = Duration::from_millis(33);

type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

/// Reads terminal events; pauses while an editor or the shell owns the terminal.
fn spawn_input(tx: Sender<Msg>, paused: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("input".into())
        .spawn(move || loop {
            if paused.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match event::poll(Duration::from_millis(50)) {
                Ok(true) if !paused.load(Ordering::SeqCst) => match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                        if tx.send(Msg::Key(k)).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Resize(..)) => {
                        if tx.send(Msg::Redraw).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                Ok(_) => {}
                Err(_) => break,
            }
        });
}

fn resolve_theme(opts: &TuiOptions, ws: &Workspace, logs: &LogBuffer) -> Theme {
    let no_color = std::env::var_os("NO_COLOR");
    Theme::resolve(opts.theme.as_deref(), ws, no_color.as_deref()).unwrap_or_else(|e| {
        logs.push(Level::WARN, format!("{e:#}; using the dark theme"));
        Theme::dark()
    })
}

/// Runs the workbench until the user quits.
pub fn run(opts: TuiOptions) -> Result<()> {
    let ws = Workspace::open(&opts.workspace)?;
    let logs = LogBuffer::default();
    let _ =
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(BufferLayer {
            buffer: logs.clone(),
        }));
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let keymap = Keymap::load_layers(&keymap::layer_paths(home.as_deref(), &ws.root))?;
    let theme = resolve_theme(&opts, &ws, &logs);

    terminal::install_panic_hook();
    terminal::enter()?;
    // The protocol probe talks to the terminal: before the input thread starts.
    // It never fails: no answer means half-blocks, with the reason in the log.
    let resolved = opts.image_protocol.resolve();
    for note in &resolved.notes {
        logs.push(Level::INFO, format!("images: {note}"));
    }
    let mut images = Images::new(resolved.picker);
    let result = (|| -> Result<()> {
        let mut terminal: Term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        terminal::clear(&mut terminal)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let paused = Arc::new(AtomicBool::new(false));
        spawn_input(tx.clone(), paused.clone());
        let (fs_tx, fs_rx) = mpsc::channel::<PathBuf>();
        let notice_logs = logs.clone();
        let _watcher =
            match crate::workspace::watch::PromptWatch::start(&ws.prompts_dir(), fs_tx, move |n| {
                notice_logs.push(Level::WARN, n.to_string())
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    logs.push(
                        Level::WARN,
                        format!("cannot watch {}: {e}", ws.prompts_dir().display()),
                    );
                    None
                }
            };
        let engine = Engine::spawn(ws.clone());
        let worker = Worker::spawn(ws.clone(), tx.clone())
            .context("cannot start the workbench's worker thread")?;
        let rt = Runtime {
            engine: &engine,
            worker: &worker,
            paused: &paused,
        };
        let mut app = App::new(ws.clone(), keymap, theme, logs.clone(), &images.protocol());
        logs.push(
            Level::INFO,
            format!(
                "workspace {} · images {}",
                ws.root.display(),
                images.protocol()
            ),
        );
        for fx in app.update(Msg::Tick(Instant::now())) {
            rt.apply(fx, &mut app, &mut images, &mut terminal)?;
        }
        let outcome = event_loop(
            &rt,
            &mut app,
            &mut images,
            &mut terminal,
            &rx,
            &fs_rx,
            opts.debug_fps,
        );
        engine.shutdown();
        outcome
    })();
    terminal::leave();
    result
}

enum Flow {
    Continue,
    Quit,
}

/// What effects are carried out with: the engine, the worker and the input
/// thread's pause switch.
struct Runtime<'a> {
    engine: &'a Engine,
    worker: &'a Worker,
    paused: &'a Arc<AtomicBool>,
}

fn event_loop(
    rt: &Runtime,
    app: &mut App,
    images: &mut Images,
    terminal: &mut Term,
    rx: &Receiver<Msg>,
    fs_rx: &Receiver<PathBuf>,
    debug_fps: bool,
) -> Result<()> {
    let engine = rt.engine;
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    loop {
        // Wait for input (or the next frame), then drain everything pending.
        let mut msgs = Vec::new();
        if let Ok(m) = rx.recv_timeout(FRAME) {
            msgs.push(m);
        }
        msgs.extend(rx.try_iter());
        msgs.extend(fs_rx.try_iter().map(Msg::PromptChanged));
        while let Some(ev) = engine.try_recv() {
            msgs.push(Msg::Engine(ev));
        }
        msgs.push(Msg::Tick(Instant::now()));
        for m in msgs {
            if !matches!(m, Msg::Tick(_)) {
                dirty = true;
            }
            for fx in app.update(m) {
                if let Flow::Quit = rt.apply(fx, app, images, terminal)? {
                    return Ok(());
                }
            }
        }
        dirty |= images.poll();
        // Training charts move with time (ETA) even without events.
        dirty |= app.is_training() && last_draw.elapsed() >= Duration::from_millis(500);
        if dirty && last_draw.elapsed() >= FRAME {
            let started = Instant::now();
            execute!(std::io::stdout(), BeginSynchronizedUpdate)?;
            terminal.draw(|f| view::draw(app, images, f))?;
            execute!(std::io::stdout(), EndSynchronizedUpdate)?;
            if debug_fps {
                app.frame_time = Some(started.elapsed());
            }
            last_draw = Instant::now();
            dirty = false;
        }
    }
}

/// Gives the terminal to another program (editor, shell) and takes it back.
fn with_terminal_released(
    terminal: &mut Term,
    paused: &Arc<AtomicBool>,
    f: impl FnOnce(),
) -> Result<()> {
    paused.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(60));
    terminal::leave();
    f();
    terminal::enter()?;
    terminal::clear(terminal)?;
    paused.store(false, Ordering::SeqCst);
    Ok(())
}

impl Runtime<'_> {
    fn apply(
        &self,
        fx: Effect,
        app: &mut App,
        images: &mut Images,
        terminal: &mut Term,
    ) -> Result<Flow> {
        let paused = self.paused;
        match fx {
            Effect::Engine(cmd) => self.engine.send(cmd),
            Effect::Task(task) => self.worker.send(task),
            Effect::ShowImage(slot, path) => images.show(slot, path),
            Effect::OpenEditor(path) => {
                let editor = std::env::var("VISUAL")
                    .or_else(|_| std::env::var("EDITOR"))
                    .unwrap_or_else(|_| "vi".into());
                let mut outcome = Ok(());
                with_terminal_released(terminal, paused, || {
                    let mut parts = editor.split_whitespace();
                    let program = parts.next().unwrap_or("vi");
                    outcome = std::process::Command::new(program)
                        .args(parts)
                        .arg(&path)
                        .status()
                        .map(|_| ());
                })?;
                match outcome {
                    Ok(()) => app
                        .logs
                        .push(Level::INFO, format!("edited {}", path.display())),
                    Err(e) => app.logs.push(
                        Level::ERROR,
                        format!("cannot run editor `{editor}`: {e}; set $EDITOR"),
                    ),
                }
            }
            Effect::Suspend => {
                with_terminal_released(terminal, paused, || {
                    #[cfg(unix)]
                    // SAFETY: raising SIGTSTP on ourselves is the documented way to suspend;
                    // execution resumes here on SIGCONT (`fg`).
                    unsafe {
                        libc::raise(libc::SIGTSTP);
                    }
                })?;
            }
            Effect::Quit => return Ok(Flow::Quit),
            Effect::QuitKeepTraining {
                concept,
                run_id,
                total_steps,
            } => {
                spawn_headless(&app.ws, &concept, &run_id, total_steps)?;
                return Ok(Flow::Quit);
            }
        }
        let _ = std::io::stdout().flush();
        Ok(Flow::Continue)
    }
}

/// Continues a run in a detached `dreamartist train --resume` whose output goes
/// to the run folder; the dashboard can attach to it later.
fn spawn_headless(ws: &Workspace, concept: &str, run_id: &str, total: u64) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the dreamartist binary")?;
    let run = crate::train::RunDir::at(&ws.concept_dir(concept), run_id);
    let log_path = run.headless_log();
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("{}: cannot create headless.log", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "train",
        concept,
        "--resume",
        run_id,
        "--steps",
        &total.to_string(),
        "-w",
    ])
    .arg(&ws.root)
    .stdin(std::process::Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own session: closing this terminal or SSH connection does not stop it.
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    cmd.spawn().context("cannot start the headless training")?;
    eprintln!(
        "training of <{concept}> continues headless (run {run_id}); log: {}",
        log_path.display()
    );
    Ok(())
}
