//! The command line's error paths through the binary: each refusal exits
//! non-zero with one message that names what is wrong and says the fix once.

mod common;

use std::path::Path;

use common::{bin, fails, fixtures, ok, run_ok};

/// A workspace on the tiny model with one concept `c`.
fn workspace() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let model = fixtures().join("tiny-sd1/model");
    ok(&[
        "init",
        ws.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    let reference = fixtures().join("references/chelsea.png");
    ok(&[
        "concept",
        "add",
        "c",
        "--reference",
        reference.to_str().unwrap(),
        "-w",
        ws.to_str().unwrap(),
    ]);
    let ws = ws.to_str().unwrap().to_string();
    (tmp, ws)
}

/// Says `needle` exactly once.
fn once(msg: &str, needle: &str) {
    assert_eq!(msg.matches(needle).count(), 1, "{needle:?} in {msg}");
}

#[test]
fn generate_refuses_what_it_cannot_render() {
    let (_tmp, ws) = workspace();
    let e = fails(&["generate", "-w", &ws, "--steps", "1"]);
    assert!(e.contains("give a prompt file or --prompt"), "{e}");
    let e = fails(&["generate", "-w", &ws, "--prompt", "x", "--steps", "0"]);
    assert!(e.contains("steps 0 must be between 1 and 1000"), "{e}");
    let e = fails(&["generate", "-w", &ws, "--prompt", "x", "--count", "0"]);
    assert!(e.contains("count 0"), "{e}");
    let e = fails(&["generate", "-w", &ws, "--prompt", "x", "--width", "60"]);
    assert!(e.contains("width 60") && e.contains("multiple of 8"), "{e}");
    let e = fails(&["generate", "-w", &ws, "--prompt", "x", "--sampler", "plms"]);
    assert!(e.contains("plms"), "{e}");
    let e = fails(&["generate", "-w", &ws, "--prompt", "x", "--strength", "1.5"]);
    assert!(e.contains("strength 1.5"), "{e}");
    let missing = Path::new(&ws).join("nothere.toml");
    let e = fails(&["generate", missing.to_str().unwrap(), "-w", &ws]);
    assert!(e.contains("nothere.toml"), "{e}");
}

#[test]
fn bad_device_and_dtype_name_the_file_once() {
    let (_tmp, ws) = workspace();
    let file = Path::new(&ws).join("workspace.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    for (key, good, bad, says) in [
        (
            "dtype",
            "\"f32\"",
            "\"f8\"",
            "unknown dtype `f8` (use f32, f16 or bf16)",
        ),
        (
            "device",
            "\"cpu\"",
            "\"tpu\"",
            "unknown device `tpu` (use cpu, cuda or cuda:N)",
        ),
    ] {
        let broken = text.replace(&format!("{key} = {good}"), &format!("{key} = {bad}"));
        assert_ne!(broken, text, "{key} not in {text}");
        std::fs::write(&file, broken).unwrap();
        let e = fails(&["generate", "-w", &ws, "--prompt", "x", "--steps", "1"]);
        assert!(e.contains("workspace.toml"), "{e}");
        once(&e, says);
        std::fs::write(&file, &text).unwrap();
    }
    let fx = fixtures().join("tiny-sd1");
    let fx = fx.to_str().unwrap();
    let e = fails(&["selftest", fx, "--dtype", "f8"]);
    once(&e, "unknown dtype `f8`");
    let e = fails(&["selftest", fx, "--device", "tpu"]);
    once(&e, "unknown device `tpu`");
    let e = fails(&["selftest", fx, "--kinds", "tokenize,bogus"]);
    assert!(
        e.contains("unknown case kind `bogus`") && e.contains("train_steps"),
        "{e}"
    );
    let e = fails(&["bench", "--dtype", "f8"]);
    once(&e, "unknown dtype `f8`");
}

#[test]
fn eval_and_train_refuse_empty_work() {
    let (_tmp, ws) = workspace();
    let e = fails(&["eval", "c", "-w", &ws, "--samples", "0"]);
    assert!(e.contains("--samples must be at least 1"), "{e}");
    let e = fails(&["train", "nothere", "-w", &ws]);
    assert!(
        e.contains("`nothere`") && e.contains("known concepts: c"),
        "{e}"
    );
    let e = fails(&["train", "c", "-w", &ws, "--steps", "0"]);
    assert!(
        e.contains("steps 0") && e.contains("at least 1 step"),
        "{e}"
    );
}

#[test]
fn show_prints_half_blocks_into_a_pipe_and_names_bad_files() {
    let img = fixtures().join("references/chelsea.png");
    let out = run_ok(bin().args(["show", img.to_str().unwrap(), "--width", "8"]));
    let text = String::from_utf8(out.stdout).unwrap();
    // No terminal queries in a pipe (kitty's `ESC _G`, device attributes `ESC [c`).
    assert!(
        !text.contains("\x1b_G") && !text.contains("\x1b[c"),
        "{text:?}"
    );
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!rows.is_empty());
    for row in &rows {
        let cells = row.matches('▄').count() + row.matches('▀').count();
        assert_eq!(cells, 8, "{row:?}");
    }
    let e = fails(&["show", "/nonexistent/x.png"]);
    assert!(
        e.contains("/nonexistent/x.png") && !e.contains("concept.toml"),
        "{e}"
    );
    let e = fails(&["show", env!("CARGO_MANIFEST_DIR")]);
    assert!(
        e.contains("not a readable image") || e.contains("cannot open"),
        "{e}"
    );
}

#[test]
fn init_reads_a_relative_model_path_from_where_it_is_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok(
        bin()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["init"])
            .arg(tmp.path().join("ws"))
            .args(["--model", "tests/fixtures/tiny-sd1/model"]),
    );
    assert!(out.status.success());
    let png = tmp.path().join("x.png");
    run_ok(bin().current_dir(tmp.path()).args([
        "generate",
        "-w",
        "ws",
        "--prompt",
        "a cat",
        "--steps",
        "1",
        "--seed",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(png.is_file());
}
