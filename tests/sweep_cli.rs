//! `dreamartist sweep` and `dreamartist runs` through the binary, on the tiny
//! SD1 model: a 2×2 grid × seeds into four runs and a results table, a sweep
//! killed mid-way finishing only what is missing, array-job style `--only`,
//! `--jobs`, `[eval]`, refusals; the runs table, notes, tags, promote, export.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{bin, fails, fixtures, ok, sweep_workspace, Spawned, GRID};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// JSON lines of stdout.
fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn sweep_dir(ws: &Path, name: &str) -> PathBuf {
    ws.join("concepts/purple_cross/sweeps").join(name)
}

/// `results.json` of a sweep.
fn results(ws: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(sweep_dir(ws, name).join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every file of a folder with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            let m = std::fs::metadata(&p).unwrap().modified().unwrap();
            out.insert(p.clone(), (std::fs::read(&p).unwrap(), m));
        }
    }
    out
}

#[test]
fn a_grid_of_two_options_and_two_seeds_is_four_runs_and_a_table() {
    let (_tmp, ws, file) = sweep_workspace(GRID);
    let list = ok(&["sweep", s(&file), "-w", s(&ws), "--list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[0].starts_with("0\tpending") && lines[3].contains("train_cfg=\"2\", seed=1"));

    let out = ok(&["sweep", s(&file), "-w", s(&ws), "--json"]);
    let ev = events(&out);
    let ended: Vec<_> = ev.iter().filter(|e| e["event"] == "run_ended").collect();
    assert_eq!(ended.len(), 4, "{out}");
    assert!(ended.iter().all(|e| e["status"] == "finished"), "{out}");
    assert_eq!(ev.last().unwrap()["complete"], true);

    let r = results(&ws, "grid");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let mut ids: Vec<&str> = runs.iter().map(|x| x["run"].as_str().unwrap()).collect();
    for (i, x) in runs.iter().enumerate() {
        assert_eq!(x["index"], i);
        assert_eq!(x["status"], "finished");
        assert_eq!(x["summary"]["step"], 20);
        assert_eq!(x["options"]["seed"], (i % 2) as u64);
        let cfg = if i < 2 { "1" } else { "2" };
        assert_eq!(x["options"]["train_cfg"], cfg);
        // The run trained with exactly these options.
        let config = std::fs::read_to_string(
            ws.join("concepts/purple_cross/runs")
                .join(x["run"].as_str().unwrap())
                .join("config.toml"),
        )
        .unwrap();
        assert!(
            config.contains(&format!("train_cfg = \"{cfg}\"")),
            "{config}"
        );
        assert!(config.contains(&format!("seed = {}", i % 2)), "{config}");
        let method = if i < 2 {
            "Textual Inversion"
        } else {
            "DreamArtist"
        };
        assert_eq!(x["summary"]["method"], method);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four run folders");
    assert_eq!(r["varying"], serde_json::json!(["train_cfg", "seed"]));
    let md = std::fs::read_to_string(sweep_dir(&ws, "grid").join("results.md")).unwrap();
    assert!(
        md.contains("| # | train_cfg | seed | run | status |"),
        "{md}"
    );
    assert_eq!(md.matches("| finished | 20/20 |").count(), 4, "{md}");

    // Run again: nothing to do, nothing rewritten, the model not even loaded.
    let runs_dir = ws.join("concepts/purple_cross/runs");
    let before = snapshot(&runs_dir);
    let out = ok(&["sweep", s(&file), "-w", s(&ws), "--json"]);
    let skipped = events(&out)
        .iter()
        .filter(|e| e["event"] == "run_skipped" && e["status"] == "finished")
        .count();
    assert_eq!(skipped, 4, "{out}");
    assert!(
        before == snapshot(&runs_dir),
        "a finished sweep's runs were rewritten"
    );

    // The runs table lists them (and the concept is no longer "new").
    let table = ok(&["runs", "purple_cross", "-w", s(&ws), "--sort", "loss"]);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.lines().next().unwrap().starts_with("run "), "{table}");
}

/// Killed after its first run, the sweep trains only what is missing when run
/// again: the first run is left untouched, an interrupted one resumed or
/// restarted, and every planned run ends finished in its own folder.
#[cfg(unix)]
#[test]
fn a_killed_sweep_finishes_only_what_is_missing() {
    let sweep = GRID.replace("[grid]", "[train]\ncheckpoint_every = 5\n[grid]");
    let (_tmp, ws, file) = sweep_workspace(&sweep);
    let child = Spawned::start(bin().args(["sweep", s(&file), "-w", s(&ws), "--json"]));
    let first = child.wait_for_line(Duration::from_secs(120), |l| l.contains("run_ended"));
    child.signal("-KILL");
    let _ = child.finish(Duration::from_secs(60));
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (first["index"].as_u64(), first["status"].as_str()),
        (Some(0), Some("finished"))
    );
    let first_id = first["run"].as_str().unwrap().to_string();
    let first_dir = ws.join("concepts/purple_cross/runs").join(&first_id);
    let before = snapshot(&first_dir);

    let list = ok(&["sweep", s(&file), "-w", s(&ws), "--list"]);
    assert!(
        list.lines().next().unwrap().starts_with("0\tfinished"),
        "{list}"
    );
    assert!(
        !list.contains("running"),
        "a killed sweep's run is not running:\n{list}"
    );

    let out = ok(&["sweep", s(&file), "-w", s(&ws), "--json"]);
    let ev = events(&out);
    assert!(
        ev.iter().any(|e| e["event"] == "run_skipped"
            && e["index"] == 0
            && e["run"] == first_id.as_str()),
        "{out}"
    );
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "run_started" && e["index"] == 0),
        "{out}"
    );
    assert!(
        before == snapshot(&first_dir),
        "the finished run's files were rewritten"
    );
    let r = results(&ws, "grid");
    let runs = r["runs"].as_array().unwrap();
    assert!(runs.iter().all(|x| x["status"] == "finished"), "{r:#}");
    assert_eq!(runs[0]["run"], first_id.as_str());
    let mut ids: Vec<&str> = runs.iter().map(|x| x["run"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    // A run cut short after a checkpoint was continued, not started over.
    for e in ev.iter().filter(|e| e["event"] == "run_started") {
        if let Some(resumed) = e["resume"].as_str() {
            let i = e["index"].as_u64().unwrap() as usize;
            assert_eq!(runs[i]["run"], resumed);
        }
    }
}

/// An array job's task runs one index; the others, and `--report`, follow.
#[test]
fn only_runs_one_index_and_report_gathers() {
    let (_tmp, ws, file) = sweep_workspace(GRID);
    let out = ok(&["sweep", s(&file), "-w", s(&ws), "--only", "2", "--json"]);
    let started: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "run_started")
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["index"], 2);
    let r = results(&ws, "grid");
    let status: Vec<&str> = r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["pending", "pending", "finished", "pending"]);
    let md = ok(&["sweep", s(&file), "-w", s(&ws), "--report"]);
    assert!(md.contains("1 finished, 3 pending"), "{md}");

    // The rest two at a time, each in its own process.
    let out = ok(&["sweep", s(&file), "-w", s(&ws), "--jobs", "2"]);
    assert!(out.contains("4 finished"), "{out}");
    assert!(results(&ws, "grid")["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"] == "finished"));

    let err = fails(&["sweep", s(&file), "-w", s(&ws), "--only", "4"]);
    assert!(
        err.contains("--only 4") && err.contains("runs 0 to 3"),
        "{err}"
    );
    // Changing the file under the same name is refused.
    std::fs::write(&file, GRID.replace("steps = [20]", "steps = [21]")).unwrap();
    let err = fails(&["sweep", s(&file), "-w", s(&ws)]);
    assert!(
        err.contains("grid.toml") && err.contains("steps=21") && err.contains("name ="),
        "{err}"
    );
}

#[test]
fn bad_sweep_files_name_the_file_and_the_key() {
    let (_tmp, ws, file) = sweep_workspace(GRID);
    for (body, needles) in [
        (
            GRID.replace("steps = [20]", "stpes = [20]"),
            &["grid.toml", "stpes"][..],
        ),
        (
            GRID.replace("steps = [20]", "steps = [\"many\"]"),
            &["grid.toml", "[grid] steps"],
        ),
        (
            GRID.replace("purple_cross", "nope"),
            &["grid.toml", "nope", "purple_cross"],
        ),
        (
            format!("{GRID}[eval]\nsamples = 0\n"),
            &["grid.toml", "samples"],
        ),
    ] {
        std::fs::write(&file, &body).unwrap();
        let err = fails(&["sweep", s(&file), "-w", s(&ws)]);
        for n in needles {
            assert!(err.contains(n), "`{n}` not in: {err}");
        }
    }
    assert!(
        !ws.join("concepts/purple_cross/runs").exists(),
        "nothing trained"
    );
}

/// `[eval]`: each finished run is scored with CLIP and the table shows it.
#[test]
fn eval_scores_each_finished_run() {
    let clip = fixtures().join("tiny-clip");
    let sweep = format!(
        "concept = \"purple_cross\"\n[train]\nsteps = 3\n[grid]\ntrain_cfg = [\"2\"]\n\
         [eval]\nclip = \"{}\"\nsamples = 2\nsteps = 2\n",
        clip.display()
    );
    let (_tmp, ws, file) = sweep_workspace(&sweep);
    let md = ok(&["sweep", s(&file), "-w", s(&ws)]);
    assert!(md.contains("CLIP-I") && md.contains("CLIP-T"), "{md}");
    let run = &results(&ws, "grid")["runs"][0];
    let fidelity = run["summary"]["eval"]["fidelity"].as_f64().unwrap();
    assert!(fidelity.is_finite(), "{run}");
    let dir = ws
        .join("concepts/purple_cross/runs")
        .join(run["run"].as_str().unwrap());
    assert!(dir.join("eval/final/eval.json").is_file());
}

/// `runs`: the table, note and tags, promote a checkpoint, export one.
#[test]
fn runs_notes_tags_promote_and_export() {
    let sweep = "concept = \"purple_cross\"\n[train]\nsteps = 4\ncheckpoint_every = 2\n[grid]\nseed = [0, 1]\n";
    let (_tmp, ws, file) = sweep_workspace(sweep);
    ok(&["sweep", s(&file), "-w", s(&ws)]);
    let w = s(&ws);
    let rows: Vec<serde_json::Value> = events(&ok(&[
        "runs",
        "purple_cross",
        "-w",
        w,
        "--sort",
        "seed",
        "--desc",
        "--json",
    ]));
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["seed"].as_u64(), rows[1]["seed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(rows[0]["state"], "finished");
    let run = rows[1]["id"].as_str().unwrap();

    ok(&[
        "runs",
        "note",
        "purple_cross",
        run,
        "-w",
        w,
        "seed 0 looks right",
    ]);
    assert_eq!(
        ok(&["runs", "note", "purple_cross", run, "-w", w]),
        "seed 0 looks right\n"
    );
    assert_eq!(
        ok(&["runs", "tag", "purple_cross", run, "-w", w, "best", "keep"]),
        "best\nkeep\n"
    );
    assert_eq!(
        ok(&[
            "runs",
            "tag",
            "purple_cross",
            run,
            "-w",
            w,
            "--remove",
            "keep"
        ]),
        "best\n"
    );
    let err = fails(&["runs", "tag", "purple_cross", run, "-w", w, "two words"]);
    assert!(err.contains("two words"), "{err}");
    let table = ok(&["runs", "list", "purple_cross", "-w", w]);
    assert!(
        table.contains("best") && table.contains("seed 0 looks right"),
        "{table}"
    );
    let err = fails(&["runs", "purple_cross", "-w", w, "--sort", "colour"]);
    assert!(err.contains("unknown column `colour`"), "{err}");

    // Checkpoint 2 of the seed-0 run becomes the concept's pair.
    let out = ok(&[
        "runs",
        "promote",
        "purple_cross",
        run,
        "--step",
        "2",
        "-w",
        w,
    ]);
    assert!(out.contains("step 2"), "{out}");
    let (t, meta) = dreamartist::concept::load_embedding(
        &ws.join("concepts/purple_cross/purple_cross.safetensors"),
    )
    .unwrap();
    assert_eq!((meta.run.as_str(), meta.step), (run, 2));
    let (_, neg) = dreamartist::concept::load_embedding(
        &ws.join("concepts/purple_cross/purple_cross-neg.safetensors"),
    )
    .unwrap();
    assert_eq!((neg.run.as_str(), neg.step), (run, 2), "one pair");
    let ckpt = candle_core::safetensors::load(
        ws.join("concepts/purple_cross/runs")
            .join(run)
            .join("checkpoints/step-00000002.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    common::assert_bitwise_same(&t, &ckpt["pos"], "promoted vectors");
    // The promoted pair generates.
    let png = ws.join("out/p.png");
    ok(&[
        "generate",
        "-w",
        w,
        "--prompt",
        "a photo of <purple_cross>",
        "--steps",
        "2",
        "--out",
        s(&png),
    ]);
    assert!(png.is_file());

    let out = ok(&[
        "runs",
        "export",
        "purple_cross",
        run,
        "--step",
        "4",
        "--format",
        "a1111",
        "-w",
        w,
    ]);
    let files: Vec<&str> = out.lines().collect();
    assert_eq!(files.len(), 2, "{out}");
    assert!(
        files[0].contains(&format!(
            "exports/a1111/{run}-step-4/purple_cross.safetensors"
        )),
        "{out}"
    );
    let err = fails(&[
        "runs",
        "export",
        "purple_cross",
        run,
        "--step",
        "3",
        "--format",
        "a1111",
        "-w",
        w,
    ]);
    assert!(
        err.contains("no checkpoint at step 3") && err.contains("2, 4"),
        "{err}"
    );
}
