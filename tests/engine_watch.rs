//! Watch mode and the engine's latest-wins generation slot.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dreamartist::engine::{Engine, EngineCommand, EngineEvent, GenerateJob};
use dreamartist::generate::GenerateRequest;
use dreamartist::workspace::Workspace;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn new_workspace(dir: &Path) -> Workspace {
    Workspace::init(dir, fixtures().join("tiny-sd1/model").to_str().unwrap()).unwrap()
}

/// Saves like vim: write a temporary file, then rename it over the target.
fn save_like_vim(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[cfg(unix)]
#[test]
fn watch_regenerates_on_save_survives_bad_files_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    new_workspace(&ws);
    // Killed when the test ends, however it ends; every wait has a deadline.
    let child = common::Spawned::start(Command::new(env!("CARGO_BIN_EXE_dreamartist")).args([
        "watch",
        "-w",
        ws.to_str().unwrap(),
        "--json",
    ]));
    let wait_for = |event: &str| -> serde_json::Value {
        let line = child.wait_for_line(Duration::from_secs(30), |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["event"] == event)
        });
        serde_json::from_str(&line).unwrap()
    };
    wait_for("ready");
    // Give the watcher a moment to arm before the first save.
    std::thread::sleep(Duration::from_millis(300));

    let file = ws.join("prompts/cat.toml");
    let saved = Instant::now();
    save_like_vim(
        &file,
        "prompt = \"a photo of a cat\"\nseed = 5\nsteps = 4\n",
    );
    let sample = wait_for("sample");
    let latency = saved.elapsed();
    eprintln!("watch: save to PNG in {latency:?}");
    let png = PathBuf::from(sample["path"].as_str().unwrap());
    assert!(png.is_file());
    assert!(png.starts_with(ws.join("outputs/cat")));

    // An invalid save is reported and the watcher keeps going.
    save_like_vim(&file, "prompt = \"a cat\"\nsteps = \"many\"\n");
    let invalid = wait_for("invalid");
    assert!(invalid["error"].as_str().unwrap().contains("cat.toml"));
    save_like_vim(
        &file,
        "prompt = \"a photo of a dog\"\nseed = 6\nsteps = 4\n",
    );
    let again = wait_for("sample");
    assert_eq!(again["seed"], 6);

    // A burst of saves renders once, with the latest content.
    for seed in [7, 8, 9] {
        save_like_vim(
            &file,
            &format!("prompt = \"a bird\"\nseed = {seed}\nsteps = 4\n"),
        );
    }
    let burst = wait_for("sample");
    assert_eq!(burst["seed"], 9, "{burst}");
    while let Some(line) = child.next_line(Duration::from_millis(500)) {
        assert!(
            !line.contains("\"sample\""),
            "a burst rendered twice: {line}"
        );
    }

    // The folder deleted and made again: the watch comes back and sees saves.
    std::fs::remove_dir_all(ws.join("prompts")).unwrap();
    wait_for("folder_lost");
    std::fs::create_dir_all(ws.join("prompts")).unwrap();
    wait_for("folder_rearmed");
    save_like_vim(
        &file,
        "prompt = \"a photo of a fox\"\nseed = 10\nsteps = 4\n",
    );
    let after = wait_for("sample");
    assert_eq!(after["seed"], 10, "{after}");

    child.signal("-INT");
    wait_for("stopped");
    let (_, status) = child.finish(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn engine_coalesces_jobs_of_one_prompt_file_latest_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = new_workspace(&tmp.path().join("ws"));
    let engine = Engine::spawn(ws.clone());
    match engine.recv_timeout(Duration::from_secs(60)) {
        Some(EngineEvent::Ready { .. }) => {}
        other => panic!("engine not ready: {other:?}"),
    }
    let source = Some(ws.prompts_dir().join("p.toml"));
    for (id, seed) in [(1u64, 100i64), (2, 200), (3, 300)] {
        engine.send(EngineCommand::Generate(Box::new(GenerateJob {
            id,
            source: source.clone(),
            request: GenerateRequest {
                prompt: "a cat".into(),
                seed,
                steps: 30,
                ..Default::default()
            },
            out_dir: ws.outputs_dir(),
        })));
    }
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match engine.recv_timeout(Duration::from_millis(200)) {
            Some(EngineEvent::Sample { id, seed, .. }) => samples.push((id, seed)),
            Some(EngineEvent::GenerateDone { id: 3, .. }) => break,
            Some(EngineEvent::GenerateFailed { error, .. }) => panic!("{error}"),
            _ => {}
        }
    }
    assert_eq!(samples, vec![(3, 300)], "only the latest job renders");
    engine.shutdown();
}

#[test]
fn engine_training_pause_generate_save_and_stop() {
    use dreamartist::concept::{add, Concept, NewConcept};
    use dreamartist::train::{TrainEvent, TrainRequest};
    let tmp = tempfile::tempdir().unwrap();
    let ws = new_workspace(&tmp.path().join("ws"));
    add(
        &ws,
        &NewConcept {
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
    let concept = Concept::load(&ws, "cat").unwrap();
    let mut config = concept.train.clone();
    config.steps = 100_000;
    config.checkpoint_every = 0;
    let engine = Engine::spawn(ws.clone());
    let next = |what: &str| -> EngineEvent {
        engine
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("engine went quiet waiting for {what}"))
    };
    assert!(matches!(next("ready"), EngineEvent::Ready { .. }));
    engine.send(EngineCommand::Train(Box::new(TrainRequest {
        concept,
        config,
        resume: None,
    })));
    let mut steps = 0;
    let mut run = None;
    while steps < 2 {
        match next("steps") {
            EngineEvent::Train(TrainEvent::Step(_)) => steps += 1,
            EngineEvent::Train(TrainEvent::Started { run_id, .. }) => {
                run = Some(dreamartist::train::RunDir::at(
                    &ws.concept_dir("cat"),
                    &run_id,
                ))
            }
            _ => {}
        }
    }
    let run = run.expect("a started event");
    use dreamartist::concept::RunState;
    assert_eq!(run.state(), RunState::Running);
    engine.send(EngineCommand::Pause);
    loop {
        if let EngineEvent::Paused = next("paused") {
            break;
        }
    }
    // Anyone reading the run folder sees it paused.
    assert_eq!(run.state(), RunState::Paused);
    // While paused, generation jobs are still served.
    engine.send(EngineCommand::Generate(Box::new(GenerateJob {
        id: 7,
        source: None,
        request: GenerateRequest {
            prompt: "a photo of a cat".into(),
            seed: 1,
            steps: 3,
            ..Default::default()
        },
        out_dir: ws.outputs_dir(),
    })));
    loop {
        match next("sample while paused") {
            EngineEvent::Sample { id: 7, path, .. } => {
                assert!(path.is_file());
                break;
            }
            EngineEvent::Train(TrainEvent::Step(m)) => panic!("step {} ran while paused", m.step),
            EngineEvent::GenerateFailed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    engine.send(EngineCommand::Resume);
    loop {
        if let EngineEvent::Resumed = next("resumed") {
            break;
        }
    }
    assert_eq!(run.state(), RunState::Running);
    engine.send(EngineCommand::SaveNow);
    loop {
        match next("checkpoint") {
            EngineEvent::Train(TrainEvent::Checkpoint { path, .. }) => {
                assert!(path.is_file());
                break;
            }
            EngineEvent::TrainFailed(e) => panic!("{e}"),
            _ => {}
        }
    }
    engine.send(EngineCommand::Stop);
    loop {
        if let EngineEvent::Train(TrainEvent::Finished(outcome)) = next("finished") {
            assert!(outcome.interrupted);
            assert!(outcome.positive.is_file());
            assert_eq!(run.state(), RunState::Stopped);
            break;
        }
    }
    engine.shutdown();
}
