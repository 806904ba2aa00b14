//! `dreamartist::eval` through the library on the tiny SD1 model and the tiny
//! CLIP, with runs made of saved random vectors: scores recomputed from the
//! grids, the negative word really used, class words, style prompts,
//! checkpoints (EMA), the latest-report loader, and the refusals.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use dreamartist::concept::{save_embedding, EmbeddingMeta};
use dreamartist::eval::metrics::{cosine, normalized_rows};
use dreamartist::eval::{
    concept_evals, evaluate, load_latest_eval, ClipModel, EvalControl, EvalError, EvalReport,
    EvalRequest, EvalSettings, Target, Which,
};
use dreamartist::sd::{LoadOptions, StableDiffusion};
use dreamartist::workspace::Workspace;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn bin(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_dreamartist"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workspace on tiny-sd1 with one concept (`extra`: preset/class flags).
fn workspace(name: &str, extra: &[&str]) -> (tempfile::TempDir, Workspace) {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let model = fixtures().join("tiny-sd1/model");
    bin(&[
        "init",
        ws.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    let photo = fixtures().join("references/chelsea.png");
    let mut args = vec![
        "concept",
        "add",
        name,
        "--reference",
        photo.to_str().unwrap(),
        "-w",
        ws.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bin(&args);
    let w = Workspace::open(&ws).unwrap();
    (tmp, w)
}

fn random(n: usize, seed: u64) -> Tensor {
    let mut rng = dreamartist::rng::Rng::seed(seed);
    (rng.randn((n, 32), &Device::Cpu).unwrap() * 0.4).unwrap()
}

fn meta(name: &str) -> EmbeddingMeta {
    EmbeddingMeta {
        name: name.into(),
        step: 7,
        ..Default::default()
    }
}

/// A run folder with a config and, optionally, the finished pair.
fn fake_run(
    ws: &Workspace,
    concept: &str,
    id: &str,
    cfg: &str,
    pair: Option<(&Tensor, Option<&Tensor>)>,
) -> PathBuf {
    let dir = dreamartist::train::RunDir::at(&ws.concept_dir(concept), id)
        .path()
        .to_path_buf();
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("concept = \"{concept}\"\n\n[train]\ntrain_cfg = \"{cfg}\"\n"),
    )
    .unwrap();
    if let Some((pos, neg)) = pair {
        save_embedding(
            &dir.join(format!("{concept}.safetensors")),
            pos,
            &meta(concept),
        )
        .unwrap();
        if let Some(neg) = neg {
            let n = format!("{concept}-neg");
            save_embedding(&dir.join(format!("{n}.safetensors")), neg, &meta(&n)).unwrap();
        }
    }
    dir
}

fn models() -> (StableDiffusion, ClipModel) {
    let sd =
        StableDiffusion::load_folder(&fixtures().join("tiny-sd1/model"), &LoadOptions::default())
            .unwrap();
    let clip = ClipModel::load_folder(&fixtures().join("tiny-clip"), &Device::Cpu).unwrap();
    (sd, clip)
}

fn settings(samples: usize) -> EvalSettings {
    EvalSettings {
        samples,
        seed: 5,
        steps: 3,
        ..Default::default()
    }
}

fn run_eval(
    sd: &StableDiffusion,
    clip: &ClipModel,
    ws: &Workspace,
    concept: &str,
    targets: Vec<Target>,
    settings: EvalSettings,
) -> Result<Vec<EvalReport>, EvalError> {
    let req = EvalRequest {
        concept: concept.into(),
        targets,
        settings,
    };
    evaluate(sd, clip, ws, &req, |_| EvalControl::Continue)
}

fn target(run: &str, which: Which) -> Target {
    Target {
        run: run.into(),
        which,
    }
}

/// A report read back from `eval.json` equals the one returned (JSON floats
/// round-trip to within an ulp or so).
fn assert_same(read: &EvalReport, returned: &EvalReport) {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12;
    assert_eq!(
        (
            &read.label,
            &read.target,
            read.created_ms,
            read.prompts.len()
        ),
        (
            &returned.label,
            &returned.target,
            returned.created_ms,
            returned.prompts.len()
        )
    );
    assert!(close(read.fidelity, returned.fidelity));
    for (x, y) in read.prompts.iter().zip(&returned.prompts) {
        assert_eq!(
            (&x.prompt, &x.text, &x.negative, &x.seeds),
            (&y.prompt, &y.text, &y.negative, &y.seeds)
        );
        assert!(close(x.fidelity, y.fidelity) && close(x.text_alignment, y.text_alignment));
        assert_eq!(x.diversity.is_some(), y.diversity.is_some());
    }
}

/// The `k`-th 64×64 sample of a one-row grid (2 px gaps).
fn cell(grid: &image::RgbImage, k: u32) -> image::RgbImage {
    image::imageops::crop_imm(grid, k * (64 + 2), 0, 64, 64).to_image()
}

#[test]
fn scores_match_the_grids_and_the_negative_word_is_used() {
    let (_tmp, ws) = workspace("cat", &[]);
    let pos = random(3, 1);
    let neg = random(3, 2);
    let da = fake_run(&ws, "cat", "r1", "5", Some((&pos, Some(&neg))));
    let ti = fake_run(&ws, "cat", "r2", "1", Some((&pos, None)));
    let (sd, clip) = models();
    let reports = run_eval(
        &sd,
        &clip,
        &ws,
        "cat",
        vec![target("r1", Which::Final), target("r2", Which::Final)],
        settings(2),
    )
    .unwrap();
    assert_eq!(reports.len(), 2);
    let (a, b) = (&reports[0], &reports[1]);
    assert_eq!(
        (a.method.as_str(), b.method.as_str()),
        ("DreamArtist", "Textual Inversion")
    );
    assert_eq!(a.prompts.len(), dreamartist::eval::OBJECT_PROMPTS.len());
    assert!(a.prompts.iter().all(|p| p.negative == "<cat-neg>"));
    assert!(b.prompts.iter().all(|p| p.negative.is_empty()));
    // Same positive vectors and seeds: only the negative word differs, and it shows.
    assert_ne!(a.prompts[0].fidelity, b.prompts[0].fidelity);
    // No class word: the pseudo-word is removed from the CLIP-T text, and the report says so.
    assert_eq!(a.class_word, None);
    assert_eq!(a.prompts[1].prompt, "a photo of a <cat> on the beach");
    assert_eq!(a.prompts[1].text, "a photo of on the beach");
    assert!(
        a.notes.iter().any(|n| n.contains("no class word")),
        "{:?}",
        a.notes
    );

    // Recompute one prompt's three scores from its grid.
    let p = &a.prompts[1];
    let dir = da.join("eval/final");
    let grid = image::open(dir.join(&p.grid)).unwrap().to_rgb8();
    assert_eq!((grid.width(), grid.height()), (64 * 2 + 2, 64));
    let cells = [cell(&grid, 0), cell(&grid, 1)];
    let s = normalized_rows(&clip.embed_images(&[&cells[0], &cells[1]]).unwrap()).unwrap();
    let reference = ClipModel::open_image(&ws.root.join(&a.references[0])).unwrap();
    let r = normalized_rows(&clip.embed_images(&[&reference]).unwrap()).unwrap();
    let t = normalized_rows(&clip.embed_texts(&[&p.text]).unwrap()).unwrap();
    let fid = (cosine(&s[0], &r[0]) + cosine(&s[1], &r[0])) / 2.0;
    let txt = (cosine(&s[0], &t[0]) + cosine(&s[1], &t[0])) / 2.0;
    let div = 1.0 - cosine(&s[0], &s[1]);
    assert!((fid - p.fidelity).abs() < 1e-6, "{fid} vs {}", p.fidelity);
    assert!((txt - p.text_alignment).abs() < 1e-6);
    assert!((div - p.diversity.unwrap()).abs() < 1e-6);
    assert!(p.diversity.unwrap() > 0.0);
    let mean = a.prompts.iter().map(|p| p.fidelity).sum::<f64>() / a.prompts.len() as f64;
    assert!((mean - a.fidelity).abs() < 1e-12);

    // eval.json holds the report; the latest loader finds it.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    for key in ["fidelity", "text_alignment", "diversity"] {
        assert!(json[key].is_number(), "{key}");
        assert!(json["prompts"][0][key].is_number(), "prompts[0].{key}");
    }
    assert_same(&load_latest_eval(&da).unwrap().unwrap(), a);
    assert_same(&load_latest_eval(&ti).unwrap().unwrap(), b);
    assert_eq!(concept_evals(&ws.concept_dir("cat")).len(), 2);

    // Again with a class word: same samples (same seeds), new CLIP-T texts.
    let mut s2 = settings(2);
    s2.class_word = Some("cat".into());
    let again = run_eval(&sd, &clip, &ws, "cat", vec![target("r1", Which::Final)], s2).unwrap();
    assert_eq!(again[0].prompts[1].text, "a photo of a cat on the beach");
    assert!(again[0].notes.is_empty());
    for (x, y) in again[0].prompts.iter().zip(&a.prompts) {
        assert_eq!(x.fidelity, y.fidelity);
        assert_eq!(x.diversity, y.diversity);
    }
    let latest = load_latest_eval(&da).unwrap().unwrap();
    assert_eq!(latest.class_word.as_deref(), Some("cat"));
}

#[test]
fn style_prompts_checkpoints_and_ema_vectors() {
    let (_tmp, ws) = workspace("ink", &["--preset", "style", "--class", "ink drawing"]);
    let pos = random(3, 11);
    let neg = random(5, 12);
    let run = fake_run(&ws, "ink", "r1", "5", Some((&pos, Some(&neg))));
    // Step 3 holds other live vectors, but its EMA equals the finished pair.
    let cp = run.join("checkpoints/step-00000003.safetensors");
    let live_pos = random(3, 13);
    let live_neg = random(5, 14);
    let tensors = std::collections::HashMap::from([
        ("pos".to_string(), live_pos.clone()),
        ("neg".to_string(), live_neg.clone()),
        ("ema_pos".to_string(), pos.clone()),
        ("ema_neg".to_string(), neg.clone()),
    ]);
    candle_core::safetensors::save(&tensors, &cp).unwrap();
    let cp5 = run.join("checkpoints/step-00000005.safetensors");
    let plain = std::collections::HashMap::from([
        ("pos".to_string(), live_pos),
        ("neg".to_string(), live_neg),
    ]);
    candle_core::safetensors::save(&plain, &cp5).unwrap();
    // A Textual Inversion run: its checkpoint's `neg` is not used.
    let ti = fake_run(&ws, "ink", "r2", "1", None);
    candle_core::safetensors::save(&plain, ti.join("checkpoints/step-00000005.safetensors"))
        .unwrap();

    let (sd, clip) = models();
    let reports = run_eval(
        &sd,
        &clip,
        &ws,
        "ink",
        vec![
            target("r1", Which::Step(3)),
            target("r1", Which::Final),
            target("r1", Which::Step(5)),
            target("r2", Which::Step(5)),
        ],
        settings(1),
    )
    .unwrap();
    let [ema, fin, live, ti_r] = [&reports[0], &reports[1], &reports[2], &reports[3]];
    assert_eq!(ema.prompt_set, "style");
    assert!(ema
        .prompts
        .iter()
        .any(|p| p.prompt == "a city in the style of <ink>"));
    assert_eq!(ema.prompts[1].text, "a city in the style of ink drawing");
    assert_eq!(ema.class_word.as_deref(), Some("ink drawing"));
    assert_eq!(
        (ema.vectors.as_str(), ema.step),
        ("checkpoint-ema", Some(3))
    );
    assert!(ema.source.ends_with("step-00000003.safetensors"));
    assert_eq!(ema.label, "r1@3");
    assert_eq!(live.vectors, "checkpoint");
    // One sample per prompt: no diversity.
    assert_eq!(ema.diversity, None);
    assert!(ema.prompts.iter().all(|p| p.diversity.is_none()));
    // EMA == the pair: identical scores; the live vectors differ.
    for (x, y) in ema.prompts.iter().zip(&fin.prompts) {
        assert_eq!(x.fidelity, y.fidelity);
        assert_eq!(x.text_alignment, y.text_alignment);
    }
    assert_ne!(live.fidelity, fin.fidelity);
    assert!(live.prompts.iter().all(|p| p.negative == "<ink-neg>"));
    // Same vectors as `live` but Textual Inversion: no negative word.
    assert!(!ti_r.negative_word);
    assert!(ti_r.prompts.iter().all(|p| p.negative.is_empty()));
    assert_ne!(ti_r.fidelity, live.fidelity);
    // Each target has its own folder; the latest report of r1 is the last one written.
    for slug in ["step-00000003", "final", "step-00000005"] {
        assert!(
            run.join("eval").join(slug).join("eval.json").is_file(),
            "{slug}"
        );
    }
    assert_eq!(
        load_latest_eval(&run).unwrap().unwrap().target,
        "step-00000005"
    );
}

#[test]
fn refusals_name_what_is_missing() {
    let (_tmp, ws) = workspace("cat", &[]);
    let (sd, clip) = models();
    let err = |targets: Vec<Target>| {
        run_eval(&sd, &clip, &ws, "cat", targets, settings(1))
            .err()
            .unwrap()
            .to_string()
    };
    let e = err(vec![]);
    assert!(e.contains("no training runs"), "{e}");
    let run = fake_run(&ws, "cat", "r1", "5", None);
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("pos".to_string(), random(3, 1))]),
        run.join("checkpoints/step-00000002.safetensors"),
    )
    .unwrap();
    let e = err(vec![]);
    assert!(
        e.contains("no finished pair") && e.contains("checkpoints: 2"),
        "{e}"
    );
    let e = err(vec![target("r1", Which::Step(9))]);
    assert!(
        e.contains("no checkpoint at step 9") && e.contains("checkpoints: 2"),
        "{e}"
    );
    let e = err(vec![target("r1", Which::Step(2))]);
    assert!(
        e.contains("step-00000002.safetensors") && e.contains("`neg`"),
        "{e}"
    );
    let e =
        dreamartist::eval::resolve_targets("cat", &ws.concept_dir("cat"), &["nope".into()], &[])
            .err()
            .unwrap()
            .to_string();
    assert!(e.contains("`nope` not found") && e.contains("r1"), "{e}");
    let e = run_eval(&sd, &clip, &ws, "dog", vec![], settings(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("dog"), "{e}");
    // Cancelling stops before any sample is drawn.
    fake_run(
        &ws,
        "cat",
        "r3",
        "5",
        Some((&random(3, 1), Some(&random(3, 2)))),
    );
    let req = EvalRequest {
        concept: "cat".into(),
        targets: vec![target("r3", Which::Final)],
        settings: settings(1),
    };
    let r = evaluate(&sd, &clip, &ws, &req, |_| EvalControl::Stop);
    assert!(matches!(r, Err(EvalError::Cancelled)));
}
