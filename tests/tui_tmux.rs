//! The real binary in tmux on the tiny model: start training from the
//! keyboard, watch the step counter move, open help, quit cleanly.
//! Needs tmux (`.ci/run` installs it); set DREAMARTIST_SKIP_TMUX=1 to skip
//! on machines without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for(session: &str, what: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if screen.contains(what) {
            return screen;
        }
        if Instant::now() > deadline {
            panic!("`{what}` never appeared; screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// The step of the gauge label `k/N` on a captured screen.
fn gauge_step(screen: &str, total: &str) -> Option<u64> {
    let suffix = format!("/{total}");
    screen
        .split_whitespace()
        .find_map(|w| w.strip_suffix(&suffix).and_then(|n| n.parse().ok()))
}

#[test]
fn train_from_the_keyboard_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        if std::env::var_os("DREAMARTIST_SKIP_TMUX").is_some() {
            return;
        }
        panic!("tmux is not installed (apt-get install tmux), or set DREAMARTIST_SKIP_TMUX=1");
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let ws: PathBuf = tmp.path().join("ws");
    let bin = env!("CARGO_BIN_EXE_dreamartist");
    let ok = |args: &[&str]| {
        assert!(
            Command::new(bin).args(args).status().unwrap().success(),
            "{args:?}"
        )
    };
    ok(&[
        "init",
        ws.to_str().unwrap(),
        "--model",
        fixtures.join("tiny-sd1/model").to_str().unwrap(),
    ]);
    ok(&[
        "concept",
        "add",
        "cat",
        "--reference",
        fixtures.join("references/chelsea.png").to_str().unwrap(),
        "-w",
        ws.to_str().unwrap(),
    ]);
    let session = format!("da-{}", std::process::id());
    let done = tmp.path().join("exited");
    let cmd = format!(
        "{bin} tui -w {} --image-protocol halfblocks; echo $? > {}",
        ws.display(),
        done.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "48",
        &cmd,
    ]);
    let cleanup = scopeguard(session.clone());

    wait_for(&session, "loaded on cpu", 60);
    tmux(&["send-keys", "-t", &session, "t"]);
    let first = wait_for(&session, "running", 60);
    let s1 = gauge_step(&first, "1500").unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut s2 = s1;
    while s2 <= s1 + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        s2 = gauge_step(&tmux(&["capture-pane", "-p", "-t", &session]), "1500").unwrap_or(s2);
    }
    assert!(s2 > s1 + 2, "the step counter did not move ({s1} → {s2})");

    tmux(&["send-keys", "-t", &session, "?"]);
    wait_for(&session, "Help · keys", 10);
    // Any key closes help. (Escape followed at once by `q` would reach the app
    // as Alt-q: terminals encode Alt as an Escape prefix.)
    tmux(&["send-keys", "-t", &session, "Enter"]);
    std::thread::sleep(Duration::from_millis(200));
    tmux(&["send-keys", "-t", &session, "q"]);
    wait_for(&session, "keep training headless", 10);
    tmux(&["send-keys", "-t", &session, "s"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let code = std::fs::read_to_string(&done).expect("the workbench exited");
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

/// Kills the tmux session even when an assertion fails.
fn scopeguard(session: String) -> impl Drop {
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .output();
        }
    }
    Guard(session)
}
