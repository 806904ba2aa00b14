//! `--slurm` without a cluster: the sbatch script of `--dry-run` as text
//! (snapshot), what a dry run leaves behind (nothing), and the errors that
//! name the fix (no sbatch on PATH, bad options, `--slurm` with local-only
//! flags). The real cluster is `tests/slurm.rs`.

mod common;

use std::path::Path;

use common::{bin, sweep_workspace, GRID};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary with `PATH` holding no Slurm command.
fn without_slurm(args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .env("PATH", "/nonexistent")
        .output()
        .expect("binary runs")
}

#[test]
fn dry_run_prints_the_job_array_script_and_writes_nothing() {
    let (tmp, ws, file) = sweep_workspace(GRID);
    let out = without_slurm(&[
        "sweep",
        s(&file),
        "-w",
        s(&ws),
        "--slurm",
        "--dry-run",
        "--partition",
        "gpu",
        "--gres",
        "gpu:1",
        "--time",
        "04:00:00",
        "--max-parallel",
        "2",
        "--cpus-per-task",
        "8",
        "--mem",
        "32G",
        "--sbatch-arg=--account=lab",
        "--sbatch-arg",
        "--qos=low",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout)
        .unwrap()
        .replace(s(&std::fs::canonicalize(tmp.path()).unwrap()), "<tmp>")
        .replace(s(tmp.path()), "<tmp>")
        .replace(env!("CARGO_BIN_EXE_dreamartist"), "<dreamartist>");
    // The snapshot's name carries the time and this process.
    let script = regex::Regex::new(r"submit-\d{8}-\d{6}-\d+\.toml")
        .unwrap()
        .replace_all(&script, "submit-<time>-<pid>.toml")
        .to_string();
    insta::assert_snapshot!("dry_run_script", script);
    assert!(
        !ws.join("concepts/purple_cross/sweeps").exists(),
        "a dry run wrote the sweep's folder"
    );

    // The script runs: bash accepts it (syntax only).
    let path = tmp.path().join("job.sbatch");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // --only narrows the array.
    let out = without_slurm(&[
        "sweep",
        s(&file),
        "-w",
        s(&ws),
        "--slurm",
        "--dry-run",
        "--only",
        "1,3",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("#SBATCH --array=1,3\n"), "{text}");
}

#[test]
fn errors_name_the_fix() {
    let (_tmp, ws, file) = sweep_workspace(GRID);
    let out = without_slurm(&["sweep", s(&file), "-w", s(&ws), "--slurm"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("`sbatch` is not on PATH")
            && err.contains("login node")
            && err.contains("--dry-run"),
        "{err}"
    );
    assert!(
        !ws.join("concepts/purple_cross/sweeps/grid/slurm").exists(),
        "a refused submission left a Slurm folder"
    );

    for (args, want) in [
        (vec!["--slurm", "--dry-run", "--time", "4h"], "--time `4h`"),
        (
            vec!["--slurm", "--dry-run", "--max-parallel", "0"],
            "--max-parallel must be at least 1",
        ),
        (
            vec!["--slurm", "--dry-run", "--sbatch-arg", "account=lab"],
            "give one whole sbatch option",
        ),
        (vec!["--slurm", "--list"], "leave out --list"),
    ] {
        let mut all = vec!["sweep", s(&file), "-w", s(&ws)];
        all.extend(args.iter().copied());
        let out = without_slurm(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // Slurm options without --slurm are a usage error.
    let out = without_slurm(&["sweep", s(&file), "-w", s(&ws), "--partition", "gpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slurm"));
}

#[test]
fn train_dry_run_is_a_one_run_sweep_that_pins_every_option_and_leaves_nothing() {
    let (_tmp, ws, _file) = sweep_workspace(GRID);
    let out = without_slurm(&[
        "train",
        "purple_cross",
        "-w",
        s(&ws),
        "--steps",
        "30",
        "--seed",
        "7",
        "--slurm",
        "--dry-run",
        "--gres",
        "gpu:1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("#SBATCH --array=0\n"), "{script}");
    assert!(script.contains("#SBATCH --gres=gpu:1\n"), "{script}");
    assert!(script.contains("/sweeps/train-"), "{script}");
    assert!(
        !ws.join("concepts/purple_cross/sweeps").exists(),
        "a dry run wrote a sweep folder"
    );

    let out = without_slurm(&[
        "train",
        "purple_cross",
        "-w",
        s(&ws),
        "--slurm",
        "--resume",
        "latest",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume with --slurm"));
}

#[test]
fn status_without_a_cluster_shows_the_runs() {
    let (_tmp, ws, file) = sweep_workspace(GRID);
    let out = without_slurm(&["status", "-w", s(&ws)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no sweeps"));
    // A local sweep's folder, then its status: the runs, no jobs.
    common::ok(&["sweep", s(&file), "-w", s(&ws), "--only", "0"]);
    let out = without_slurm(&["status", "grid", "-w", s(&ws)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("sweep purple_cross/grid (not submitted to Slurm): 1 finished, 3 pending"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("#  slurm  run"), "{text}");
    assert!(
        lines[2].starts_with("0  -      ") && lines[2].contains("finished  20/20"),
        "{text}"
    );
    assert!(lines[3].contains("pending   0/20"), "{text}");

    let out = without_slurm(&["status", "nope", "-w", s(&ws)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("purple_cross/grid"),
        "{err}"
    );
    let out = without_slurm(&["status", "grid", "-w", s(&ws), "--cancel"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("never submitted to Slurm"),
        "{text}"
    );
}
