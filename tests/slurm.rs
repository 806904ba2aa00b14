//! `--slurm` against a real single-node Slurm (Debian's slurm-wlm + munge;
//! `sudo scripts/slurm-local.sh install && sudo scripts/slurm-local.sh start`
//! writes a slurm.conf for this host and starts the daemons; `.ci/run` does).
//! Without a cluster these tests say so and pass, unless
//! `DREAMARTIST_REQUIRE_SLURM=1` (CI) makes that a failure.
//!
//! - a 2×2 sweep on the tiny model as one job array, waited for: four
//!   finished runs, the results table, one log per task; a refused
//!   submission and a failing task show Slurm's message and the log's end;
//! - a task requeued while it trains resumes its checkpoint and ends with
//!   the same vectors, bit for bit, as an uninterrupted run.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, ok, sweep_workspace, GRID};

/// Whether a Slurm cluster answers here; says why not.
fn cluster() -> bool {
    let answer = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    let why = match &answer {
        Ok(out) if out.status.success() => {
            let states = String::from_utf8_lossy(&out.stdout);
            if states
                .lines()
                .any(|s| ["idle", "mix", "alloc"].contains(&s.trim().trim_end_matches('*')))
            {
                return true;
            }
            format!("no node is up (sinfo: {})", states.trim())
        }
        Ok(out) => format!(
            "sinfo failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("sinfo: {e}"),
    };
    let msg = format!(
        "no Slurm cluster here ({why}); start a single-node one with \
         `sudo scripts/slurm-local.sh install && sudo scripts/slurm-local.sh start`"
    );
    if std::env::var("DREAMARTIST_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!("DREAMARTIST_REQUIRE_SLURM=1: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The binary with `--wait` polling fast.
fn dreamartist(args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .env("DREAMARTIST_SLURM_POLL", "0.5")
        .output()
        .expect("binary runs")
}

/// Polls `done` every `every` until it returns `Some`; panics with `what()`
/// after five minutes (a cluster under load is slow, never stuck).
fn poll_until<T>(
    every: Duration,
    what: impl Fn() -> String,
    mut done: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(every);
    }
}

/// `status SWEEP --json` of the workspace.
fn status_json(ws: &Path, sweep: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["status", sweep, "-w", s(ws), "--json"])).unwrap()
}

/// The job id of `submitted job 123: …`.
fn submitted_job(stdout: &str) -> String {
    let rest = stdout
        .strip_prefix("submitted job ")
        .unwrap_or_else(|| panic!("not submitted: {stdout}"));
    rest.split(':').next().unwrap().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The embedding tensors of a safetensors file, metadata left out.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn a_two_by_two_sweep_runs_as_a_job_array() {
    if !cluster() {
        return;
    }
    let (_tmp, ws, file) = sweep_workspace(GRID);
    let out = dreamartist(&[
        "sweep",
        s(&file),
        "-w",
        s(&ws),
        "--slurm",
        "--wait",
        "--time",
        "00:10:00",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("submitted job "), "{stdout}");
    assert!(
        stdout.contains("4 run(s) of sweep grid (concept purple_cross), array 0-3"),
        "{stdout}"
    );
    let job = submitted_job(&stdout);
    assert!(
        stderr.contains("task 3: "),
        "the wait followed the tasks: {stderr}"
    );

    let dir = ws.join("concepts/purple_cross/sweeps/grid");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(r["summary"]["step"], 20);
        assert_eq!(r["options"]["seed"], (i % 2) as u64);
        let log = std::fs::read_to_string(dir.join(format!("slurm/logs/{job}_{i}.log"))).unwrap();
        assert!(
            log.contains(&format!("task {i} (job ")) && log.contains("attempt 1"),
            "{log}"
        );
        assert!(log.contains(&format!("task {i} exits with 0")), "{log}");
    }
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert_eq!(md.matches("| finished | 20/20 |").count(), 4, "{md}");
    // Tasks finishing together took turns at the concept's pair: never torn.
    let concept = ws.join("concepts/purple_cross");
    let run_of_file = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        meta.metadata().as_ref().and_then(|m| m.get("run").cloned())
    };
    let pos = run_of_file(&concept.join("purple_cross.safetensors"));
    assert!(pos.is_some());
    let neg = concept.join("purple_cross-neg.safetensors");
    if neg.is_file() {
        assert_eq!(run_of_file(&neg), pos, "a torn pair");
    }
    assert!(!concept.join(".pair.lock").exists());
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("slurm/jobs/{job}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["indices"], serde_json::json!([0, 1, 2, 3]));
    let script = std::fs::read_to_string(record["script"].as_str().unwrap()).unwrap();
    assert!(script.contains("#SBATCH --array=0-3\n"), "{script}");
    assert!(Path::new(record["snapshot"].as_str().unwrap()).is_file());

    let status = status_json(&ws, "purple_cross/grid");
    assert_eq!(status["jobs"], serde_json::json!([job]));
    for row in status["rows"].as_array().unwrap() {
        assert_eq!(row["status"], "finished");
        assert_eq!(row["job"], job.as_str());
    }

    // Nothing left to submit.
    let out = dreamartist(&["sweep", s(&file), "-w", s(&ws), "--slurm"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no runs to submit"),
        "{}",
        text(&out.stderr)
    );

    // The scheduler's refusal, in its own words.
    std::fs::write(
        &file,
        GRID.replace("seeds = [0, 1]", "name = \"other\"\nseeds = [5]"),
    )
    .unwrap();
    let out = dreamartist(&[
        "sweep",
        s(&file),
        "-w",
        s(&ws),
        "--slurm",
        "--partition",
        "no-such-partition",
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Slurm refused the job") && err.contains("partition"),
        "{err}"
    );
}

#[test]
fn a_failing_task_shows_its_log() {
    if !cluster() {
        return;
    }
    // Trains nothing: size 12 is refused when the run starts (on the node).
    let (_tmp, ws, file) = sweep_workspace(
        "concept = \"purple_cross\"\nname = \"bad\"\n[train]\nsteps = 5\nsize = 12\n",
    );
    let out = dreamartist(&["sweep", s(&file), "-w", s(&ws), "--slurm", "--wait"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("task 0 (no run) did not finish: never started"),
        "{err}"
    );
    assert!(
        err.contains("last lines of") && err.contains("multiple of 8"),
        "{err}"
    );
}

/// The run that sweep `name`'s run 0 trains in, once it has one.
fn run_of(ws: &Path, name: &str) -> Option<String> {
    let rec = std::fs::read_to_string(
        ws.join(format!("concepts/purple_cross/sweeps/{name}/runs/0.json")),
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&rec).ok()?;
    v["run"].as_str().map(str::to_string)
}

fn steps_logged(ws: &Path, run: &str) -> usize {
    std::fs::read_to_string(ws.join(format!("concepts/purple_cross/runs/{run}/metrics.jsonl")))
        .map_or(0, |t| t.lines().count())
}

#[test]
fn a_requeued_task_resumes_bit_exactly() {
    if !cluster() {
        return;
    }
    let steps = 600;
    let sweep = format!("concept = \"purple_cross\"\nname = \"long\"\n[train]\nsteps = {steps}\ntrain_cfg = \"2\"\nseed = 3\n");
    let (_tmp, ws, file) = sweep_workspace(&sweep);
    let out = dreamartist(&["sweep", s(&file), "-w", s(&ws), "--slurm"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let job = submitted_job(&stdout);

    // Requeue it once it has trained a while (and not finished).
    let run = poll_until(
        Duration::from_millis(100),
        || "the task did not start training in time".into(),
        || {
            let run = run_of(&ws, "long")?;
            let n = steps_logged(&ws, &run);
            assert!(
                n < steps,
                "finished before it could be requeued ({n} steps)"
            );
            (n >= 40).then_some(run)
        },
    );
    // Slurm requeues it (as preemption does): the script leaves that to Slurm.
    let first = steps_logged(&ws, &run);
    let rq = Command::new("scontrol")
        .args(["requeue", &format!("{job}_0")])
        .output()
        .unwrap();
    assert!(rq.status.success(), "{}", text(&rq.stderr));
    let log_path = ws.join(format!(
        "concepts/purple_cross/sweeps/long/slurm/logs/{job}_0.log"
    ));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Attempt 2 resumes it; then the time-limit warning's signal (to the
    // script only): the task requeues itself.
    poll_until(
        Duration::from_millis(100),
        || format!("attempt 2 did not train in time: {}", log()),
        || (log().contains("attempt 2") && steps_logged(&ws, &run) >= first + 40).then_some(()),
    );
    let warn = Command::new("scancel")
        .args(["--batch", "--signal=TERM", &format!("{job}_0")])
        .output()
        .unwrap();
    assert!(warn.status.success(), "{}", text(&warn.stderr));

    // The same run finishes, in a third attempt.
    let row = poll_until(
        Duration::from_millis(500),
        || format!("the requeued task did not finish in time: {}", log()),
        || {
            let row = status_json(&ws, "purple_cross/long")["rows"][0].clone();
            let live = row["slurm"]["live"].as_bool().unwrap_or(false);
            (row["status"] == "finished" && !live).then_some(row)
        },
    );
    assert_eq!(
        row["run"],
        run.as_str(),
        "the requeued task started another run"
    );
    let log = log();
    assert!(
        log.contains("saving a checkpoint") && log.contains("left to Slurm"),
        "{log}"
    );
    assert!(
        log.contains("requeueing task 0 to resume from its checkpoint"),
        "the task did not requeue itself: {log}"
    );
    assert!(
        log.contains("attempt 3") && log.matches(&format!("resuming run {run}")).count() == 2,
        "{log}"
    );

    // An uninterrupted run of the same options, here.
    ok(&[
        "train",
        "purple_cross",
        "-w",
        s(&ws),
        "--steps",
        &steps.to_string(),
        "--train-cfg",
        "2",
        "--seed",
        "3",
    ]);
    let runs = ws.join("concepts/purple_cross/runs");
    let here = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|id| *id != run)
        .unwrap();
    for word in ["purple_cross.safetensors", "purple_cross-neg.safetensors"] {
        assert_eq!(
            tensors(&runs.join(&run).join(word)),
            tensors(&runs.join(&here).join(word)),
            "{word}: the requeued run's vectors differ from an uninterrupted run's"
        );
    }
}

#[test]
fn queued_tasks_show_in_status_and_the_workbench_and_cancel() {
    if !cluster() {
        return;
    }
    let (_tmp, ws, file) = sweep_workspace(
        "concept = \"purple_cross\"\nname = \"held\"\nseeds = [0, 1]\n[train]\nsteps = 20\n",
    );
    // Held: they wait in the queue until released.
    let out = dreamartist(&[
        "sweep",
        s(&file),
        "-w",
        s(&ws),
        "--slurm",
        "--sbatch-arg=--hold",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let job = submitted_job(&stdout);

    let status = ok(&["status", "held", "-w", s(&ws)]);
    assert!(
        status.starts_with(&format!("sweep purple_cross/held (job {job}): 2 pending")),
        "{status}"
    );
    assert_eq!(
        status.matches("PENDING (JobHeldUser)").count(),
        2,
        "{status}"
    );

    // Submitting again leaves the queued runs alone.
    let out = dreamartist(&["sweep", s(&file), "-w", s(&ws), "--slurm"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no runs to submit"),
        "{err}"
    );
    assert!(
        err.contains(&format!("run 0 left out: pending in job {job}")),
        "{err}"
    );

    // The workbench's line for the sweep.
    let wsp = dreamartist::workspace::Workspace::open(&ws).unwrap();
    let (lines, _) =
        dreamartist::tui::sweeps::concept_sweeps(&wsp, &wsp.concept_dir("purple_cross"));
    assert_eq!(
        lines,
        vec![format!(
            "sweep held (Slurm job {job}: 2 PENDING): 2 pending"
        )]
    );

    let out = ok(&["status", "held", "-w", s(&ws), "--cancel", "--only", "1"]);
    assert_eq!(out.trim(), format!("cancelled {job}_1"));

    // The tasks read the sweep as it was submitted: editing (here: breaking)
    // the file afterwards changes nothing for them.
    std::fs::write(&file, "this is not a sweep file").unwrap();
    let release = Command::new("scontrol")
        .args(["release", &job])
        .output()
        .unwrap();
    assert!(release.status.success(), "{}", text(&release.stderr));
    let rows = poll_until(
        Duration::from_millis(500),
        || "the released task did not finish".into(),
        || {
            let rows = status_json(&ws, "held")["rows"].clone();
            (rows[0]["status"] == "finished" && rows[0]["slurm"].is_null()).then_some(rows)
        },
    );
    assert_eq!(rows[1]["status"], "pending", "the cancelled one stays");
    let out = ok(&["status", "held", "-w", s(&ws), "--cancel"]);
    assert!(out.contains("nothing to cancel"), "{out}");
    let status = ok(&["status", "held", "-w", s(&ws)]);
    assert!(!status.contains("PENDING"), "{status}");
}
