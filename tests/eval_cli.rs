//! `dreamartist eval` through the binary: two tiny runs trained with the same
//! seed (DreamArtist and its Textual Inversion baseline) compared side by side,
//! checkpoints with --json, and the errors a user meets first.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, fixtures, ok, workspace_with_concept};

fn clip() -> String {
    fixtures().join("tiny-clip").display().to_string()
}

/// A workspace on tiny-sd1 with concept `cat` (class word `cat`).
fn workspace() -> (tempfile::TempDir, String) {
    let tmp = workspace_with_concept(
        &fixtures().join("tiny-sd1/model"),
        "cat",
        &fixtures().join("references/chelsea.png"),
        &["--class", "cat"],
    );
    let ws = tmp.path().join("ws").display().to_string();
    (tmp, ws)
}

/// Trains a few steps and returns the run id.
fn train(ws: &str, cfg: &str) -> String {
    let out = ok(&[
        "train",
        "cat",
        "-w",
        ws,
        "--json",
        "--steps",
        "4",
        "--seed",
        "9",
        "--checkpoint-every",
        "2",
        "--train-cfg",
        cfg,
    ]);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    last["run_id"].as_str().unwrap().to_string()
}

const FAST: [&str; 4] = ["--samples", "2", "--steps", "3"];

#[test]
fn two_runs_side_by_side_with_table_json_and_grids() {
    let (_tmp, ws) = workspace();
    let da = train(&ws, "5");
    let ti = train(&ws, "1");
    assert_ne!(da, ti);
    let clip = clip();
    let mut args = vec![
        "eval", "cat", "-w", &ws, "--clip", &clip, "--run", &da, "--run", &ti,
    ];
    args.extend(FAST);
    let out = ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    // One header line names both runs, the next their methods, in the order given.
    let header = lines.iter().find(|l| l.contains(&da)).unwrap();
    assert!(
        header.contains(&ti) && header.find(&da) < header.find(&ti),
        "{out}"
    );
    assert!(
        out.contains("DreamArtist cfg 5") && out.contains("Textual Inversion"),
        "{out}"
    );
    assert!(out.contains("class word for CLIP-T: `cat`"), "{out}");
    let overall = lines.iter().find(|l| l.starts_with("overall")).unwrap();
    let numbers: Vec<f64> = overall
        .split(|c: char| c == '|' || c.is_whitespace())
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 6, "{overall}");
    for row in dreamartist::eval::OBJECT_PROMPTS {
        let p = row.replace("[name]", "<cat>");
        assert!(
            lines.iter().any(|l| l.starts_with(&p)),
            "missing row {p}:\n{out}"
        );
    }

    for (run, neg) in [(&da, "<cat-neg>"), (&ti, "")] {
        let dir = Path::new(&ws)
            .join("concepts/cat/runs")
            .join(run)
            .join("eval/final");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
        for key in ["fidelity", "text_alignment", "diversity"] {
            let v = report[key].as_f64().unwrap();
            assert!((-1.0..=2.0).contains(&v), "{key} = {v}");
        }
        assert_eq!(report["class_word"], "cat");
        let prompts = report["prompts"].as_array().unwrap();
        assert_eq!(prompts.len(), dreamartist::eval::OBJECT_PROMPTS.len());
        assert_eq!(prompts[1]["text"], "a photo of a cat on the beach");
        for p in prompts {
            assert_eq!(p["negative"], neg);
            for key in ["fidelity", "text_alignment", "diversity"] {
                assert!(p[key].is_number(), "{key}");
            }
            let grid = image::open(dir.join(p["grid"].as_str().unwrap())).unwrap();
            assert_eq!((grid.width(), grid.height()), (64 * 2 + 2, 64));
        }
        // The table printed the numbers in the file.
        let fid = format!("{:.4}", report["fidelity"].as_f64().unwrap());
        assert!(overall.contains(&fid), "{overall} lacks {fid}");
        // The scores, recomputed from the grid's samples with plain cosines.
        recompute_prompt_scores(&dir, &prompts[1]);
    }
}

/// Embeds the two samples of a prompt's grid, the reference and the prompt
/// in words with the tiny CLIP and checks the report's three numbers.
fn recompute_prompt_scores(dir: &Path, p: &serde_json::Value) {
    let clip = dreamartist::eval::ClipModel::load(&clip(), &candle_core::Device::Cpu).unwrap();
    let grid = image::open(dir.join(p["grid"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    let samples: Vec<image::RgbImage> = [0u32, 66]
        .iter()
        .map(|&x| image::imageops::crop_imm(&grid, x, 0, 64, 64).to_image())
        .collect();
    let unit = |t: candle_core::Tensor| -> Vec<Vec<f64>> {
        t.to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|r| {
                let n = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                r.into_iter().map(|x| x as f64 / n).collect()
            })
            .collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let s = unit(
        clip.embed_images(&samples.iter().collect::<Vec<_>>())
            .unwrap(),
    );
    let reference =
        dreamartist::eval::ClipModel::open_image(&fixtures().join("references/chelsea.png"))
            .unwrap();
    let r = unit(clip.embed_images(&[&reference]).unwrap());
    let t = unit(clip.embed_texts(&[p["text"].as_str().unwrap()]).unwrap());
    let fidelity = (dot(&s[0], &r[0]) + dot(&s[1], &r[0])) / 2.0;
    let alignment = (dot(&s[0], &t[0]) + dot(&s[1], &t[0])) / 2.0;
    let diversity = 1.0 - dot(&s[0], &s[1]);
    for (key, want) in [
        ("fidelity", fidelity),
        ("text_alignment", alignment),
        ("diversity", diversity),
    ] {
        let got = p[key].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-5,
            "{key}: report {got}, recomputed {want}"
        );
    }
}

#[test]
fn checkpoints_compare_and_json_lines() {
    let (_tmp, ws) = workspace();
    let run = train(&ws, "5");
    let clip = clip();
    let mut args = vec![
        "eval",
        "cat",
        "-w",
        &ws,
        "--clip",
        &clip,
        "--checkpoint",
        "2",
        "--checkpoint",
        "final",
        "--json",
    ];
    args.extend(FAST);
    let out = ok(&args);
    let reports: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["event"], "report");
    assert_eq!(reports[0]["target"], "step-00000002");
    assert_eq!(reports[0]["label"], format!("{run}@2"));
    assert_eq!(reports[0]["step"], 2);
    assert_eq!(reports[1]["target"], "final");
    assert_eq!(reports[1]["step"], 4);
    assert_ne!(reports[0]["fidelity"], reports[1]["fidelity"]);
    for r in &reports {
        let dir = PathBuf::from(r["dir"].as_str().unwrap());
        assert!(dir.join("eval.json").is_file());
    }
    // The library's loader sees the newest of the two.
    let latest =
        dreamartist::eval::load_latest_eval(&Path::new(&ws).join("concepts/cat/runs").join(&run))
            .unwrap()
            .unwrap();
    assert_eq!(latest.target, "final");
}

#[test]
fn errors_name_the_file_or_the_choices() {
    let (tmp, ws) = workspace();
    let clip = clip();
    // No runs yet.
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", &clip]);
    assert!(e.contains("no training runs"), "{e}");
    let run = train(&ws, "5");
    // Unknown run, unknown checkpoint, unknown concept.
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", &clip, "--run", "nope"]);
    assert!(e.contains("`nope` not found") && e.contains(&run), "{e}");
    let e = fails(&[
        "eval",
        "cat",
        "-w",
        &ws,
        "--clip",
        &clip,
        "--checkpoint",
        "3",
    ]);
    assert!(e.contains("step 3") && e.contains("2, 4"), "{e}");
    let e = fails(&["eval", "dog", "-w", &ws, "--clip", &clip]);
    assert!(e.contains("dog"), "{e}");
    // A missing CLIP folder, a folder without weights, a malformed config.
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", "/nonexistent/clip"]);
    assert!(e.contains("/nonexistent/clip"), "{e}");
    let broken = tmp.path().join("clip");
    std::fs::create_dir_all(&broken).unwrap();
    for e in std::fs::read_dir(fixtures().join("tiny-clip")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), broken.join(e.file_name())).unwrap();
    }
    std::fs::remove_file(broken.join("model.safetensors")).unwrap();
    let b = broken.display().to_string();
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", &b]);
    assert!(
        e.contains("model.safetensors") && e.contains("missing"),
        "{e}"
    );
    std::fs::write(broken.join("preprocessor_config.json"), "[]").unwrap();
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", &b]);
    assert!(e.contains("preprocessor_config.json"), "{e}");
    std::fs::write(broken.join("config.json"), "{\"text_config\": 3}").unwrap();
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", &b]);
    assert!(e.contains("config.json") && e.contains("invalid"), "{e}");
    // A prompt file line without the concept.
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "[name] on a sofa\na dog\n").unwrap();
    let p = prompts.display().to_string();
    let e = fails(&["eval", "cat", "-w", &ws, "--clip", &clip, "--prompts", &p]);
    assert!(e.contains("prompts.txt") && e.contains("line 2"), "{e}");
    // A good prompt file is used instead of the built-in prompts.
    std::fs::write(&prompts, "# sofa test\n<cat> on a sofa\n").unwrap();
    // --class overrides the concept's class word.
    let mut args = vec![
        "eval",
        "cat",
        "-w",
        &ws,
        "--clip",
        &clip,
        "--prompts",
        &p,
        "--class",
        "kitten",
        "--json",
    ];
    args.extend(FAST);
    let out = ok(&args);
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(r["prompts"].as_array().unwrap().len(), 1);
    assert_eq!(r["prompts"][0]["prompt"], "<cat> on a sofa");
    assert_eq!(r["prompts"][0]["text"], "kitten on a sofa");
    assert_eq!(r["class_word"], "kitten");
    assert_eq!(r["prompt_set"], p);
}
