//! The real binary in tmux on the tiny model: start training from the
//! keyboard, watch the step counter move, open help, quit cleanly; and with
//! default options in a detached session (nobody answers the terminal's
//! queries there), start, show the panes, quit at the first key and leave the
//! terminal as it was. Needs tmux (`.ci/run` installs it); without it each
//! test says so and is skipped. Each test has its own tmux server (`-L`), so
//! a user's sessions are never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs tmux on this test's own server.
fn tmux(server: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", server])
        .args(args)
        .output()
        .expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Whether tmux is there; if not, says why the test is skipped.
fn have_tmux(test: &str) -> bool {
    let ok = Command::new("tmux").arg("-V").output().is_ok();
    if !ok {
        eprintln!("{test}: skipped: tmux is not installed (apt-get install tmux)");
    }
    ok
}

fn wait_for(server: &str, what: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let screen = tmux(server, &["capture-pane", "-p", "-t", "wb"]);
        if screen.contains(what) {
            return screen;
        }
        if Instant::now() > deadline {
            panic!("`{what}` never appeared; screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Waits for a file the session writes when the workbench has exited.
fn wait_for_file(path: &Path, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::read_to_string(path).unwrap_or_else(|_| panic!("{} never written", path.display()))
}

/// The step of the gauge label `k/N` on a captured screen.
fn gauge_step(screen: &str, total: &str) -> Option<u64> {
    let suffix = format!("/{total}");
    screen
        .split_whitespace()
        .find_map(|w| w.strip_suffix(&suffix).and_then(|n| n.parse().ok()))
}

/// A workspace `<tmp>/ws` on the tiny model, with concept `cat` when asked.
fn workspace(tmp: &Path, with_cat: bool) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let ws = tmp.join("ws");
    let ok = |args: &[&str]| {
        assert!(
            Command::new(env!("CARGO_BIN_EXE_dreamartist"))
                .args(args)
                .status()
                .unwrap()
                .success(),
            "{args:?}"
        )
    };
    ok(&[
        "init",
        ws.to_str().unwrap(),
        "--model",
        fixtures.join("tiny-sd1/model").to_str().unwrap(),
    ]);
    if with_cat {
        ok(&[
            "concept",
            "add",
            "cat",
            "--reference",
            fixtures.join("references/chelsea.png").to_str().unwrap(),
            "-w",
            ws.to_str().unwrap(),
        ]);
    }
    ws
}

/// Starts `cmd` in a detached 160×48 session `wb` of this test's server.
fn start_session(server: &str, cmd: &str) {
    tmux(
        server,
        &[
            "new-session",
            "-d",
            "-s",
            "wb",
            "-x",
            "160",
            "-y",
            "48",
            cmd,
        ],
    );
}

#[test]
fn train_from_the_keyboard_in_tmux() {
    if !have_tmux("train_from_the_keyboard_in_tmux") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), true);
    let bin = env!("CARGO_BIN_EXE_dreamartist");
    let server = format!("da-train-{}", std::process::id());
    let session = "wb";
    let done = tmp.path().join("exited");
    let cmd = format!(
        "{bin} tui -w {} --image-protocol halfblocks; echo $? > {}",
        ws.display(),
        done.display()
    );
    start_session(&server, &cmd);
    let cleanup = scopeguard(server.clone());

    wait_for(&server, "loaded on cpu", 60);
    tmux(&server, &["send-keys", "-t", session, "t"]);
    let first = wait_for(&server, "running", 60);
    let s1 = gauge_step(&first, "1500").unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s2 = s1;
    while s2 <= s1 + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        s2 = gauge_step(
            &tmux(&server, &["capture-pane", "-p", "-t", session]),
            "1500",
        )
        .unwrap_or(s2);
    }
    assert!(s2 > s1 + 2, "the step counter did not move ({s1} → {s2})");

    tmux(&server, &["send-keys", "-t", session, "?"]);
    wait_for(&server, "Help · keys", 10);
    // Any key closes help. (Escape followed at once by `q` would reach the app
    // as Alt-q: terminals encode Alt as an Escape prefix.)
    tmux(&server, &["send-keys", "-t", session, "Enter"]);
    std::thread::sleep(Duration::from_millis(200));
    tmux(&server, &["send-keys", "-t", session, "q"]);
    wait_for(&server, "keep training headless", 10);
    tmux(&server, &["send-keys", "-t", session, "s"]);
    let code = wait_for_file(&done, 60);
    assert_eq!(code.trim(), "0");
    let runs = ws.join("concepts/cat/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        std::fs::read_dir(run.join("checkpoints")).unwrap().count() >= 1,
        "stop-and-save left no checkpoint"
    );
    drop(cleanup);
}

/// Kills the test's tmux server even when an assertion fails.
fn scopeguard(server: String) -> impl Drop {
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .output();
        }
    }
    Guard(server)
}

/// Issue #21: with default options (`--image-protocol auto`) in a detached
/// session, where nothing answers the terminal's queries, the workbench used to
/// exit at once ("The cursor position could not be read within a normal
/// duration"). It must start with half-blocks, say why in its log, act on the
/// very first key (no query thread left reading stdin) and restore the terminal.
#[test]
fn default_options_start_in_a_detached_tmux() {
    if !have_tmux("default_options_start_in_a_detached_tmux") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), false);
    let bin = env!("CARGO_BIN_EXE_dreamartist");
    let server = format!("da-auto-{}", std::process::id());
    let (done, before, after, stderr) = (
        tmp.path().join("exited"),
        tmp.path().join("stty-before"),
        tmp.path().join("stty-after"),
        tmp.path().join("stderr"),
    );
    // No --image-protocol; the terminal's settings are saved before and after.
    let cmd = format!(
        "stty -g > {before}; {bin} tui -w {ws} 2> {stderr}; echo $? > {done}.tmp; \
         stty -g > {after}; mv {done}.tmp {done}; sleep 30",
        before = before.display(),
        after = after.display(),
        ws = ws.display(),
        stderr = stderr.display(),
        done = done.display(),
    );
    start_session(&server, &cmd);
    let _cleanup = scopeguard(server.clone());

    let screen = wait_for(&server, "loaded on cpu", 60);
    for pane in [
        "References",
        "Concepts",
        "Training",
        "Samples",
        "Prompts",
        "Logs",
    ] {
        assert!(screen.contains(pane), "no {pane} pane:\n{screen}");
    }
    assert!(screen.contains("images halfblocks"), "{screen}");
    assert!(
        screen.contains("images: the terminal did not answer"),
        "the log says why: {screen}"
    );
    // The first key quits (nothing is training).
    tmux(&server, &["send-keys", "-t", "wb", "q"]);
    let code = wait_for_file(&done, 30);
    assert_eq!(
        code.trim(),
        "0",
        "stderr: {}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "the terminal's settings (raw mode) were not restored"
    );
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A terminal that answers nothing at all: `script` gives the workbench a
/// pseudo-terminal and copies its output into a pipe. Start-up must not wait
/// for any answer (cursor position, image protocols): the workbench draws,
/// says why images are half-blocks, and quits on `q`.
#[test]
fn starts_in_a_terminal_that_answers_nothing() {
    use std::io::{Read, Write};
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("starts_in_a_terminal_that_answers_nothing: skipped: script(1) is not installed");
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let ws: PathBuf = tmp.path().join("ws");
    let bin = env!("CARGO_BIN_EXE_dreamartist");
    assert!(Command::new(bin)
        .args(["init", ws.to_str().unwrap(), "--model"])
        .arg(fixtures.join("tiny-sd1/model"))
        .status()
        .unwrap()
        .success());
    let inner = format!("stty cols 120 rows 36; exec {bin} tui -w {}", ws.display());
    let mut child = KillOnDrop(
        Command::new("script")
            .args(["-qfec", &inner, "/dev/null"])
            .env("TERM", "xterm-256color")
            .env_remove("TMUX")
            .env_remove("TERM_PROGRAM")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script starts"),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The panes, then the model (the status bar names its family): the
    // output is a stream of escapes, where only unbroken runs of text can be found.
    while !(text().contains("References") && text().contains("(SD 1.x)")) {
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut err = String::new();
            let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!(
                "the workbench exited ({status}) before drawing: {err}{}",
                text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "never drew its panes: {}",
            text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        text().contains("images halfblocks") && text().contains("did not answer"),
        "{}",
        text()
    );
    child.0.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "q did not quit: {}", text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", text());
}

/// Quit with "keep training headless": the workbench exits at once, and a
/// detached `dreamartist train --resume` finishes the run to its last step,
/// writing the concept's pair and the run's log.
#[test]
fn keep_training_headless_finishes_the_run() {
    if !have_tmux("keep_training_headless_finishes_the_run") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), true);
    let bin = env!("CARGO_BIN_EXE_dreamartist");
    let concept_toml = ws.join("concepts/cat/concept.toml");
    let text = std::fs::read_to_string(&concept_toml).unwrap();
    std::fs::write(&concept_toml, text.replace("steps = 1500", "steps = 400")).unwrap();

    let server = format!("da-keep-{}", std::process::id());
    let session = "wb";
    let done = tmp.path().join("exited");
    let cmd = format!(
        "{bin} tui -w {} --image-protocol halfblocks; echo $? > {}",
        ws.display(),
        done.display()
    );
    start_session(&server, &cmd);
    let cleanup = scopeguard(server.clone());
    // The headless trainer runs in its own session: stop it if the test fails.
    let headless = HeadlessGuard(ws.clone());

    wait_for(&server, "loaded on cpu", 60);
    tmux(&server, &["send-keys", "-t", session, "t"]);
    wait_for(&server, "running", 60);
    tmux(&server, &["send-keys", "-t", session, "q"]);
    wait_for(&server, "keep training headless", 10);
    tmux(&server, &["send-keys", "-t", session, "k"]);
    let code = wait_for_file(&done, 60);
    assert_eq!(code.trim(), "0");
    drop(cleanup);

    // The run goes on without the workbench, to its last step.
    let runs = ws.join("concepts/cat/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = run.join("headless.log");
    let metrics = run.join("metrics.jsonl");
    let last_step = || -> u64 {
        std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("step").and_then(|s| s.as_u64()))
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    while last_step() < 400 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        last_step(),
        400,
        "headless run stopped early; log:\n{log_text}"
    );
    let pair = ws.join("concepts/cat/cat.safetensors");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pair.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        pair.exists(),
        "no pair after the headless run; log:\n{log_text}"
    );
    assert!(ws.join("concepts/cat/cat-neg.safetensors").exists());
    drop(headless);
}

/// Kills a headless trainer of this workspace left running by a failed test.
struct HeadlessGuard(PathBuf);

impl Drop for HeadlessGuard {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-f", &format!("-w {}", self.0.display())])
            .status();
    }
}

/// Runs `dreamartist ARGS` to the end, killed after `secs` (a hung child
/// fails the test instead of hanging it).
fn run_bounded(args: &[&str], secs: u64) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dreamartist"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dreamartist starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} ran past {secs}s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

/// Issue #21: a 2-run sweep on the tiny model through the CLI, then the
/// workbench's runs browser lists both runs, marks them, and the compare view
/// overlays both curves (its legend names both run ids). Set
/// `DA_COMPARE_CAPTURE=FILE` to keep the compare screen (the README's capture).
#[test]
fn sweep_then_compare_both_runs_in_the_runs_browser() {
    if !have_tmux("sweep_then_compare_both_runs_in_the_runs_browser") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), true);
    let sweep = tmp.path().join("cfg.toml");
    std::fs::write(
        &sweep,
        "concept = \"cat\"\nseeds = [0]\n[train]\nsample_every = 10\n[grid]\ntrain_cfg = [\"1\", \"3\"]\nsteps = [20]\n",
    )
    .unwrap();
    let out = run_bounded(
        &["sweep", sweep.to_str().unwrap(), "-w", ws.to_str().unwrap()],
        300,
    );
    assert!(
        out.status.success(),
        "sweep failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = run_bounded(&["runs", "cat", "-w", ws.to_str().unwrap(), "--json"], 60);
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    let bin = env!("CARGO_BIN_EXE_dreamartist");
    let server = format!("da-compare-{}", std::process::id());
    let done = tmp.path().join("exited");
    start_session(
        &server,
        &format!(
            "{bin} tui -w {} --image-protocol halfblocks; echo $? > {}",
            ws.display(),
            done.display()
        ),
    );
    let _cleanup = scopeguard(server.clone());
    wait_for(&server, "loaded on cpu", 60);
    tmux(&server, &["send-keys", "-t", "wb", "B"]);
    let table = wait_for(&server, "sorted by id", 20);
    let table = if table.contains(&ids[1]) {
        table
    } else {
        wait_for(&server, &ids[1], 20)
    };
    assert!(
        table.contains(&ids[0]) && table.contains("finished"),
        "{table}"
    );
    assert!(table.contains("sweep cfg: 2 finished"), "{table}");
    tmux(&server, &["send-keys", "-t", "wb", "Space"]);
    std::thread::sleep(Duration::from_millis(200));
    tmux(&server, &["send-keys", "-t", "wb", "Space"]);
    std::thread::sleep(Duration::from_millis(200));
    tmux(&server, &["send-keys", "-t", "wb", "c"]);
    let screen = wait_for(&server, "legend:", 20);
    let screen = if screen.contains("smoothed loss") && !screen.contains("reading the runs") {
        screen
    } else {
        std::thread::sleep(Duration::from_secs(1));
        tmux(&server, &["capture-pane", "-p", "-t", "wb"])
    };
    let legend = screen
        .lines()
        .find(|l| l.contains("legend:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        legend.contains(&format!("━ A {}", ids[0])) && legend.contains(&format!("━ B {}", ids[1])),
        "{screen}"
    );
    assert!(
        screen.contains("train_cfg") && screen.contains("step 20"),
        "{screen}"
    );
    // The curves are drawn (braille dots on the chart).
    assert!(
        screen
            .chars()
            .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
            .count()
            > 20,
        "{screen}"
    );
    if let Ok(path) = std::env::var("DA_COMPARE_CAPTURE") {
        let _ = std::fs::write(path, &screen);
    }
    tmux(&server, &["send-keys", "-t", "wb", "Escape"]);
    wait_for(&server, "sorted by id", 10);
    tmux(&server, &["send-keys", "-t", "wb", "q"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&server, &["send-keys", "-t", "wb", "q"]);
    assert_eq!(wait_for_file(&done, 30).trim(), "0");
}
