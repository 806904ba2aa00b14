//! The trainer end to end through the binary: init → concept add → train,
//! exact resume, and the refusals (bad images, masks, presets, workspaces).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Tensor;
use common::{bin, f32_bits as bits, fixtures, run_ok, workspace_with_concept};

/// A fresh workspace on the tiny SD1 model with concept `cat` (one real photo).
fn cat_workspace() -> tempfile::TempDir {
    workspace_with_concept(
        &fixtures().join("tiny-sd1/model"),
        "cat",
        &fixtures().join("references/chelsea.png"),
        &[],
    )
}

fn train(ws: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    common::train_events(ws, "cat", extra)
}

fn emb(path: &Path) -> Tensor {
    let (t, _) = dreamartist::concept::load_embedding(path).unwrap();
    t
}

#[test]
fn train_writes_the_pair_metrics_and_finished_event() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let events = train(&ws, &["--steps", "50", "--seed", "3"]);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished");
    assert_eq!(last["steps"], 50);
    assert!(last["loss"].as_f64().unwrap().is_finite());
    let pos = PathBuf::from(last["positive"].as_str().unwrap());
    let neg = PathBuf::from(last["negative"].as_str().unwrap());
    assert_eq!(emb(&pos).dims(), &[3, 32]);
    assert_eq!(emb(&neg).dims(), &[3, 32]);
    let (_, meta) = dreamartist::concept::load_embedding(&pos).unwrap();
    assert_eq!(
        (
            meta.name.as_str(),
            meta.step,
            meta.pos_vectors,
            meta.neg_vectors
        ),
        ("cat", 50, 3, 3)
    );
    assert_eq!(meta.base_model, "model");
    assert_eq!(meta.base_model_hash.len(), 8);
    let steps: Vec<_> = events.iter().filter(|e| e["event"] == "step").collect();
    assert_eq!(steps.len(), 50);
    let run_dir = PathBuf::from(last["run_dir"].as_str().unwrap());
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50);
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m["step"], i as u64 + 1);
        for key in [
            "loss",
            "mse",
            "lr",
            "grad_norm_pos",
            "grad_norm_neg",
            "it_s",
        ] {
            assert!(m[key].as_f64().unwrap().is_finite(), "{key} in {m}");
        }
    }
    assert!(run_dir.join("config.toml").is_file());
    assert!(run_dir
        .join("checkpoints/step-00000050.safetensors")
        .is_file());
    // Training moved both words away from their initialisation (a zero-rate
    // run of the same seed is the initial pair).
    let trained = [emb(&pos), emb(&neg)];
    let init = train(&ws, &["--steps", "1", "--seed", "3", "--lr", "0"]);
    let init = init.last().unwrap();
    for (key, after) in [("positive", &trained[0]), ("negative", &trained[1])] {
        let before = emb(Path::new(init[key].as_str().unwrap()));
        let moved = common::max_abs(&(after - before).unwrap());
        assert!(moved > 1e-3, "{key} moved only {moved}");
    }
}

#[test]
fn resume_continues_bit_for_bit() {
    let a = cat_workspace();
    let b = cat_workspace();
    let (wa, wb) = (a.path().join("ws"), b.path().join("ws"));
    let straight = train(&wa, &["--steps", "50", "--seed", "11"]);
    train(&wb, &["--steps", "25", "--seed", "11"]);
    let resumed = train(&wb, &["--steps", "50", "--resume", "latest"]);
    let (fs, fr) = (straight.last().unwrap(), resumed.last().unwrap());
    assert_eq!(fr["steps"], 50);
    assert_eq!(resumed.iter().filter(|e| e["event"] == "step").count(), 25);
    for key in ["positive", "negative"] {
        let x = emb(Path::new(fs[key].as_str().unwrap()));
        let y = emb(Path::new(fr[key].as_str().unwrap()));
        assert_eq!(bits(&x), bits(&y), "{key} vectors differ after resume");
    }
    // The resumed run's metrics hold each step once.
    let run_dir = PathBuf::from(fr["run_dir"].as_str().unwrap());
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 50);
}

/// A run killed between checkpoints (its newest checkpoint and the metrics
/// lines after the one before are what a kill leaves) resumes from the last
/// checkpoint, drops the metrics it will redo, and ends bit for bit where an
/// uninterrupted run ends — with EMA, flips, accumulation and a cosine schedule.
#[test]
fn resume_after_a_kill_between_checkpoints_is_exact_with_every_option() {
    let a = cat_workspace();
    let b = cat_workspace();
    let (wa, wb) = (a.path().join("ws"), b.path().join("ws"));
    for ws in [&wa, &wb] {
        let path = ws.join("concepts/cat/concept.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("flip = false", "flip = true")
            .replace("lr_schedule = \"constant\"", "lr_schedule = \"cosine\"")
            .replace("warmup_steps = 0", "warmup_steps = 5");
        assert!(
            text.contains("flip = true") && text.contains("cosine"),
            "{text}"
        );
        std::fs::write(&path, text).unwrap();
    }
    let common = [
        "--lr",
        "0.005",
        "--seed",
        "21",
        "--ema-decay",
        "0.8",
        "--grad-accum",
        "2",
        "--checkpoint-every",
        "10",
    ];
    let with = |steps: &'static str| -> Vec<&'static str> {
        let mut v = common.to_vec();
        v.extend(["--steps", steps]);
        v
    };
    let straight = train(&wa, &with("30"));
    let first = train(&wb, &with("30"));
    // What a kill at step 29 leaves (the schedule depends on the total, so
    // the killed run must have been a 30-step run too): checkpoints 10 and
    // 20, metrics up to 29.
    let run_dir = PathBuf::from(first.last().unwrap()["run_dir"].as_str().unwrap());
    std::fs::remove_file(run_dir.join("checkpoints/step-00000030.safetensors")).unwrap();
    let metrics_path = run_dir.join("metrics.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap()
        .lines()
        .take(29)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&metrics_path, kept.concat()).unwrap();
    let resumed = train(&wb, &["--steps", "30", "--resume", "latest"]);
    let start = &resumed[0];
    assert_eq!(start["start_step"], 20, "{start}");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=30).collect::<Vec<u64>>());
    let (fs, fr) = (straight.last().unwrap(), resumed.last().unwrap());
    for key in ["positive", "negative"] {
        let x = emb(Path::new(fs[key].as_str().unwrap()));
        let y = emb(Path::new(fr[key].as_str().unwrap()));
        assert_eq!(bits(&x), bits(&y), "{key} differs after resume");
    }
}

fn fails_with(cmd: &mut Command, needles: &[&str]) {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

/// A concept name is a folder under concepts/: one that climbs out of the
/// workspace is refused before anything is read or written.
#[test]
fn concept_names_cannot_escape_the_workspace() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    // concepts/../../o/concept.toml, naming itself `../../o`.
    let outside = tmp.path().join("o");
    std::fs::create_dir_all(&outside).unwrap();
    let cat = std::fs::read_to_string(ws.join("concepts/cat/concept.toml")).unwrap();
    std::fs::write(
        outside.join("concept.toml"),
        cat.replace("name = \"cat\"", "name = \"../../o\""),
    )
    .unwrap();
    fails_with(
        bin().args([
            "train",
            "../../o",
            "--steps",
            "2",
            "-w",
            ws.to_str().unwrap(),
        ]),
        &["invalid concept name", "../../o"],
    );
    let written: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, vec![std::ffi::OsString::from("concept.toml")]);
    assert!(!tmp.path().join("o.safetensors").exists());
}

#[test]
fn refusals_are_clear_and_write_nothing() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let w = ws.to_str().unwrap();
    let refs_before = std::fs::read_dir(ws.join("references")).unwrap().count();

    let corrupt = tmp.path().join("broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    fails_with(
        bin().args([
            "concept",
            "add",
            "dog",
            "--reference",
            corrupt.to_str().unwrap(),
            "-w",
            w,
        ]),
        &["broken.png", "not a readable image"],
    );
    fails_with(
        bin().args([
            "concept",
            "add",
            "dog",
            "--reference",
            "/nonexistent/dog.png",
            "-w",
            w,
        ]),
        &["/nonexistent/dog.png", "not found"],
    );
    // A mask whose size differs from its image.
    let img = tmp.path().join("pic.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10]))
        .save(&img)
        .unwrap();
    image::GrayImage::from_pixel(20, 20, image::Luma([255]))
        .save(tmp.path().join("pic_mask.png"))
        .unwrap();
    fails_with(
        bin().args([
            "concept",
            "add",
            "dog",
            "--reference",
            img.to_str().unwrap(),
            "-w",
            w,
        ]),
        &["pic_mask.png", "size"],
    );
    let good = fixtures().join("references/chelsea.png");
    fails_with(
        bin().args([
            "concept",
            "add",
            "dog",
            "--reference",
            good.to_str().unwrap(),
            "--preset",
            "cartoon",
            "-w",
            w,
        ]),
        &["unknown preset `cartoon`", "photo"],
    );
    fails_with(
        bin().args([
            "concept",
            "add",
            "bad name!",
            "--reference",
            good.to_str().unwrap(),
            "-w",
            w,
        ]),
        &["invalid concept name"],
    );
    assert!(
        !ws.join("concepts/dog").exists(),
        "a refused concept left files behind"
    );
    assert_eq!(
        std::fs::read_dir(ws.join("references")).unwrap().count(),
        refs_before
    );

    let empty = tempfile::tempdir().unwrap();
    fails_with(
        bin().args(["train", "cat", "-w", empty.path().to_str().unwrap()]),
        &["no workspace.toml", "dreamartist init"],
    );
    fails_with(
        bin().args(["train", "nope", "-w", w]),
        &["concept `nope` does not exist", "cat"],
    );
    // A reference deleted after the concept was created.
    std::fs::remove_file(ws.join("references/chelsea.png")).unwrap();
    fails_with(
        bin().args(["train", "cat", "-w", w, "--steps", "2"]),
        &["chelsea.png", "not found"],
    );
}

#[test]
fn non_finite_loss_stops_with_a_clear_error() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let out = bin()
        .args([
            "train",
            "cat",
            "-w",
            ws.to_str().unwrap(),
            "--steps",
            "3",
            "--train-cfg",
            "1e30",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("training diverged") && err.contains("Lower the learning rate"),
        "{err}"
    );
    assert!(!ws.join("concepts/cat/cat.safetensors").exists());
    // The run says it diverged, and why.
    let run = dreamartist::train::RunDir::latest(&ws.join("concepts/cat")).unwrap();
    assert_eq!(run.state(), dreamartist::concept::RunState::Diverged);
    let end = run.read_end().unwrap();
    assert!(end.message.unwrap().contains("diverged"));
    assert!(!run.lock_path().exists());
}

#[test]
fn textual_inversion_baseline_has_no_negative_word() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let events = train(&ws, &["--steps", "3", "--train-cfg", "1"]);
    let last = events.last().unwrap();
    assert!(last["negative"].is_null());
    assert!(!ws.join("concepts/cat/cat-neg.safetensors").exists());
    assert!(ws.join("concepts/cat/cat.safetensors").exists());
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_zero() {
    interrupt_saves_a_checkpoint("-INT");
}

/// What schedulers, `systemd` and a closed SSH session send: the same as Ctrl-C.
#[test]
fn sigterm_and_sighup_save_a_checkpoint_too() {
    interrupt_saves_a_checkpoint("-TERM");
    interrupt_saves_a_checkpoint("-HUP");
}

fn interrupt_saves_a_checkpoint(signal: &str) {
    use std::time::Duration;
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let child = common::Spawned::start(bin().args([
        "train",
        "cat",
        "-w",
        ws.to_str().unwrap(),
        "--json",
        "--steps",
        "100000",
    ]));
    // Wait for two steps, then interrupt.
    let mut steps = 0;
    child.wait_for_line(Duration::from_secs(60), |l| {
        steps += usize::from(l.contains("\"event\":\"step\""));
        steps == 2
    });
    child.signal(signal);
    let (rest, status) = child.finish(Duration::from_secs(60));
    assert!(status.success(), "{signal}: exit status {status:?}");
    let finished: serde_json::Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(finished["event"], "finished");
    assert_eq!(finished["interrupted"], true);
    let run_dir = PathBuf::from(finished["run_dir"].as_str().unwrap());
    let step = finished["steps"].as_u64().unwrap();
    assert!(run_dir
        .join(format!("checkpoints/step-{step:08}.safetensors"))
        .is_file());
    let run = run_dir_of(&run_dir);
    assert_eq!(run.state(), dreamartist::concept::RunState::Stopped);
    assert_eq!(run.read_end().unwrap().step, step);
    assert!(!run.lock_path().exists(), "the lock goes with the process");
}

fn run_dir_of(path: &Path) -> dreamartist::train::RunDir {
    let id = path.file_name().unwrap().to_str().unwrap();
    dreamartist::train::RunDir::at(path.parent().unwrap().parent().unwrap(), id)
}

/// Running while the process lives, crashed once it is killed (never
/// "running"), and finished after a resume to its total.
#[cfg(unix)]
#[test]
fn run_status_follows_the_process() {
    use dreamartist::concept::RunState;
    use std::time::Duration;
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let child = common::Spawned::start(bin().args([
        "train",
        "cat",
        "-w",
        ws.to_str().unwrap(),
        "--json",
        "--steps",
        "100000",
        "--checkpoint-every",
        "1",
    ]));
    let started = child.wait_for_line(Duration::from_secs(60), |l| l.contains("\"started\""));
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    let run = run_dir_of(Path::new(started["run_dir"].as_str().unwrap()));
    child.wait_for_line(Duration::from_secs(60), |l| l.contains("\"checkpoint\""));
    assert_eq!(run.state(), RunState::Running);
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.lock_path()).unwrap()).unwrap();
    assert_eq!(lock["pid"], child.id());
    // A second trainer may not take the live run.
    let out = bin()
        .args([
            "train",
            "cat",
            "-w",
            ws.to_str().unwrap(),
            "--resume",
            run.id(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is being trained by process"));
    child.signal("-KILL");
    let _ = child.finish(Duration::from_secs(60));
    assert_eq!(run.state(), RunState::Crashed);
    // Resumed to a total: finished, the dead process's lock replaced, then gone.
    let step = run.latest_checkpoint().unwrap().0;
    let total = (step + 2).to_string();
    train(&ws, &["--resume", run.id(), "--steps", &total]);
    assert_eq!(run.state(), RunState::Finished);
    assert!(!run.lock_path().exists());
}

fn first_step(events: &[serde_json::Value]) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "step")
        .cloned()
        .unwrap()
}

#[test]
fn gradient_accumulation_averages_micro_batches() {
    // Batch 2 × accumulation 1 and batch 1 × accumulation 2 draw the same
    // samples in the same order: the averaged gradient (pre-clip norm) and the
    // loss must agree; a sum instead of an average would double the norm.
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let one = first_step(&train(
        &ws,
        &[
            "--steps",
            "1",
            "--seed",
            "5",
            "--batch",
            "2",
            "--grad-accum",
            "1",
        ],
    ));
    let two = first_step(&train(
        &ws,
        &[
            "--steps",
            "1",
            "--seed",
            "5",
            "--batch",
            "1",
            "--grad-accum",
            "2",
        ],
    ));
    for key in ["loss", "grad_norm_pos", "grad_norm_neg"] {
        let (a, b) = (one[key].as_f64().unwrap(), two[key].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1e-12),
            "{key}: {a} vs {b}"
        );
    }
}

/// The EMA recomputed from the live vectors of every step's checkpoint:
/// `ema_k = d·ema_(k−1) + (1−d)·live_k`, bit for bit, and the finished pair is
/// the last EMA.
#[test]
fn ema_is_the_average_of_the_live_vectors() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let d = 0.75;
    let run = train(
        &ws,
        &[
            "--steps",
            "5",
            "--seed",
            "8",
            "--ema-decay",
            "0.75",
            "--checkpoint-every",
            "1",
        ],
    );
    let run_dir = PathBuf::from(run.last().unwrap()["run_dir"].as_str().unwrap());
    let cp = |k: u64| {
        candle_core::safetensors::load(
            run_dir.join(format!("checkpoints/step-{k:08}.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    for (live, ema) in [("pos", "ema_pos"), ("neg", "ema_neg")] {
        let mut expected = cp(1)[ema].clone();
        for k in 2..=5 {
            let c = cp(k);
            expected = ((&expected * d).unwrap() + (&c[live] * (1.0 - d)).unwrap()).unwrap();
            assert_eq!(bits(&expected), bits(&c[ema]), "{ema} at step {k}");
            assert_ne!(
                bits(&c[live]),
                bits(&c[ema]),
                "{ema} equals the live vectors"
            );
        }
    }
    assert_eq!(
        bits(&emb(&run_dir.join("cat.safetensors"))),
        bits(&cp(5)["ema_pos"])
    );
}

#[test]
fn ema_with_zero_decay_is_the_live_vectors_and_otherwise_differs() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let plain = train(&ws, &["--steps", "4", "--seed", "2"]);
    let p_plain = emb(
        Path::new(plain.last().unwrap()["run_dir"].as_str().unwrap())
            .join("cat.safetensors")
            .as_path(),
    );
    let zero = train(&ws, &["--steps", "4", "--seed", "2", "--ema-decay", "0"]);
    let p_zero = emb(Path::new(zero.last().unwrap()["run_dir"].as_str().unwrap())
        .join("cat.safetensors")
        .as_path());
    assert_eq!(bits(&p_plain), bits(&p_zero));
    let slow = train(&ws, &["--steps", "4", "--seed", "2", "--ema-decay", "0.9"]);
    let p_slow = emb(Path::new(slow.last().unwrap()["run_dir"].as_str().unwrap())
        .join("cat.safetensors")
        .as_path());
    assert_ne!(bits(&p_plain), bits(&p_slow));
}

#[test]
fn preview_samples_are_rendered_and_do_not_change_the_run() {
    let a = cat_workspace();
    let b = cat_workspace();
    let (wa, wb) = (a.path().join("ws"), b.path().join("ws"));
    let with = train(&wa, &["--steps", "4", "--seed", "8", "--sample-every", "2"]);
    let without = train(&wb, &["--steps", "4", "--seed", "8"]);
    let samples: Vec<_> = with.iter().filter(|e| e["event"] == "sample").collect();
    assert_eq!(samples.len(), 2);
    for s in &samples {
        let p = PathBuf::from(s["path"].as_str().unwrap());
        assert_eq!(image::open(&p).unwrap().to_rgb8().dimensions(), (64, 64));
    }
    let pa = emb(Path::new(
        with.last().unwrap()["positive"].as_str().unwrap(),
    ));
    let pb = emb(Path::new(
        without.last().unwrap()["positive"].as_str().unwrap(),
    ));
    assert_eq!(bits(&pa), bits(&pb));
}

/// The same image with a different weight map and caption beside it must not
/// replace the first concept's companions: the second copy gets its own name.
#[test]
fn references_with_different_companions_never_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    run_ok(
        bin()
            .arg("init")
            .arg(&ws)
            .arg("--model")
            .arg(fixtures().join("tiny-sd1/model")),
    );
    let image = std::fs::read(fixtures().join("references/chelsea.png")).unwrap();
    let mask = |v: u8| {
        let mut bytes = Vec::new();
        image::GrayImage::from_pixel(451, 300, image::Luma([v]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    };
    for (dir, caption, m) in [("d1", "a tabby", mask(255)), ("d2", "a cat", mask(128))] {
        let d = tmp.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tri.png"), &image).unwrap();
        std::fs::write(d.join("tri.txt"), caption).unwrap();
        std::fs::write(d.join("tri_mask.png"), m).unwrap();
    }
    let add = |name: &str, dir: &str| {
        run_ok(
            bin()
                .args(["concept", "add", name, "--reference"])
                .arg(tmp.path().join(dir).join("tri.png"))
                .arg("-w")
                .arg(&ws),
        )
    };
    add("tria", "d1");
    add("trib", "d2");
    add("tric", "d1");
    let refs = ws.join("references");
    assert_eq!(
        std::fs::read_to_string(refs.join("tri.txt")).unwrap(),
        "a tabby"
    );
    assert_eq!(std::fs::read(refs.join("tri_mask.png")).unwrap(), mask(255));
    assert_eq!(
        std::fs::read_to_string(refs.join("tri-2.txt")).unwrap(),
        "a cat"
    );
    assert_eq!(
        std::fs::read(refs.join("tri-2_mask.png")).unwrap(),
        mask(128)
    );
    let concept_refs = |c: &str| {
        std::fs::read_to_string(ws.join("concepts").join(c).join("concept.toml")).unwrap()
    };
    assert!(concept_refs("tria").contains("references/tri.png"));
    assert!(concept_refs("trib").contains("references/tri-2.png"));
    // The same image with the same companions is stored once.
    assert!(concept_refs("tric").contains("references/tri.png"));
    assert!(!refs.join("tri-3.png").exists());
}

/// Absurd counts and sizes are refused by name before anything is allocated
/// (exit 2 from our error path, not a panic or an allocation abort).
#[test]
fn absurd_sizes_and_counts_are_refused_before_allocating() {
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let w = ws.to_str().unwrap();
    let refused = |args: &[&str], needle: &str| {
        let out = bin().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    refused(
        &[
            "generate",
            "-w",
            w,
            "--prompt",
            "x",
            "--count",
            "9223372036854775807",
        ],
        "count 9223372036854775807 must be between 1 and 1000",
    );
    refused(
        &[
            "generate",
            "-w",
            w,
            "--prompt",
            "x",
            "--width",
            "4294967296",
        ],
        "width 4294967296 must be a multiple of 8 up to 8192",
    );
    refused(
        &["generate", "-w", w, "--prompt", "x", "--width", "4096"],
        "more than this model renders (256",
    );
    refused(
        &["generate", "-w", w, "--prompt", "x", "--strength", "2"],
        "strength 2 must be between 0 and 1",
    );
    refused(
        &["generate", "-w", w, "--prompt", "x", "--steps", "0"],
        "steps 0",
    );
    refused(
        &["generate", "-w", w, "--prompt", "x", "--width", "0"],
        "--width 0",
    );
    refused(
        &["train", "cat", "-w", w, "--size", "100000"],
        "size 100000",
    );
    let pf = ws.join("prompts/big.toml");
    std::fs::write(&pf, "prompt = \"x\"\nwidth = 100000\n").unwrap();
    refused(&["generate", pf.to_str().unwrap(), "-w", w], "width 100000");
    std::fs::write(&pf, "prompt = \"x\"\ncount = 1000000\n").unwrap();
    refused(
        &["generate", pf.to_str().unwrap(), "-w", w],
        "count 1000000",
    );
    let toml_path = ws.join("concepts/cat/concept.toml");
    let original = std::fs::read_to_string(&toml_path).unwrap();
    for (from, to, needle) in [
        ("batch_size = 1", "batch_size = 100000", "batch_size 100000"),
        ("pos_vectors = 3", "pos_vectors = 100", "pos_vectors 100"),
        ("train_cfg = \"5\"", "train_cfg = \"-2\"", "below 0"),
    ] {
        assert!(
            original.contains(from),
            "concept.toml lacks `{from}`:\n{original}"
        );
        std::fs::write(&toml_path, original.replace(from, to)).unwrap();
        refused(&["train", "cat", "-w", w, "--steps", "1"], needle);
    }
    std::fs::write(&toml_path, original).unwrap();
}

/// A kill between writing a finishing run's positive and negative at the
/// concept level leaves a torn pair on disk; the word bank must never mix it:
/// at every write boundary the pair it offers is one run's.
#[test]
fn a_torn_pair_is_never_used() {
    let tmp = cat_workspace();
    let ws_dir = tmp.path().join("ws");
    let first = train(&ws_dir, &["--steps", "3", "--seed", "1"]);
    let second = train(&ws_dir, &["--steps", "3", "--seed", "2"]);
    let run_dir = |events: &[serde_json::Value]| {
        PathBuf::from(events.last().unwrap()["run_dir"].as_str().unwrap())
    };
    let (run_a, run_b) = (run_dir(&first), run_dir(&second));
    let concept = ws_dir.join("concepts/cat");
    let ws = dreamartist::workspace::Workspace::open(&ws_dir).unwrap();
    let bank_pair = || {
        let bank = dreamartist::generate::word_bank(&ws).unwrap();
        (
            bits(&bank.get("<cat>").unwrap().vectors),
            bits(&bank.get("<cat-neg>").unwrap().vectors),
        )
    };
    let run_pair = |run: &Path| {
        (
            bits(&emb(&run.join("cat.safetensors"))),
            bits(&emb(&run.join("cat-neg.safetensors"))),
        )
    };
    // Finished: the concept's pair is run B's.
    assert_eq!(bank_pair(), run_pair(&run_b));
    // The states a kill leaves while run B finishes, as files on disk.
    let copy = |from: &Path, to: &str| std::fs::copy(from, concept.join(to)).unwrap();
    // Run B's own pair written, the concept's still run A's.
    copy(&run_a.join("cat.safetensors"), "cat.safetensors");
    copy(&run_a.join("cat-neg.safetensors"), "cat-neg.safetensors");
    assert_eq!(bank_pair(), run_pair(&run_a));
    // The positive switched, the negative not yet: torn on disk, one run's in the bank.
    copy(&run_b.join("cat.safetensors"), "cat.safetensors");
    assert_ne!(
        bits(&emb(&concept.join("cat-neg.safetensors"))),
        run_pair(&run_b).1
    );
    assert_eq!(bank_pair(), run_pair(&run_b));
}

/// The DreamArtist extension's inputs and options: width × height training,
/// `_att` weight maps, a separate negative init text and separate EMA.
#[test]
fn extension_parity_options() {
    // A 64×48 run trains and previews at 64×48.
    let tmp = cat_workspace();
    let ws = tmp.path().join("ws");
    let run = train(
        &ws,
        &[
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "48",
            "--sample-every",
            "2",
        ],
    );
    let last = run.last().unwrap();
    assert_eq!(last["steps"], 2);
    let preview = run
        .iter()
        .find(|e| e["event"] == "sample")
        .expect("a preview");
    let img = image::open(preview["path"].as_str().unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));

    // EMA of the negative only: the positive is the live one, bit for bit.
    let plain = train(&ws, &["--steps", "4", "--seed", "2"]);
    let toml_path = ws.join("concepts/cat/concept.toml");
    let original = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        original.replace("[train]\n", "[train]\nema_decay_neg = 0.9\n"),
    )
    .unwrap();
    let neg_ema = train(&ws, &["--steps", "4", "--seed", "2"]);
    std::fs::write(&toml_path, &original).unwrap();
    let pair = |events: &[serde_json::Value]| {
        let dir = PathBuf::from(events.last().unwrap()["run_dir"].as_str().unwrap());
        (
            bits(&emb(&dir.join("cat.safetensors"))),
            bits(&emb(&dir.join("cat-neg.safetensors"))),
        )
    };
    let (p_plain, n_plain) = pair(&plain);
    let (p_ema, n_ema) = pair(&neg_ema);
    assert_eq!(p_plain, p_ema, "the positive has no EMA");
    assert_ne!(n_plain, n_ema, "the negative's EMA is used");

    // A separate negative init text starts the negative elsewhere.
    let zero_lr = ["--steps", "1", "--seed", "4", "--lr", "0"];
    let same = train(&ws, &zero_lr);
    std::fs::write(
        &toml_path,
        original.replace("init_text = ", "neg_init_text = \"dog\"\ninit_text = "),
    )
    .unwrap();
    let own = train(&ws, &zero_lr);
    std::fs::write(&toml_path, &original).unwrap();
    let (p_same, n_same) = pair(&same);
    let (p_own, n_own) = pair(&own);
    assert_eq!(p_same, p_own);
    assert_ne!(n_same, n_own);

    // An extension-style `_att` map is copied and trained with: all black
    // weighs every latent 0, so the loss is exactly 0.
    let dir = tmp.path().join("att");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("references/chelsea.png"),
        dir.join("tabby.png"),
    )
    .unwrap();
    let (w, h) = image::image_dimensions(dir.join("tabby.png")).unwrap();
    image::GrayImage::new(w, h)
        .save(dir.join("tabby_att.png"))
        .unwrap();
    run_ok(
        bin()
            .args(["concept", "add", "tabby", "--reference"])
            .arg(dir.join("tabby.png"))
            .arg("-w")
            .arg(&ws),
    );
    assert!(ws.join("references/tabby_att.png").is_file());
    let out = run_ok(bin().args([
        "train",
        "tabby",
        "-w",
        ws.to_str().unwrap(),
        "--json",
        "--steps",
        "1",
    ]));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let step = events.iter().find(|e| e["event"] == "step").unwrap();
    assert_eq!(step["loss"].as_f64().unwrap(), 0.0, "{step}");
}

/// `--recompute` (activation recompute) changes memory, not the run: the
/// first step's loss is the same bits (same vectors, same forward), and after
/// ten AdamW steps the vectors agree to the rounding of the gradient's
/// re-ordered sums. The run's config records the option.
#[test]
fn recompute_trains_the_same_vectors() {
    let a = cat_workspace();
    let b = cat_workspace();
    let (wa, wb) = (a.path().join("ws"), b.path().join("ws"));
    let args = ["--steps", "10", "--seed", "5"];
    let plain = train(&wa, &args);
    let with: Vec<&str> = args.iter().copied().chain(["--recompute"]).collect();
    let recomputed = train(&wb, &with);
    assert_eq!(
        first_step(&plain)["loss"],
        first_step(&recomputed)["loss"],
        "first step's loss differs"
    );
    let run_dir = PathBuf::from(recomputed.last().unwrap()["run_dir"].as_str().unwrap());
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap_or_default();
    assert!(
        config.contains("recompute = true"),
        "config.toml lacks the option:\n{config}"
    );
    for key in ["positive", "negative"] {
        let x = emb(Path::new(plain.last().unwrap()[key].as_str().unwrap()));
        let y = emb(Path::new(recomputed.last().unwrap()[key].as_str().unwrap()));
        let scale = common::max_abs(&x);
        let diff = common::max_abs(&(&x - &y).unwrap());
        eprintln!("{key}: vectors differ by at most {diff:e} (max |v| {scale:e})");
        assert!(
            diff <= 1e-4 * scale,
            "{key} vectors differ by {diff:e} (max |v| {scale:e})"
        );
    }
}
