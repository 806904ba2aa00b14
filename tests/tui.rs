//! The workbench without a terminal: screens drawn into ratatui's TestBackend
//! (insta snapshots) and flows fed through the app's update function, checking
//! the commands it sends to the engine. The worker thread's tasks are run
//! inline by [`send`], so a flow reads as the user sees it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dreamartist::engine::{EngineCommand, EngineEvent};
use dreamartist::train::run::{StepMetrics, TrainOutcome};
use dreamartist::train::TrainEvent;
use dreamartist::tui::app::{App, Effect, Msg, Popup, TrainStatus};
use dreamartist::tui::images::Images;
use dreamartist::tui::keymap::Keymap;
use dreamartist::tui::logbuf::LogBuffer;
use dreamartist::tui::popups::{ConfirmQuit, EvalPopup};
use dreamartist::tui::tasks::Task;
use dreamartist::tui::theme::Theme;
use dreamartist::tui::view;
use dreamartist::workspace::Workspace;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A workspace folder named `ws` (the status bar shows the folder name).
fn workspace(with_concept: bool) -> (tempfile::TempDir, Workspace) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = Workspace::init(
        &tmp.path().join("ws"),
        fixtures().join("tiny-sd1/model").to_str().unwrap(),
    )
    .unwrap();
    if with_concept {
        dreamartist::concept::add(
            &ws,
            &dreamartist::concept::NewConcept {
                name: "cat".into(),
                references: vec![fixtures().join("references/chelsea.png")],
                preset: "photo".into(),
                pos_vectors: None,
                neg_vectors: None,
                init_text: "*".into(),
                class: None,
                method: None,
            },
        )
        .unwrap();
        std::fs::write(
            ws.prompts_dir().join("beach.toml"),
            "prompt = \"a photo of <cat> on the beach\"\nseed = 3\nsteps = 4\n",
        )
        .unwrap();
    }
    (tmp, ws)
}

fn app(ws: &Workspace) -> App {
    let mut a = App::new(
        ws.clone(),
        Keymap::default_map(),
        Theme::plain(),
        LogBuffer::with_fixed_time("12:00:00"),
        "off",
    );
    send(
        &mut a,
        Msg::Engine(EngineEvent::Ready {
            model: "tiny-sd1".into(),
            device: "cpu".into(),
            family: "SD 1.x".into(),
        }),
    );
    a
}

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

/// Feeds a message, runs every task it leads to inline (as the worker thread
/// would, in order) and feeds their results back; returns the other effects.
fn send(a: &mut App, msg: Msg) -> Vec<Effect> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([msg]);
    while let Some(m) = queue.pop_front() {
        for fx in a.update(m) {
            match fx {
                Effect::Task(task) => queue.push_back(Msg::Done(task.run(&a.ws))),
                other => out.push(other),
            }
        }
    }
    out
}

/// The app's screen with previews off: each image slot shows its file's name.
fn screen(app: &App, w: u16, h: u16) -> String {
    let mut images = Images::off();
    show_images(app, &mut images);
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| view::draw(app, &mut images, f)).unwrap();
    term.backend().to_string()
}

/// Puts the app's current images into `images` (what the runtime does with
/// the app's `ShowImage` effects).
fn show_images(app: &App, images: &mut Images) {
    for fx in app.image_effects() {
        if let Effect::ShowImage(slot, path) = fx {
            images.show(slot, path);
        }
    }
}

fn metrics(step: u64) -> StepMetrics {
    let loss = 1.0 + 0.3 * ((step as f64) * 0.7).sin() - step as f64 * 0.004;
    StepMetrics {
        step,
        loss,
        mse: loss,
        rec: None,
        lr: 0.005,
        lr_neg: 0.005,
        grad_norm_pos: 0.31,
        grad_norm_neg: 0.27,
        it_s: 4.2,
    }
}

/// Starts training from the keyboard and feeds `steps` engine step events.
fn training_app(ws: &Workspace, steps: u64) -> App {
    let mut a = app(ws);
    let fx = send(&mut a, key('t'));
    assert!(
        matches!(fx.as_slice(), [Effect::Engine(EngineCommand::Train(_))]),
        "{fx:?}"
    );
    send(
        &mut a,
        Msg::Engine(EngineEvent::Train(TrainEvent::Started {
            run_id: "20261126-120000".into(),
            run_dir: ws.concept_dir("cat").join("runs/20261126-120000"),
            start_step: 0,
            total_steps: 200,
        })),
    );
    for s in 1..=steps {
        send(
            &mut a,
            Msg::Engine(EngineEvent::Train(TrainEvent::Step(metrics(s)))),
        );
    }
    a
}

#[test]
fn snapshot_empty_workspace() {
    let (_t, ws) = workspace(false);
    insta::assert_snapshot!(screen(&app(&ws), 120, 36));
}

#[test]
fn snapshot_training_with_chart() {
    let (_t, ws) = workspace(true);
    let a = training_app(&ws, 60);
    let s = screen(&a, 120, 36);
    assert!(s.contains("60/200") && s.contains("running"), "{s}");
    insta::assert_snapshot!(s);
}

#[test]
fn snapshot_paused() {
    let (_t, ws) = workspace(true);
    let mut a = training_app(&ws, 20);
    let fx = send(&mut a, key('p'));
    assert!(matches!(
        fx.as_slice(),
        [Effect::Engine(EngineCommand::Pause)]
    ));
    send(&mut a, Msg::Engine(EngineEvent::Paused));
    let fx = send(&mut a, key('p'));
    assert!(matches!(
        fx.as_slice(),
        [Effect::Engine(EngineCommand::Resume)]
    ));
    insta::assert_snapshot!(screen(&a, 120, 36));
}

#[test]
fn snapshot_failed_popup() {
    let (_t, ws) = workspace(true);
    let mut a = training_app(&ws, 5);
    send(
        &mut a,
        Msg::Engine(EngineEvent::TrainFailed(
            "step 6: training diverged (loss, gradient or vectors reached inf); the run stopped"
                .into(),
        )),
    );
    assert!(matches!(
        a.training.as_ref().unwrap().status,
        TrainStatus::Failed(_)
    ));
    insta::assert_snapshot!(screen(&a, 120, 36));
}

#[test]
fn snapshot_help_and_palette() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    send(&mut a, key('?'));
    assert!(matches!(a.popup, Some(Popup::Help(_))));
    insta::assert_snapshot!("help", screen(&a, 120, 36));
    // Below the main screen's keys, each popup's layer of the keymap (scrolling
    // stops at the last line).
    let mut seen = String::new();
    for _ in 0..80 {
        send(&mut a, key('j'));
        seen.push_str(&screen(&a, 120, 36));
    }
    for title in [
        "Quit while training",
        "Full-screen sample",
        "Runs browser",
        "Run comparison",
        "Sort by the next column",
    ] {
        assert!(seen.contains(title), "{title} never shown in help");
    }
    send(&mut a, code(KeyCode::Esc));
    send(
        &mut a,
        Msg::Key(KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL)),
    );
    for c in "gen".chars() {
        send(&mut a, key(c));
    }
    insta::assert_snapshot!("palette", screen(&a, 120, 36));
}

#[test]
fn snapshot_gallery_and_fullscreen() {
    let (_t, ws) = workspace(true);
    let mut a = training_app(&ws, 10);
    for (step, seed) in [(5u64, 1u64), (10, 1)] {
        send(
            &mut a,
            Msg::Engine(EngineEvent::Train(TrainEvent::Sample {
                step,
                path: ws
                    .concept_dir("cat")
                    .join(format!("runs/20261126-120000/samples/step-{step:08}.png")),
                prompt: "a photo of <cat>".into(),
                seed,
            })),
        );
    }
    send(&mut a, key('h'));
    let s = screen(&a, 120, 36);
    assert!(s.contains("Samples 1/2") && s.contains("step    5"), "{s}");
    // The whole path is shown, wrapped after a `/`, never cut.
    assert!(
        s.contains("path    concepts/cat/runs/20261126-120000/samples/")
            && s.contains("        step-00000005.png"),
        "{s}"
    );
    // With previews off, each slot names its file.
    assert!(s.contains("[chelsea.png]") && s.contains("[step-00000005.png]"));
    insta::assert_snapshot!("gallery", s);
    send(&mut a, key('f'));
    let s = screen(&a, 120, 36);
    assert!(
        s.contains("[step-00000005.png]")
            && s.contains("path    concepts/cat/runs/20261126-120000/samples/step-00000005.png"),
        "{s}"
    );
    insta::assert_snapshot!("fullscreen", s);
}

#[test]
fn snapshot_terminal_too_small() {
    let (_t, ws) = workspace(false);
    let s = screen(&app(&ws), 60, 20);
    assert!(s.contains("Terminal too small"));
    insta::assert_snapshot!(s);
}

#[test]
fn three_quick_saves_make_one_generate() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    let file = ws.prompts_dir().join("beach.toml");
    for _ in 0..3 {
        assert!(send(&mut a, Msg::PromptChanged(file.clone())).is_empty());
    }
    // Not yet quiet long enough: nothing.
    let soon = send(&mut a, Msg::Tick(Instant::now()));
    assert!(!soon
        .iter()
        .any(|e| matches!(e, Effect::Engine(EngineCommand::Generate(_)))));
    let later = send(
        &mut a,
        Msg::Tick(Instant::now() + Duration::from_millis(500)),
    );
    let gens: Vec<_> = later
        .iter()
        .filter_map(|e| match e {
            Effect::Engine(EngineCommand::Generate(job)) => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0].source.as_deref(), Some(file.as_path()));
    assert_eq!(gens[0].request.seed, 3);
    // With watch off, saves are ignored.
    send(&mut a, key('w'));
    send(&mut a, Msg::PromptChanged(file));
    let none = send(&mut a, Msg::Tick(Instant::now() + Duration::from_secs(5)));
    assert!(!none
        .iter()
        .any(|e| matches!(e, Effect::Engine(EngineCommand::Generate(_)))));
}

#[test]
fn quit_while_training_asks_then_stops_and_quits() {
    let (_t, ws) = workspace(true);
    let mut a = training_app(&ws, 3);
    assert!(send(&mut a, key('q')).is_empty());
    assert_eq!(a.popup, Some(Popup::ConfirmQuit(ConfirmQuit)));
    let fx = send(&mut a, key('s'));
    assert!(matches!(
        fx.as_slice(),
        [Effect::Engine(EngineCommand::Stop)]
    ));
    let outcome = TrainOutcome {
        run_id: "20261126-120000".into(),
        run_dir: PathBuf::new(),
        positive: PathBuf::from("cat.safetensors"),
        negative: None,
        steps: 3,
        loss: Some(1.0),
        interrupted: true,
    };
    let fx = send(
        &mut a,
        Msg::Engine(EngineEvent::Train(TrainEvent::Finished(outcome.clone()))),
    );
    assert!(matches!(fx.as_slice(), [Effect::Quit]), "{fx:?}");

    // "Keep training headless" hands the run to a detached process.
    let mut b = training_app(&ws, 3);
    send(&mut b, key('q'));
    send(&mut b, key('k'));
    let fx = send(
        &mut b,
        Msg::Engine(EngineEvent::Train(TrainEvent::Finished(outcome))),
    );
    assert!(
        matches!(fx.as_slice(), [Effect::QuitKeepTraining { concept, total_steps: 200, .. }] if concept == "cat"),
        "{fx:?}"
    );
    // Cancel keeps everything going; without training, q quits at once.
    let mut c = training_app(&ws, 1);
    send(&mut c, key('q'));
    assert!(send(&mut c, key('c')).is_empty());
    assert!(c.popup.is_none() && c.is_training());
    let mut d = app(&ws);
    assert!(matches!(send(&mut d, key('q')).as_slice(), [Effect::Quit]));
}

#[test]
fn palette_runs_the_chosen_action() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    send(&mut a, key(':'));
    for c in "train".chars() {
        send(&mut a, key(c));
    }
    let fx = send(&mut a, code(KeyCode::Enter));
    assert!(
        matches!(fx.as_slice(), [Effect::Engine(EngineCommand::Train(_))]),
        "{fx:?}"
    );
}

#[test]
fn add_reference_and_create_concept_from_the_keyboard() {
    let (_t, ws) = workspace(false);
    let mut a = app(&ws);
    send(&mut a, key('a'));
    let photo = fixtures().join("references/chelsea.png");
    for c in photo.to_string_lossy().chars() {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Enter));
    assert!(a.popup.is_none(), "{:?}", a.popup);
    assert_eq!(a.references.len(), 1);
    send(&mut a, key('n'));
    assert!(matches!(a.popup, Some(Popup::NewConcept(_))));
    send(&mut a, code(KeyCode::Enter));
    assert_eq!(a.concepts.len(), 1);
    assert_eq!(a.concepts[0].name, "chelsea");
    // A bad path gives an error popup and copies nothing.
    send(&mut a, key('a'));
    for c in "/nonexistent/x.png".chars() {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Enter));
    assert!(matches!(&a.popup, Some(Popup::Error(e)) if e.message.contains("/nonexistent/x.png")));
    assert_eq!(a.references.len(), 1);
}

/// The form's method field makes a DreamArtist++ concept; the concept list
/// names the method.
#[test]
fn new_concept_form_sets_the_method() {
    let (_t, ws) = workspace(false);
    let mut a = app(&ws);
    send(&mut a, key('a'));
    for c in fixtures()
        .join("references/chelsea.png")
        .to_string_lossy()
        .chars()
    {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Enter));
    send(&mut a, key('n'));
    for _ in 0..5 {
        send(&mut a, code(KeyCode::Tab));
    }
    for _ in 0.."dreamartist".len() {
        send(&mut a, code(KeyCode::Backspace));
    }
    for c in "dreamartist++".chars() {
        send(&mut a, key(c));
    }
    insta::assert_snapshot!("new_concept_form", screen(&a, 120, 36));
    send(&mut a, code(KeyCode::Enter));
    assert!(a.popup.is_none(), "{:?}", a.popup);
    let c = dreamartist::concept::Concept::load(&ws, "chelsea").unwrap();
    assert_eq!(c.train.method, "dreamartist++");
    let s = screen(&a, 120, 36);
    assert!(s.contains("DA++"), "{s}");
}

#[test]
fn attaches_to_a_headless_run_and_follows_its_metrics() {
    let (_t, ws) = workspace(true);
    let run = ws.concept_dir("cat").join("runs/20261126-090000");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("config.toml"),
        "concept = \"cat\"\n[train]\nsteps = 100\n",
    )
    .unwrap();
    let line = |s: u64| format!("{}\n", serde_json::to_string(&metrics(s)).unwrap());
    std::fs::write(
        run.join("metrics.jsonl"),
        (1..=10).map(line).collect::<String>(),
    )
    .unwrap();
    // The headless process holds the run's lock (here: this test process).
    let lock = dreamartist::concept::RunLock::acquire(&dreamartist::train::RunDir::at(
        &ws.concept_dir("cat"),
        "20261126-090000",
    ))
    .unwrap();
    let mut a = app(&ws);
    let t0 = Instant::now();
    send(&mut a, Msg::Tick(t0));
    let view = a.training.as_ref().expect("attached");
    assert_eq!(view.status, TrainStatus::Attached);
    assert_eq!(view.history.step(), 10);
    assert_eq!(view.history.total_steps, 100);
    // The headless process writes more, the last line only half.
    let mut more: String = (11..=14).map(line).collect();
    more.push_str("{\"step\": 15, \"lo");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(run.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, more.as_bytes()).unwrap();
    send(&mut a, Msg::Tick(t0 + Duration::from_secs(3)));
    assert_eq!(a.training.as_ref().unwrap().history.step(), 14);
    let s = screen(&a, 120, 36);
    assert!(s.contains("attached") && s.contains("14/100"), "{s}");
    drop(lock);
}

/// A run stopped from the quit dialog at 226/400, seen by a later workbench:
/// stopped (not attached, no "ETA 0:00"), and its concept is not "new".
#[test]
fn a_stopped_run_shows_as_stopped_not_attached() {
    use dreamartist::concept::{EndKind, EndRecord};
    let (_t, ws) = workspace(true);
    let run = dreamartist::train::RunDir::at(&ws.concept_dir("cat"), "20261126-090000");
    std::fs::create_dir_all(run.checkpoints_dir()).unwrap();
    std::fs::write(
        run.config_path(),
        "concept = \"cat\"\n[train]\nsteps = 400\n",
    )
    .unwrap();
    let line = |s: u64| format!("{}\n", serde_json::to_string(&metrics(s)).unwrap());
    std::fs::write(run.metrics_path(), (1..=226).map(line).collect::<String>()).unwrap();
    std::fs::write(run.checkpoint_path(226), b"x").unwrap();
    run.write_end(&EndRecord {
        outcome: EndKind::Stopped,
        step: 226,
        total_steps: 400,
        loss: Some(0.1),
        ended: 1,
        message: None,
    })
    .unwrap();
    let mut a = app(&ws);
    assert_eq!(a.concepts[0].status.label(), "stopped");
    send(&mut a, Msg::Tick(Instant::now()));
    let view = a.training.as_ref().expect("the latest run is shown");
    assert_eq!(
        view.status,
        TrainStatus::Ended(dreamartist::concept::RunState::Stopped)
    );
    let s = screen(&a, 120, 36);
    assert!(s.contains("stopped") && s.contains("226/400"), "{s}");
    assert!(s.contains("ETA --:--") && !s.contains("ETA 0:00"), "{s}");
    assert!(!s.contains("attached") && !s.contains("3+3 new"), "{s}");
}

#[test]
fn export_key_writes_the_a1111_pair() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    // Not trained yet: a clear error.
    send(&mut a, key('x'));
    assert!(
        matches!(&a.popup, Some(Popup::Error(e)) if e.message.contains("train")),
        "{:?}",
        a.popup
    );
    send(&mut a, code(KeyCode::Esc));
    let v = candle_core::Tensor::zeros((3, 32), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    for word in ["cat", "cat-neg"] {
        let meta = dreamartist::concept::EmbeddingMeta {
            name: word.into(),
            ..Default::default()
        };
        dreamartist::concept::save_embedding(
            &ws.concept_dir("cat").join(format!("{word}.safetensors")),
            &v,
            &meta,
        )
        .unwrap();
    }
    send(&mut a, key('x'));
    assert!(a.popup.is_none(), "{:?}", a.popup);
    for word in ["cat", "cat-neg"] {
        assert!(ws
            .root
            .join(format!("exports/a1111/{word}.safetensors"))
            .is_file());
    }
}

#[test]
fn training_from_the_dashboard_renders_previews() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    let fx = send(&mut a, key('t'));
    match fx.as_slice() {
        [Effect::Engine(EngineCommand::Train(req))] => {
            assert_eq!(req.config.steps, 1500);
            assert_eq!(
                req.config.sample_every, 150,
                "previews every tenth of the run"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn eval_popup_shows_results_and_launches_an_evaluation() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    send(&mut a, key('E'));
    assert!(
        matches!(&a.popup, Some(Popup::Eval(EvalPopup { table: Some(t), .. })) if t.is_empty())
    );
    assert!(screen(&a, 120, 36).contains("No evaluation yet. Press Enter to run one"));
    let fx = send(&mut a, code(KeyCode::Enter));
    match fx.as_slice() {
        [Effect::Engine(EngineCommand::Eval { concept, clip, .. })] => {
            assert_eq!(concept, "cat");
            assert_eq!(clip, dreamartist::eval::DEFAULT_CLIP);
        }
        other => panic!("{other:?}"),
    }
    send(
        &mut a,
        Msg::Engine(EngineEvent::EvalDone {
            concept: "cat".into(),
            table: vec![
                "target  fidelity  text  diversity".into(),
                "final   0.91  0.30  0.12".into(),
            ],
        }),
    );
    let s = screen(&a, 120, 36);
    assert!(
        s.contains("Evaluation <cat>") && s.contains("0.91") && s.contains("done"),
        "{s}"
    );
}

#[test]
fn update_leaves_file_work_to_the_worker() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    let only_task = |fx: Vec<Effect>| match fx.as_slice() {
        [Effect::Task(t)] => t.clone(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        only_task(a.update(key('x'))),
        Task::Export { concept } if concept == "cat"
    ));
    assert!(matches!(
        only_task(a.update(key('N'))),
        Task::NewPrompt { .. }
    ));
    assert!(matches!(
        only_task(a.update(key('g'))),
        Task::LoadPrompt { .. }
    ));
    assert!(matches!(
        only_task(a.update(key('E'))),
        Task::LoadEvals { .. }
    ));
    assert!(
        matches!(&a.popup, Some(Popup::Eval(p)) if p.table.is_none() && p.status.contains("reading"))
    );
    a.update(code(KeyCode::Esc));
    // Training shows as starting at once; the concept is read on the worker.
    assert!(matches!(
        only_task(a.update(key('t'))),
        Task::LoadConcept { resume: false, .. }
    ));
    assert_eq!(
        a.training.as_ref().map(|t| t.status.clone()),
        Some(TrainStatus::Starting)
    );
    let fx = a.update(Msg::Tick(Instant::now()));
    assert!(fx.iter().any(|e| matches!(e, Effect::Task(Task::Scan))));
    // Nothing was written while the tasks wait.
    assert!(!ws.root.join("exports").exists());
    assert_eq!(std::fs::read_dir(ws.prompts_dir()).unwrap().count(), 1);

    // Adding a reference: the popup closes, the copy waits for the worker.
    let (_t2, empty) = workspace(false);
    let mut b = app(&empty);
    b.update(key('a'));
    for c in fixtures()
        .join("references/chelsea.png")
        .to_string_lossy()
        .chars()
    {
        b.update(key(c));
    }
    let task = only_task(b.update(code(KeyCode::Enter)));
    assert!(matches!(task, Task::ImportReference(_)) && b.popup.is_none());
    assert!(std::fs::read_dir(empty.references_dir()).map_or(true, |mut d| d.next().is_none()));
    b.update(Msg::Done(task.run(&b.ws)));
    assert_eq!(b.references.len(), 1);
}

#[test]
fn the_worker_thread_answers_with_messages() {
    let (_t, ws) = workspace(true);
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = dreamartist::tui::tasks::Worker::spawn(ws.clone(), tx).unwrap();
    worker.send(Task::Scan);
    worker.send(Task::LoadEvals {
        concept: "cat".into(),
    });
    match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
        Msg::Done(dreamartist::tui::tasks::Done::Scanned(scan)) => {
            assert_eq!(scan.concepts.len(), 1);
            assert_eq!(scan.prompts.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Msg::Done(dreamartist::tui::tasks::Done::EvalsLoaded { .. })
    ));
}

#[test]
fn popups_take_their_keys_and_hints_from_the_keymap() {
    let (_t, ws) = workspace(true);
    let mut keymap = Keymap::default_map();
    keymap
        .overlay_toml(
            "[help]\nscroll_down = { keys = [\"n\"] }\n\
             [form]\ncancel = { keys = [\"Ctrl-g\"] }\n\
             [error]\ndismiss = { keys = [\"x\", \"Esc\"] }\n\
             [confirm_quit]\nstop = { keys = [\"y\"] }\n\
             [fullscreen]\nclose = { keys = [\"z\"] }\n",
        )
        .unwrap();
    let mut a = App::new(
        ws.clone(),
        keymap,
        Theme::plain(),
        LogBuffer::with_fixed_time("12:00:00"),
        "off",
    );
    send(
        &mut a,
        Msg::Engine(EngineEvent::Ready {
            model: "tiny-sd1".into(),
            device: "cpu".into(),
            family: "SD 1.x".into(),
        }),
    );
    // Help: n scrolls now, and any unbound key (j) closes.
    send(&mut a, key('?'));
    send(&mut a, key('n'));
    assert!(matches!(&a.popup, Some(Popup::Help(h)) if h.scroll == 1));
    assert!(screen(&a, 120, 36).contains("Help · keys (Esc closes, n/k scroll)"));
    send(&mut a, key('j'));
    assert!(a.popup.is_none());
    // Forms: Esc no longer cancels, Ctrl-g does; the hint says so.
    send(&mut a, key('a'));
    send(&mut a, code(KeyCode::Esc));
    assert!(matches!(a.popup, Some(Popup::AddReference(_))));
    assert!(screen(&a, 120, 36).contains("Enter adds (copied into references/), C-g cancels"));
    send(
        &mut a,
        Msg::Key(KeyEvent::new(KeyCode::Char('g'), KeyModifiers::CONTROL)),
    );
    assert!(a.popup.is_none());
    // Errors: dismissed by x or Esc, no longer by Enter.
    send(&mut a, key('r'));
    assert!(screen(&a, 120, 36).contains("x or Esc to dismiss"));
    send(&mut a, code(KeyCode::Enter));
    assert!(matches!(a.popup, Some(Popup::Error(_))));
    send(&mut a, key('x'));
    assert!(a.popup.is_none());
    // Quitting while training: y stops; s is a stray key now.
    send(&mut a, key('t'));
    assert!(a.is_training());
    send(&mut a, key('q'));
    assert!(screen(&a, 120, 36).contains(" y  stop, save a checkpoint and quit"));
    assert!(send(&mut a, key('s')).is_empty());
    assert!(matches!(
        send(&mut a, key('y')).as_slice(),
        [Effect::Engine(EngineCommand::Stop)]
    ));
    // Full screen: z closes, Esc does not.
    send(
        &mut a,
        Msg::Engine(EngineEvent::Train(TrainEvent::Sample {
            step: 1,
            path: ws.root.join("s.png"),
            prompt: "p".into(),
            seed: 1,
        })),
    );
    send(&mut a, key('f'));
    assert!(screen(&a, 120, 36).contains("Sample (z closes)"));
    send(&mut a, code(KeyCode::Esc));
    assert!(matches!(a.popup, Some(Popup::Fullscreen(_))));
    send(&mut a, key('z'));
    assert!(a.popup.is_none());
}

#[test]
fn a_sample_keeps_the_prompt_its_job_was_made_from() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    let fx = send(&mut a, key('g'));
    let job = match fx.as_slice() {
        [Effect::Engine(EngineCommand::Generate(job))] => job.clone(),
        other => panic!("{other:?}"),
    };
    // The file changes before the image arrives: the sample shows what was rendered.
    std::fs::write(
        ws.prompts_dir().join("beach.toml"),
        "prompt = \"something else\"\n",
    )
    .unwrap();
    send(
        &mut a,
        Msg::Engine(EngineEvent::Sample {
            id: job.id,
            source: job.source.clone(),
            path: ws.root.join("outputs/beach/1.png"),
            seed: 3,
        }),
    );
    assert_eq!(a.samples[0].prompt, "a photo of <cat> on the beach");
}

#[test]
fn stopping_before_the_concept_is_read_starts_nothing() {
    let (_t, ws) = workspace(true);
    let mut a = app(&ws);
    let task = match a.update(key('t')).as_slice() {
        [Effect::Task(t)] => t.clone(),
        other => panic!("{other:?}"),
    };
    // Quit (stop and save) while the concept is still being read.
    a.update(key('q'));
    assert!(matches!(
        a.update(key('s')).as_slice(),
        [Effect::Engine(EngineCommand::Stop)]
    ));
    let fx = a.update(Msg::Done(task.clone().run(&a.ws)));
    assert!(matches!(fx.as_slice(), [Effect::Quit]), "{fx:?}");
    assert!(a.training.is_none());
    // Without quitting: no training request, and t works again.
    let mut b = app(&ws);
    b.update(key('t'));
    b.update(key('s'));
    assert!(b.update(Msg::Done(task.run(&b.ws))).is_empty());
    assert!(!b.is_training());
    assert!(matches!(
        send(&mut b, key('t')).as_slice(),
        [Effect::Engine(EngineCommand::Train(_))]
    ));
}

/// Draws until every preview has come back from the image threads and is on
/// screen at its final size (the threads decode and encode in the background,
/// as in the workbench); panics if that takes over a minute.
fn settle(app: &App, images: &mut Images, term: &mut Terminal<TestBackend>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        images.poll();
        term.draw(|f| view::draw(app, images, f)).unwrap();
        // Drawing asks for any resize it needs: not busy after a draw means drawn.
        if !images.busy() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the previews never finished encoding"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The bounding box (x0, y0, x1, y1) of the cells with an RGB colour inside
/// `area` (with the plain theme only image cells have one).
fn coloured_box(
    buf: &ratatui::buffer::Buffer,
    area: ratatui::layout::Rect,
) -> (u16, u16, u16, u16) {
    let mut bbox = (u16::MAX, u16::MAX, 0, 0);
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            let c = &buf[(x, y)];
            if matches!(c.fg, ratatui::style::Color::Rgb(..))
                || matches!(c.bg, ratatui::style::Color::Rgb(..))
            {
                bbox = (bbox.0.min(x), bbox.1.min(y), bbox.2.max(x), bbox.3.max(y));
            }
        }
    }
    bbox
}

fn rgb(p: image::Rgb<u8>) -> ratatui::style::Color {
    ratatui::style::Color::Rgb(p[0], p[1], p[2])
}

#[test]
fn halfblock_previews_fill_their_panes_with_the_images_colours() {
    // The demo's 32×32 reference, and a training sample beside it.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("references/purple_cross.png");
    let pixels = image::open(&demo).unwrap().to_rgb8();
    assert_eq!(pixels.dimensions(), (32, 32));
    let (_t, ws) = workspace(true);
    std::fs::copy(&demo, ws.references_dir().join("purple_cross.png")).unwrap();
    let sample = ws.root.join("outputs/purple_cross.png");
    std::fs::create_dir_all(sample.parent().unwrap()).unwrap();
    std::fs::copy(&demo, &sample).unwrap();
    let mut a = training_app(&ws, 3);
    send(
        &mut a,
        Msg::Engine(EngineEvent::Train(TrainEvent::Sample {
            step: 3,
            path: sample,
            prompt: "a photo of <cat>".into(),
            seed: 1,
        })),
    );
    // Select the demo reference (the second one, after chelsea.png).
    a.focus = dreamartist::tui::app::PaneId::References;
    send(&mut a, key('j'));
    assert!(a.references[a.sel_reference].ends_with("purple_cross.png"));

    let mut images = Images::new(Some(ratatui_image::picker::Picker::halfblocks()));
    show_images(&a, &mut images);
    let mut term = Terminal::new(TestBackend::new(120, 36)).unwrap();
    settle(&a, &mut images, &mut term);
    let buf = term.backend().buffer().clone();
    insta::assert_snapshot!("halfblocks", term.backend().to_string());

    // The references pane's preview (inside its border, below the list):
    // scaled up from 32 pixels to its full height or width.
    let refs = ratatui::layout::Rect::new(1, 4, 28, 10);
    let (x0, y0, x1, y1) = coloured_box(&buf, refs);
    let (w, h) = (x1 + 1 - x0, y1 + 1 - y0);
    assert!(
        w >= refs.width - 1 || h >= refs.height - 1,
        "the preview is {w}×{h} cells in a {}×{} area",
        refs.width,
        refs.height
    );
    assert!(
        w > 16,
        "a 32-pixel image at native size would be 3 cells wide: {w}"
    );
    // Its colours are the image's: the corner is the yellow background, the
    // centre the purple cross (upper half-block = fg, lower = bg).
    let corner = &buf[(x0, y0)];
    assert_eq!(corner.fg, rgb(*pixels.get_pixel(0, 0)), "{corner:?}");
    let centre = &buf[((x0 + x1) / 2, (y0 + y1) / 2)];
    let purple = rgb(*pixels.get_pixel(16, 16));
    assert!(centre.fg == purple || centre.bg == purple, "{centre:?}");

    // The samples pane (6 rows of pictures above 6 of metadata): the concept's
    // reference (chelsea) left, the 32-pixel sample right, scaled up to the
    // full height of its half.
    let (lx0, _, lx1, _) = coloured_box(&buf, ratatui::layout::Rect::new(31, 16, 26, 6));
    assert!(
        lx0 == 31 && lx1 > lx0,
        "the reference is drawn: {lx0}..{lx1}"
    );
    let (_, sy0, _, sy1) = coloured_box(&buf, ratatui::layout::Rect::new(57, 16, 26, 6));
    assert_eq!((sy0, sy1), (16, 21), "the sample fills its half's height");
}

#[test]
fn a_panic_restores_the_terminal_before_its_message() {
    use dreamartist::tui::terminal;
    use std::sync::{Arc, Mutex};
    // The workbench's hook with the terminal swapped for a log: raw mode off
    // and the escapes first, then the previous hook's message. Panics of
    // other tests' threads meanwhile go to the real hook.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let me = std::thread::current().id();
    let real = Arc::new(std::panic::take_hook());
    let (l1, l2, r1) = (log.clone(), log.clone(), real.clone());
    let previous = Box::new(move |info: &std::panic::PanicHookInfo<'_>| {
        if std::thread::current().id() == me {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or("?");
            l1.lock().unwrap().push(format!("message: {msg}"));
        } else {
            r1(info);
        }
    });
    let restore = move || {
        let mut out = Vec::new();
        let raw_log = l2.clone();
        let _ = terminal::restore(
            &mut out,
            || {
                raw_log.lock().unwrap().push("raw mode off".into());
                Ok(())
            },
            true,
        );
        l2.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&out).to_string());
    };
    std::panic::set_hook(terminal::panic_hook(previous, restore));
    let caught = std::panic::catch_unwind(|| panic!("boom in a pane"));
    std::panic::set_hook(Box::new(move |info| real(info)));
    assert!(caught.is_err());
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], "raw mode off");
    assert!(
        log[1].contains("\x1b[?1049l") && log[1].contains("\x1b[?25h"),
        "alternate screen left, cursor shown: {:?}",
        log[1]
    );
    assert_eq!(log[2], "message: boom in a pane");
}

#[test]
fn no_color_wins_over_every_theme() {
    use std::ffi::OsStr;
    let (_t, mut ws) = workspace(true);
    ws.config.theme = Some("catppuccin-mocha".into());
    let t = Theme::resolve(Some("light"), &ws, Some(OsStr::new("1"))).unwrap();
    assert!(t.monochrome);
    // Empty NO_COLOR is unset (no-color.org); then --theme, then the workspace's.
    assert_eq!(
        Theme::resolve(Some("light"), &ws, Some(OsStr::new("")))
            .unwrap()
            .name,
        "light"
    );
    assert_eq!(
        Theme::resolve(None, &ws, None).unwrap().name,
        "catppuccin-mocha"
    );
    // A screen in the NO_COLOR theme has no colour anywhere (images aside).
    let mut a = training_app(&ws, 30);
    a.theme = t;
    send(&mut a, key('?'));
    let mut term = Terminal::new(TestBackend::new(120, 36)).unwrap();
    term.draw(|f| view::draw(&a, &mut Images::off(), f))
        .unwrap();
    let coloured = term
        .backend()
        .buffer()
        .content()
        .iter()
        .filter(|c| c.fg != ratatui::style::Color::Reset || c.bg != ratatui::style::Color::Reset)
        .count();
    assert_eq!(coloured, 0);
    // The dark theme does colour it (so the check above can fail).
    a.theme = Theme::dark();
    term.draw(|f| view::draw(&a, &mut Images::off(), f))
        .unwrap();
    assert!(term
        .backend()
        .buffer()
        .content()
        .iter()
        .any(|c| c.fg != ratatui::style::Color::Reset));
}

/// A training sample at `step` (its file need not exist: previews are off).
fn sample_at(ws: &Workspace, step: u64) -> Msg {
    Msg::Engine(EngineEvent::Train(TrainEvent::Sample {
        step,
        path: ws
            .concept_dir("cat")
            .join(format!("runs/20261126-120000/samples/step-{step:08}.png")),
        prompt: "a photo of <cat>".into(),
        seed: 1,
    }))
}

#[test]
fn the_grid_shows_the_latest_samples_and_follows_the_selection() {
    use dreamartist::tui::app::ImageSlot;
    let (_t, ws) = workspace(true);
    let mut a = training_app(&ws, 10);
    for step in 1..=8 {
        send(&mut a, sample_at(&ws, step));
    }
    let fx = send(&mut a, key('G'));
    let grid: Vec<(usize, Option<String>)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::ShowImage(ImageSlot::Grid(i), p) => Some((
                *i,
                p.as_ref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().to_string()),
            )),
            _ => None,
        })
        .collect();
    // The latest six: steps 3..=8.
    assert_eq!(grid.len(), 6, "{fx:?}");
    assert_eq!(grid[0], (0, Some("step-00000003.png".into())));
    assert_eq!(grid[5], (5, Some("step-00000008.png".into())));
    let s = screen(&a, 120, 36);
    assert!(s.contains("Samples 3–8 of 8 · grid"), "{s}");
    assert!(s.contains("> step 8") && s.contains("  step 3"), "{s}");
    insta::assert_snapshot!("grid", s);
    // Moving left past the page shows the page before: steps 1 and 2.
    for _ in 0..6 {
        send(&mut a, key('h'));
    }
    let s = screen(&a, 120, 36);
    assert!(
        s.contains("Samples 1–2 of 8 · grid") && s.contains("> step 2"),
        "{s}"
    );
    // G again: the single sample, the grid's slots cleared.
    let fx = send(&mut a, key('G'));
    assert!(fx
        .iter()
        .all(|e| matches!(e, Effect::ShowImage(ImageSlot::Grid(_), None))));
    assert!(screen(&a, 120, 36).contains("Samples 2/8"));
    // Full screen has its own slot, filled when it opens.
    let fx = send(&mut a, key('f'));
    assert!(
        matches!(fx.as_slice(), [Effect::ShowImage(ImageSlot::Fullscreen, Some(p))] if p.ends_with("step-00000002.png")),
        "{fx:?}"
    );
}

/// The top label of the loss chart's y axis on a captured screen.
fn chart_top(s: &str) -> f64 {
    let line = s.lines().nth(1).unwrap();
    line.split(['│', '┃'])
        .find_map(|piece| piece.trim().parse().ok())
        .unwrap_or_else(|| panic!("no label: {line}"))
}

#[test]
fn the_loss_chart_is_not_flattened_by_the_first_step() {
    let (_t, ws) = workspace(true);
    let mut a = training_app(&ws, 0);
    let spike = |step: u64| StepMetrics {
        loss: if step == 1 {
            0.53
        } else {
            0.03 + 0.015 * ((step as f64) * 0.9).sin()
        },
        ..metrics(step)
    };
    for s in 1..=300 {
        send(
            &mut a,
            Msg::Engine(EngineEvent::Train(TrainEvent::Step(spike(s)))),
        );
    }
    let s = screen(&a, 120, 36);
    let top = chart_top(&s);
    assert!(top < 0.06, "the y axis reaches {top}:\n{s}");
    // v: log scale; H: full history (both in the title).
    send(&mut a, key('v'));
    let s = screen(&a, 120, 36);
    assert!(s.contains("· recent · log"), "{s}");
    send(&mut a, key('H'));
    assert!(screen(&a, 120, 36).contains("· full history · log"));
    send(&mut a, key('v'));
    let s = screen(&a, 120, 36);
    assert!(s.contains("· full history") && !s.contains("· log"), "{s}");
}

/// Writes run `id` of concept `cat` by hand: its config (the concept's
/// `[train]` with `changes`), metrics with these losses, an end record, and a
/// preview sample every 10 steps.
fn write_run(
    ws: &Workspace,
    id: &str,
    changes: &[(&str, toml::Value)],
    losses: &[f64],
    end: dreamartist::concept::EndKind,
) {
    use dreamartist::concept::{Concept, EndRecord, RunDir};
    let concept = Concept::load(ws, "cat").unwrap();
    let run = RunDir::at(&ws.concept_dir("cat"), id);
    std::fs::create_dir_all(run.samples_dir()).unwrap();
    let mut train = toml::Table::try_from(&concept.train).unwrap();
    for (k, v) in changes {
        train.insert(k.to_string(), v.clone());
    }
    let steps = train["steps"].as_integer().unwrap() as u64;
    let mut cfg = toml::Table::new();
    cfg.insert("concept".into(), "cat".into());
    cfg.insert("preset".into(), "photo".into());
    cfg.insert("train".into(), toml::Value::Table(train));
    std::fs::write(run.config_path(), toml::to_string(&cfg).unwrap()).unwrap();
    let mut w = run.metrics_writer().unwrap();
    for (i, l) in losses.iter().enumerate() {
        w.append(&StepMetrics {
            loss: *l,
            mse: *l,
            ..metrics(i as u64 + 1)
        })
        .unwrap();
        if (i + 1) % 10 == 0 {
            std::fs::write(run.sample_path(i as u64 + 1), b"png").unwrap();
        }
    }
    w.flush().unwrap();
    run.write_end(&EndRecord {
        outcome: end,
        step: losses.len() as u64,
        total_steps: steps,
        loss: losses.last().copied(),
        ended: 1_800_000_000,
        message: None,
    })
    .unwrap();
}

/// Concept `cat` with three runs: two of a cfg sweep (finished) and one
/// stopped, tagged `best`.
fn runs_workspace() -> (tempfile::TempDir, Workspace) {
    use dreamartist::concept::EndKind;
    let (t, ws) = workspace(true);
    let curve = |scale: f64, n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| scale * (0.5 + 0.3 * (-(i as f64) / 8.0).exp() + 0.02 * (i as f64).sin()))
            .collect()
    };
    write_run(
        &ws,
        "20260301-100000",
        &[("train_cfg", "1".into()), ("steps", 30.into())],
        &curve(1.0, 30),
        EndKind::Finished,
    );
    write_run(
        &ws,
        "20260301-110000",
        &[("train_cfg", "3".into()), ("steps", 30.into())],
        &curve(0.6, 30),
        EndKind::Finished,
    );
    write_run(
        &ws,
        "20260302-090000",
        &[("steps", 40.into()), ("seed", 7.into())],
        &curve(0.8, 12),
        EndKind::Stopped,
    );
    dreamartist::concept::RunDir::at(&ws.concept_dir("cat"), "20260302-090000")
        .set_tags(&["best".into()])
        .unwrap();
    (t, ws)
}

fn browser(a: &App) -> &dreamartist::tui::popups::RunsBrowser {
    match &a.popup {
        Some(Popup::Runs(b)) => b,
        other => panic!("no runs browser: {other:?}"),
    }
}

fn visible_ids(a: &App) -> Vec<String> {
    browser(a).visible().iter().map(|r| r.id.clone()).collect()
}

/// A sweep's runs on Slurm: the browser's slurm column, and cancel (asks
/// first; `n` does nothing, `y` runs scancel, whose refusal is shown).
#[test]
fn runs_browser_shows_slurm_tasks_and_cancels_with_confirmation() {
    use dreamartist::tui::sweeps::SlurmCell;
    let (_t, ws) = runs_workspace();
    let mut a = app(&ws);
    send(&mut a, key('B'));
    let s = screen(&a, 160, 24);
    assert!(
        !s.contains("slurm") && !s.contains("cancel Slurm"),
        "no Slurm runs: no column\n{s}"
    );
    let cell = |run: &str, index: usize, label: &str, queued: bool| SlurmCell {
        run: run.into(),
        job: "999999".into(),
        index,
        label: label.into(),
        queued,
    };
    if let Some(Popup::Runs(b)) = a.popup.as_mut() {
        b.slurm = vec![
            cell("20260301-100000", 0, "RUNNING", true),
            cell("20260301-110000", 1, "ended", false),
        ];
        b.sweeps = vec!["sweep grid (Slurm job 999999: 1 RUNNING): 1 finished, 1 running".into()];
    }
    let s = screen(&a, 160, 24);
    assert!(
        s.contains("slurm") && s.contains("RUNNING 999999_0") && s.contains("ended 999999_1"),
        "{s}"
    );
    assert!(
        s.contains("X cancel Slurm task") && s.contains("Slurm job 999999: 1 RUNNING"),
        "{s}"
    );
    insta::assert_snapshot!("runs_browser_slurm", s);

    // The second run's task has ended: nothing to cancel.
    send(&mut a, key('j'));
    send(&mut a, key('X'));
    assert!(
        browser(&a).status.contains("no longer queued"),
        "{}",
        browser(&a).status
    );
    // The third has no task at all.
    send(&mut a, key('j'));
    send(&mut a, key('X'));
    assert!(
        browser(&a).status.contains("has no Slurm task"),
        "{}",
        browser(&a).status
    );

    // The first: asks, `n` keeps it.
    send(&mut a, key('k'));
    send(&mut a, key('k'));
    send(&mut a, key('X'));
    let s = screen(&a, 160, 24);
    assert!(
        s.contains("Cancel Slurm task 999999_0 of run 20260301-100000"),
        "{s}"
    );
    send(&mut a, key('n'));
    assert_eq!(browser(&a).status, "cancel: nothing done");
    // `y` cancels it if the queue still holds it: here it does not (no such
    // job, or no Slurm at all), and the browser says so.
    send(&mut a, key('X'));
    send(&mut a, key('y'));
    let status = &browser(&a).status;
    assert!(
        status.starts_with("error:")
            && (status.contains("no longer in the queue") || status.contains("not on PATH")),
        "{status}"
    );
}

#[test]
fn snapshot_runs_browser_sorted_and_filtered() {
    let (_t, ws) = runs_workspace();
    let mut a = app(&ws);
    send(&mut a, key('B'));
    assert_eq!(
        visible_ids(&a),
        ["20260301-100000", "20260301-110000", "20260302-090000"]
    );
    let s = screen(&a, 160, 24);
    assert!(
        s.contains("stopped") && s.contains("train_cfg=\"3\""),
        "{s}"
    );
    insta::assert_snapshot!("runs_browser", s);

    // o cycles the sort column (id → status → step → loss), O flips the order.
    for _ in 0..3 {
        send(&mut a, key('o'));
    }
    assert_eq!(browser(&a).column(), dreamartist::runs::RunColumn::Loss);
    send(&mut a, key('O'));
    assert_eq!(
        visible_ids(&a),
        ["20260301-100000", "20260302-090000", "20260301-110000"],
        "largest final loss first"
    );
    // A filter over status/tags/note/options.
    send(&mut a, key('/'));
    for c in "finished cfg=\"3".chars() {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Enter));
    assert_eq!(visible_ids(&a), ["20260301-110000"]);
    insta::assert_snapshot!("runs_sorted_filtered", screen(&a, 160, 24));
    send(&mut a, key('/'));
    send(&mut a, code(KeyCode::Esc));
    assert_eq!(visible_ids(&a).len(), 3, "Esc clears the filter");
    send(&mut a, key('/'));
    for c in "BEST".chars() {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Enter));
    assert_eq!(visible_ids(&a), ["20260302-090000"], "tags, any case");
    // Esc leaves for the workbench.
    send(&mut a, code(KeyCode::Esc));
    assert!(a.popup.is_none());
}

#[test]
fn the_note_form_writes_the_runs_note_and_tags() {
    let (_t, ws) = runs_workspace();
    let mut a = app(&ws);
    send(&mut a, key('B'));
    send(&mut a, key('j'));
    send(&mut a, key('n'));
    for c in "cfg 3 looks sharper".chars() {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Tab));
    for c in "keep, cfg3".chars() {
        send(&mut a, key(c));
    }
    insta::assert_snapshot!("runs_note_form", screen(&a, 160, 24));
    send(&mut a, code(KeyCode::Enter));
    let run = dreamartist::concept::RunDir::at(&ws.concept_dir("cat"), "20260301-110000");
    assert_eq!(run.note().trim(), "cfg 3 looks sharper");
    assert_eq!(run.tags(), ["keep", "cfg3"]);
    // The browser re-read the run: the table shows them.
    let r = browser(&a)
        .runs
        .as_ref()
        .unwrap()
        .iter()
        .find(|r| r.id == "20260301-110000")
        .unwrap();
    assert_eq!(r.tags, ["keep", "cfg3"]);
    // An emptied note removes note.md; the tags stay.
    send(&mut a, key('n'));
    for _ in 0.."cfg 3 looks sharper".len() {
        send(&mut a, code(KeyCode::Backspace));
    }
    send(&mut a, code(KeyCode::Enter));
    assert!(!run.note_path().exists());
    assert_eq!(run.tags(), ["keep", "cfg3"]);
    assert!(browser(&a).status.starts_with("saved"));
}

#[test]
fn promoting_a_run_asks_first_and_reports_failures_in_the_browser() {
    let (_t, ws) = runs_workspace();
    let mut a = app(&ws);
    send(&mut a, key('B'));
    send(&mut a, key('P'));
    assert!(screen(&a, 160, 24).contains("active pair? y yes / n no"));
    send(&mut a, key('n'));
    assert_eq!(browser(&a).status, "promote cancelled");
    // These hand-written runs have no vectors: the library says so, and the
    // workbench stays up with the browser open.
    send(&mut a, key('P'));
    send(&mut a, key('y'));
    let b = browser(&a);
    assert!(b.status.starts_with("error"), "{}", b.status);
    assert!(!ws.concept_dir("cat").join("cat.safetensors").exists());
    // Export asks for a format, then fails the same way.
    send(&mut a, key('x'));
    send(&mut a, code(KeyCode::Tab));
    send(&mut a, code(KeyCode::Tab));
    assert!(screen(&a, 160, 24).contains("[kohya]"));
    send(&mut a, code(KeyCode::Enter));
    assert!(browser(&a).status.starts_with("error"));
}

#[test]
fn snapshot_compare_two_runs() {
    let (_t, ws) = runs_workspace();
    let mut a = app(&ws);
    send(&mut a, key('B'));
    send(&mut a, key('c'));
    assert!(browser(&a).status.contains("mark 2"), "needs two marks");
    send(&mut a, key(' '));
    send(&mut a, key(' '));
    assert_eq!(browser(&a).marked, ["20260301-100000", "20260301-110000"]);
    send(&mut a, key('c'));
    let Some(Popup::Compare(c)) = &a.popup else {
        panic!("no compare view: {:?}", a.popup);
    };
    let curves = c.curves.as_ref().expect("curves read on the worker");
    assert_eq!(curves.len(), 2);
    assert_eq!(curves[1].raw.len(), 30);
    assert_eq!(c.steps(), [10, 20, 30]);
    let s = screen(&a, 160, 40);
    assert!(
        s.contains("━ A 20260301-100000") && s.contains("━ B 20260301-110000"),
        "{s}"
    );
    // Samples at the latest matching step (placeholders with previews off),
    // and the options that differ.
    assert!(
        s.contains("[step-00000030.png]") && s.contains("train_cfg"),
        "{s}"
    );
    insta::assert_snapshot!("compare_two_runs", s);
    send(&mut a, key('h'));
    assert!(screen(&a, 160, 40).contains("step 20"));
    // Esc goes back to the browser, marks kept.
    send(&mut a, code(KeyCode::Esc));
    assert_eq!(browser(&a).marked.len(), 2);
}

#[test]
fn a_sweep_file_that_does_not_exist_is_an_error_not_a_crash() {
    let (_t, ws) = runs_workspace();
    let mut a = app(&ws);
    send(&mut a, key('W'));
    assert!(matches!(a.popup, Some(Popup::Sweep(_))));
    for c in "nope.toml".chars() {
        send(&mut a, key(c));
    }
    send(&mut a, code(KeyCode::Enter));
    match &a.popup {
        Some(Popup::Error(e)) => assert!(format!("{e:?}").contains("no such sweep file")),
        other => panic!("{other:?}"),
    }
}
