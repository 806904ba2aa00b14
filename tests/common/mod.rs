//! What the integration tests share: paths, running the binary, a fresh
//! workspace with one concept, bitwise tensor comparison. Each test crate uses
//! a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Tensor};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dreamartist"))
}

/// Runs a command that must succeed (its output in the failure message).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("binary runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `dreamartist ARGS`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(bin().args(args)).stdout).to_string()
}

/// `dreamartist ARGS`, which must fail; its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("binary runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A fresh workspace `<tmp>/ws` on `model` with concept `name` made from
/// `reference` (plus `extra` options of `concept add`).
pub fn workspace_with_concept(
    model: &Path,
    name: &str,
    reference: &Path,
    extra: &[&str],
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    run_ok(bin().arg("init").arg(&ws).arg("--model").arg(model));
    run_ok(
        bin()
            .args(["concept", "add", name, "--reference"])
            .arg(reference)
            .args(extra)
            .arg("-w")
            .arg(&ws),
    );
    tmp
}

/// The sweep of the sweep tests: a 2×2 grid of `train_cfg` × seeds, 20 steps.
pub const GRID: &str = "concept = \"purple_cross\"\nseeds = [0, 1]\n[grid]\ntrain_cfg = [\"1\", \"2\"]\nsteps = [20]\n";

/// A workspace on tiny-sd1 with concept `purple_cross` (from chelsea.png) and
/// `sweep` written to `<tmp>/grid.toml`: the temp dir, the workspace, the file.
pub fn sweep_workspace(sweep: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = workspace_with_concept(
        &fixtures().join("tiny-sd1/model"),
        "purple_cross",
        &fixtures().join("references/chelsea.png"),
        &["--class", "cat"],
    );
    let ws = tmp.path().join("ws");
    let file = tmp.path().join("grid.toml");
    std::fs::write(&file, sweep).unwrap();
    (tmp, ws, file)
}

/// The largest |value| of a tensor (of a difference: how far two tensors are apart).
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The f32 bit patterns of a tensor's values: equal patterns, equal values
/// (NaN included), which `==` on floats does not promise.
pub fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// Same shape and bitwise the same values (compared as f32).
pub fn assert_bitwise_same(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    assert!(f32_bits(a) == f32_bits(b), "{what}: values differ");
}

pub mod ldm_sdxl;

/// The prompt pair of the fixtures' `cpt_static` case: `a photo of <da>` /
/// `a photo of <da-neg>`, words of 3 and 6 vectors over the stacked matrix.
pub fn cpt_static_prompts(
    sd: &dreamartist::sd::StableDiffusion,
) -> dreamartist::train::ConceptPrompts {
    use dreamartist::sd::PseudoWord;
    let words = [
        PseudoWord {
            name: "<da>".into(),
            vectors: 3,
        },
        PseudoWord {
            name: "<da-neg>".into(),
            vectors: 6,
        },
    ];
    dreamartist::train::ConceptPrompts {
        positive: sd.tokenize("a photo of <da>", &words),
        negative: sd.tokenize("a photo of <da-neg>", &words),
    }
}

/// Copies a folder tree (a private copy of a fixture model that a test may change).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// `dreamartist train NAME -w WS --json EXTRA...`, which must succeed: its events.
pub fn train_events(ws: &Path, concept: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = bin();
    cmd.args(["train", concept, "-w", ws.to_str().unwrap(), "--json"])
        .args(extra);
    let out = run_ok(&mut cmd);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect()
}

/// A child process that is killed when the test ends, however it ends, and
/// whose stdout lines arrive on a channel, so every wait has a deadline: a
/// regression hangs a test for seconds, not CI for hours.
pub struct Spawned {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Spawned {
    /// Starts `cmd` with stdout piped (stderr discarded).
    pub fn start(cmd: &mut Command) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or `None` when the deadline passes or output ends.
    pub fn next_line(&self, timeout: std::time::Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Lines until one satisfies `want`; panics after `timeout`.
    pub fn wait_for_line(
        &self,
        timeout: std::time::Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("no expected line within {timeout:?}"),
            }
        }
    }

    /// Sends a signal (`-INT`, `-TERM`, …).
    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
    }

    /// The remaining lines and the exit status; panics (after killing) if the
    /// process has not ended within `timeout`.
    pub fn finish(
        mut self,
        timeout: std::time::Duration,
    ) -> (Vec<String>, std::process::ExitStatus) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("child state") {
                let rest: Vec<String> = self.lines.try_iter().collect();
                // The reader may still hold the last lines: drain until it ends.
                let mut rest = rest;
                while let Ok(l) = self
                    .lines
                    .recv_timeout(std::time::Duration::from_millis(200))
                {
                    rest.push(l);
                }
                return (rest, status);
            }
            if std::time::Instant::now() >= deadline {
                panic!("the process did not end within {timeout:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
