//! The toy-world proof: DreamArtist vs Textual Inversion on the bundled toy
//! model (`assets/toyworld`), with the reference's protocol and detector.
//!
//! ```text
//! cargo run --release --example toyworld_eval -- compare            # the table (4 seeds × 2 concepts × 2 methods)
//! cargo run --release --example toyworld_eval -- compare --seeds 0 --samples 4
//! cargo run --release --example toyworld_eval -- ceiling            # detector and base-model accuracy
//! cargo run --release --example toyworld_eval -- sweep --seeds 0,1,2,3
//! ```
//!
//! Everything goes to `--out` (default `target/toyworld`): `results.json`
//! (every run, seed and prompt), `results.md` (the table, ours beside the
//! reference's), `grids/*.png` (one row per prompt, 16 samples per row), and the
//! scratch workspace `ws/` whose runs folders hold the trained words.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::{Args, Parser, Subcommand};
use image::RgbImage;
use serde::Serialize;

use dreamartist::concept::create::import_reference;
use dreamartist::generate::WordBank;
use dreamartist::rng::Rng;
use dreamartist::sd::{LoadOptions, StableDiffusion};
use dreamartist::toyworld::grid::grid;
use dreamartist::toyworld::oneshot::{self, Method};
use dreamartist::toyworld::protocol::{
    decode_images, evaluate, sample_batch, ConceptSpec, Evaluation, Phrasing, SampleSettings,
    Scores, Subject, CONCEPTS,
};
use dreamartist::toyworld::report::table;
use dreamartist::toyworld::world::{random_item, render, Attrs, Jitter, Size};
use dreamartist::toyworld::{detect, Detection};
use dreamartist::train::TrainConfig;
use dreamartist::workspace::{write_atomic, Workspace};

#[derive(Parser)]
#[command(about = "DreamArtist vs Textual Inversion on the toy world")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// TI and DreamArtist at the reference setting, with the text/init/pos-only rows.
    Compare(CompareArgs),
    /// Detector accuracy on renders and VAE reconstructions; the base model on held-in captions.
    Ceiling(CeilingArgs),
    /// DreamArtist variants (loss options, sampling options) against TI.
    Sweep(SweepArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The toy model (a diffusers folder).
    #[arg(long, default_value = "assets/toyworld")]
    model: PathBuf,
    #[arg(long, default_value = "target/toyworld")]
    out: PathBuf,
    /// Samples per prompt.
    #[arg(long, default_value_t = 16)]
    samples: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    #[arg(long, default_value_t = 5.0)]
    cfg: f64,
}

/// Which trainings a comparison or sweep runs.
#[derive(Args, Clone)]
struct Runs {
    /// Training seeds.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3")]
    seeds: Vec<u64>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "purple_cross,orange_triangle"
    )]
    concepts: Vec<String>,
    /// Folder with `<concept>.png` references.
    #[arg(long, default_value = "references")]
    references: PathBuf,
    /// Override the 400 training steps (for quick looks).
    #[arg(long)]
    train_steps: Option<u64>,
}

#[derive(Args, Clone)]
struct CompareArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    runs: Runs,
    /// Skip the text-prompt, untrained-init and pos-only rows.
    #[arg(long)]
    no_extras: bool,
}

#[derive(Args, Clone)]
struct CeilingArgs {
    #[command(flatten)]
    common: Common,
    /// Random held-in full captions for the base model.
    #[arg(long, default_value_t = 24)]
    captions: usize,
    /// Rendered items for the detector's own accuracy.
    #[arg(long, default_value_t = 1000)]
    items: usize,
    /// Items encoded and decoded by the VAE.
    #[arg(long, default_value_t = 500)]
    recon: usize,
}

#[derive(Args, Clone)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    runs: Runs,
    /// Only these variants (names from the list printed by --list; `ti` for the baseline).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Print the variants and exit.
    #[arg(long)]
    list: bool,
    /// Other sweep.json files to merge into this one (runs done elsewhere).
    #[arg(long, value_delimiter = ',')]
    merge: Vec<PathBuf>,
    /// Only merge and write the report; train and sample nothing.
    #[arg(long)]
    report_only: bool,
}

fn main() -> Result<()> {
    dreamartist::threads::configure();
    let cli = Cli::parse();
    dreamartist::threads::on_pool(|| match cli.command {
        Command::Compare(a) => compare(&a),
        Command::Ceiling(a) => ceiling(&a),
        Command::Sweep(a) => sweep(&a),
    })
}

fn settings(c: &Common) -> SampleSettings {
    SampleSettings {
        samples: c.samples,
        first_seed: 0,
        steps: c.steps,
        cfg: c.cfg,
        ..Default::default()
    }
}

fn load_model(c: &Common) -> Result<StableDiffusion> {
    let sd = StableDiffusion::load_folder(&c.model, &LoadOptions::default())
        .with_context(|| format!("loading {}", c.model.display()))?;
    Ok(sd)
}

/// The scratch workspace the runs train in (its model is the evaluated one).
fn scratch_workspace(c: &Common) -> Result<Workspace> {
    let dir = c.out.join("ws");
    if dir.join("workspace.toml").is_file() {
        return Ok(Workspace::open(&dir)?);
    }
    std::fs::create_dir_all(&dir)?;
    let model = c
        .model
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", c.model.display()))?;
    Ok(Workspace::init(&dir, &model.to_string_lossy())?)
}

fn spec(name: &str) -> Result<ConceptSpec> {
    ConceptSpec::by_name(name).with_context(|| {
        format!(
            "unknown concept `{name}` (known: {})",
            CONCEPTS.map(|c| c.name).join(", ")
        )
    })
}

fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    img.save(path)
        .with_context(|| format!("{}: cannot write", path.display()))
}

fn save_grid(path: &Path, rows: &[Vec<RgbImage>]) -> Result<()> {
    match grid(rows, 4) {
        Some(g) => save_png(path, &g),
        None => Ok(()),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("{}: cannot write", path.display()))
}

/// One evaluated row of one concept (a method at a seed, or an extra row).
#[derive(Serialize, serde::Deserialize, Clone)]
struct RunRecord {
    concept: String,
    row: String,
    seed: Option<u64>,
    train_s: Option<f64>,
    eval_s: f64,
    loss: Option<f64>,
    scores: Scores,
    prompts: Vec<dreamartist::toyworld::protocol::PromptScore>,
}

#[derive(Serialize)]
struct Results<'a> {
    settings: serde_json::Value,
    runs: &'a [RunRecord],
    summary: Vec<(String, String, Scores)>,
}

/// Per-(concept, row) means over seeds, in table order.
fn summarise(runs: &[RunRecord], order: &[&str]) -> Vec<(String, String, Scores)> {
    let mut concepts: Vec<String> = Vec::new();
    for r in runs {
        if !concepts.contains(&r.concept) {
            concepts.push(r.concept.clone());
        }
    }
    let mut rows: Vec<String> = order.iter().map(|s| s.to_string()).collect();
    for r in runs {
        if !rows.contains(&r.row) {
            rows.push(r.row.clone());
        }
    }
    let mut out = Vec::new();
    for c in &concepts {
        for row in &rows {
            let all: Vec<Scores> = runs
                .iter()
                .filter(|r| &r.concept == c && &r.row == row)
                .map(|r| r.scores.clone())
                .collect();
            if !all.is_empty() {
                out.push((c.clone(), row.clone(), Scores::mean(&all)));
            }
        }
    }
    out
}

fn per_seed_table(runs: &[RunRecord]) -> String {
    let mut s = String::from("| concept | row | per seed (fidelity, controllability) | train s | eval s |\n|---|---|---|---|---|\n");
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in runs.iter().filter(|r| r.seed.is_some()) {
        let k = (r.concept.clone(), r.row.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (c, row) in keys {
        let rs: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| r.concept == c && r.row == row && r.seed.is_some())
            .collect();
        let cells: Vec<String> = rs
            .iter()
            .map(|r| {
                format!(
                    "s{}: ({:.2}, {:.2})",
                    r.seed.unwrap_or(0),
                    r.scores.fidelity,
                    r.scores.control
                )
            })
            .collect();
        let mean = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", v.iter().sum::<f64>() / v.len() as f64)
            }
        };
        s.push_str(&format!(
            "| {c} | {row} | {} | {} | {} |\n",
            cells.join(" "),
            mean(&|r| r.train_s),
            mean(&|r| Some(r.eval_s))
        ));
    }
    s
}

fn per_prompt_table(summary: &[(String, String, Scores)]) -> String {
    let wording = |p: Phrasing| {
        p.background_prompts()
            .iter()
            .map(|(t, _)| format!("\"{}\"", t.replace("{}", "<p>")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!("Prompts: {}", wording(Phrasing::Protocol));
    if summary.iter().any(|(_, row, _)| row.ends_with("-photo")) {
        s.push_str(&format!(" (`-photo` rows: {})", wording(Phrasing::Photo)));
    }
    s.push_str(".\n\n");
    s.push_str("| concept | row | green | white | blue | black |\n|---|---|---|---|---|---|\n");
    for (c, row, sc) in summary {
        let cells: Vec<String> = sc
            .control_per_prompt
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect();
        s.push_str(&format!("| {c} | {row} | {} |\n", cells.join(" | ")));
    }
    s
}

/// Evaluates one subject and records it; saves its grid when asked.
#[allow(clippy::too_many_arguments)]
fn eval_row(
    sd: &StableDiffusion,
    spec: &ConceptSpec,
    subject: &Subject<'_>,
    settings: &SampleSettings,
    row: &str,
    seed: Option<u64>,
    trained: Option<&oneshot::Trained>,
    grid_path: Option<PathBuf>,
) -> Result<(RunRecord, Evaluation)> {
    let t0 = Instant::now();
    let ev = evaluate(sd, spec, subject, settings)?;
    let eval_s = t0.elapsed().as_secs_f64();
    if let Some(p) = grid_path {
        save_grid(&p, &ev.rows)?;
    }
    let s = &ev.scores;
    eprintln!(
        "{:<16} {:<12} seed {:<4} fidelity {:.2} shape {:.2} colour {:.2} copies-bg {:.2} control {:.2} bg-follows {:.2} diversity {:5.2}  train {:>6} eval {:.1}s",
        spec.name,
        row,
        seed.map_or("-".to_string(), |s| s.to_string()),
        s.fidelity,
        s.shape,
        s.colour,
        s.copies_bg,
        s.control,
        s.bg_follows,
        s.diversity,
        trained
            .and_then(|t| t.seconds)
            .map_or("-".to_string(), |t| format!("{t:.1}s")),
        eval_s
    );
    Ok((
        RunRecord {
            concept: spec.name.to_string(),
            row: row.to_string(),
            seed,
            train_s: trained.and_then(|t| t.seconds),
            eval_s,
            loss: trained.and_then(|t| t.loss),
            scores: ev.scores.clone(),
            prompts: ev.prompts.clone(),
        },
        ev,
    ))
}

/// A grey tile the size of a sample, to separate groups in a grid row.
fn spacer() -> RgbImage {
    RgbImage::from_pixel(32, 32, image::Rgb([128, 128, 128]))
}

fn compare(a: &CompareArgs) -> Result<()> {
    let c = &a.common;
    let sd = load_model(c)?;
    let ws = scratch_workspace(c)?;
    let st = settings(c);
    let grids = c.out.join("grids");
    let mut runs: Vec<RunRecord> = Vec::new();
    let started = Instant::now();
    let write = |runs: &[RunRecord]| -> Result<()> {
        let order = ["text", "init", "ti", "da", "da_pos_only"];
        let summary = summarise(runs, &order);
        let settings = serde_json::json!({
            "model": c.model, "samples": c.samples, "ddim_steps": c.steps, "cfg": c.cfg,
            "seeds": a.runs.seeds, "train_steps": a.runs.train_steps.unwrap_or(400),
        });
        write_json(
            &c.out.join("results.json"),
            &Results {
                settings,
                runs,
                summary: summary.clone(),
            },
        )?;
        let md = format!(
            "# Toy world: TI vs DreamArtist (ours, reference in parentheses)\n\n{}\n## Per training seed\n\n{}\n## Controllability per prompt\n\n{}",
            table(&summary),
            per_seed_table(runs),
            per_prompt_table(&summary)
        );
        write_atomic(&c.out.join("results.md"), md.as_bytes())?;
        Ok(())
    };
    for name in &a.runs.concepts {
        let spec = spec(name)?;
        let ref_path = a.runs.references.join(format!("{name}.png"));
        let ref_rel = import_reference(&ws, &ref_path)?;
        let reference = image::open(&ref_path)
            .with_context(|| format!("{}: cannot open", ref_path.display()))?
            .to_rgb8();
        let d = detect(&reference);
        if d.shape != Some(spec.shape) || d.colour != Some(spec.colour) || d.background != spec.bg {
            bail!(
                "{}: the detector sees {:?}, not the concept's {} {} on {}",
                ref_path.display(),
                d,
                spec.colour,
                spec.shape,
                spec.bg
            );
        }
        let first_seed = a.runs.seeds.first().copied().unwrap_or(0);
        let mut showcase: Vec<(String, Vec<Vec<RgbImage>>)> = Vec::new();
        if !a.no_extras {
            let empty = WordBank::new();
            let text = Subject {
                bank: &empty,
                word: spec.words(),
                plain: Some(spec.full_caption()),
                negative: String::new(),
                phrasing: Phrasing::Protocol,
            };
            let (r, _) = eval_row(
                &sd,
                &spec,
                &text,
                &st,
                "text",
                None,
                None,
                Some(grids.join(format!("{name}_text.png"))),
            )?;
            runs.push(r);
            let probe = oneshot::concept(
                "init",
                &ref_rel,
                oneshot::reference_config(Method::DreamArtist, first_seed),
            );
            let (pos0, _) = oneshot::untrained_vectors(&sd, &probe)?;
            let bank = oneshot::bank(&pos0, None);
            let (r, _) = eval_row(
                &sd,
                &spec,
                &oneshot::subject(&bank, false),
                &st,
                "init",
                None,
                None,
                Some(grids.join(format!("{name}_init.png"))),
            )?;
            runs.push(r);
            write(&runs)?;
        }
        for &seed in &a.runs.seeds {
            for method in [Method::TextualInversion, Method::DreamArtist] {
                let mut cfg = oneshot::reference_config(method, seed);
                if let Some(s) = a.runs.train_steps {
                    cfg.steps = s;
                }
                let concept =
                    oneshot::concept(&format!("{name}-{}-s{seed}", method.short()), &ref_rel, cfg);
                let trained = oneshot::train_or_load(&sd, &ws, &concept)?;
                let bank = oneshot::bank(&trained.pos, trained.neg.as_ref());
                let da = method == Method::DreamArtist;
                let grid_path = (seed == first_seed)
                    .then(|| grids.join(format!("{name}_{}_s{seed}.png", method.short())));
                let (r, ev) = eval_row(
                    &sd,
                    &spec,
                    &oneshot::subject(&bank, da),
                    &st,
                    method.short(),
                    Some(seed),
                    Some(&trained),
                    grid_path,
                )?;
                runs.push(r);
                if seed == first_seed {
                    showcase.push((method.short().to_string(), ev.rows.clone()));
                }
                if da && !a.no_extras {
                    let pos_only = oneshot::bank(&trained.pos, None);
                    let grid_path = (seed == first_seed)
                        .then(|| grids.join(format!("{name}_da_pos_only_s{seed}.png")));
                    let (r, _) = eval_row(
                        &sd,
                        &spec,
                        &oneshot::subject(&pos_only, false),
                        &st,
                        "da_pos_only",
                        Some(seed),
                        Some(&trained),
                        grid_path,
                    )?;
                    runs.push(r);
                }
                write(&runs)?;
            }
        }
        // reference | TI | DreamArtist, first seed, 6 samples per prompt.
        if let [(_, ti), (_, da)] = showcase.as_slice() {
            let rows: Vec<Vec<RgbImage>> = ti
                .iter()
                .zip(da)
                .map(|(t, d)| {
                    let mut row = vec![reference.clone(), spacer()];
                    row.extend(t.iter().take(6).cloned());
                    row.push(spacer());
                    row.extend(d.iter().take(6).cloned());
                    row
                })
                .collect();
            save_grid(&grids.join(format!("{name}_ref_ti_da.png")), &rows)?;
        }
    }
    write(&runs)?;
    eprintln!(
        "done in {:.0}s: {}",
        started.elapsed().as_secs_f64(),
        c.out.join("results.md").display()
    );
    Ok(())
}

/// Accuracy of the detector's four attributes against known attributes.
#[derive(Default, Serialize, Clone, Copy)]
struct Accuracy {
    n: usize,
    shape: f64,
    colour: f64,
    background: f64,
    size: f64,
    all: f64,
}

impl Accuracy {
    fn of(pairs: &[(Attrs, Detection)]) -> Accuracy {
        let n = pairs.len();
        let f = |ok: &dyn Fn(&Attrs, &Detection) -> bool| {
            pairs.iter().filter(|(a, d)| ok(a, d)).count() as f64 / n.max(1) as f64
        };
        Accuracy {
            n,
            shape: f(&|a, d| d.shape == Some(a.shape)),
            colour: f(&|a, d| d.colour == Some(a.colour)),
            background: f(&|a, d| d.background == a.bg),
            size: f(&|a, d| d.size == Some(a.size)),
            all: f(&|a, d| {
                d.shape == Some(a.shape)
                    && d.colour == Some(a.colour)
                    && d.background == a.bg
                    && d.size == Some(a.size)
            }),
        }
    }

    fn line(&self, what: &str) -> String {
        format!(
            "| {what} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            self.n, self.shape, self.colour, self.background, self.size, self.all
        )
    }
}

fn by_size(pairs: &[(Attrs, Detection)], size: Size) -> Vec<(Attrs, Detection)> {
    pairs
        .iter()
        .filter(|(a, _)| a.size == size)
        .copied()
        .collect()
}

fn ceiling(a: &CeilingArgs) -> Result<()> {
    let c = &a.common;
    let sd = load_model(c)?;
    let mut md = String::from(
        "| | n | shape | colour | background | size | all four |\n|---|---|---|---|---|---|---|\n",
    );
    // The detector on rendered items (the training distribution, our RNG).
    let mut rng = Rng::seed(0);
    let items: Vec<(RgbImage, Attrs)> = (0..a.items.max(a.recon))
        .map(|_| random_item(&mut rng))
        .collect();
    let real: Vec<(Attrs, Detection)> = items
        .iter()
        .take(a.items)
        .map(|(img, at)| (*at, detect(img)))
        .collect();
    md.push_str(&Accuracy::of(&real).line("detector on rendered items"));
    eprintln!("detector on {} rendered items done", real.len());

    // The detector on VAE reconstructions.
    let mut recon = Vec::new();
    for chunk in items.iter().take(a.recon).collect::<Vec<_>>().chunks(50) {
        let data: Vec<f32> = chunk
            .iter()
            .flat_map(|(img, _)| img.as_raw().iter().map(|v| *v as f32 / 127.5 - 1.0))
            .collect();
        let x = candle_core::Tensor::from_vec(data, (chunk.len(), 32, 32, 3), &sd.device)?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .to_dtype(sd.dtype)?;
        let z = sd
            .vae
            .scale_latents(&sd.vae.encode(&x)?.mean)?
            .to_dtype(DType::F32)?;
        for ((_, at), img) in chunk.iter().zip(decode_images(&sd, &z)?) {
            recon.push((*at, detect(&img)));
        }
    }
    for (what, set) in [
        ("detector on VAE reconstructions", recon.clone()),
        ("… big objects", by_size(&recon, Size::Big)),
        ("… small objects", by_size(&recon, Size::Small)),
    ] {
        md.push_str(&Accuracy::of(&set).line(what));
    }
    eprintln!("VAE reconstructions done");

    // The base model on random held-in full captions.
    let st = settings(c);
    let bank = WordBank::new();
    let mut base = Vec::new();
    let mut rows = Vec::new();
    let mut captions = Vec::new();
    let mut crng = Rng::seed(1);
    let t0 = Instant::now();
    for _ in 0..a.captions {
        let at = Attrs::random(&mut crng, true);
        let caption = at.caption();
        let images = sample_batch(&sd, &bank, &caption, "", &st)?;
        for img in &images {
            base.push((at, detect(img)));
        }
        rows.push(images.into_iter().take(8).collect::<Vec<_>>());
        captions.push(caption);
    }
    eprintln!(
        "base model: {} captions × {} samples in {:.0}s",
        a.captions,
        st.samples,
        t0.elapsed().as_secs_f64()
    );
    for (what, set) in [
        ("base model, held-in captions", base.clone()),
        ("… big objects", by_size(&base, Size::Big)),
        ("… small objects", by_size(&base, Size::Small)),
    ] {
        md.push_str(&Accuracy::of(&set).line(what));
    }
    save_grid(&c.out.join("grids/base_held_in.png"), &rows)?;
    // The two references as the world renders them (a check of the port).
    let refs: Vec<RgbImage> = CONCEPTS
        .iter()
        .map(|s| {
            render(
                &Attrs {
                    shape: s.shape,
                    colour: s.colour,
                    size: s.size,
                    pos: s.pos,
                    bg: s.bg,
                },
                Jitter::default(),
            )
        })
        .collect();
    save_grid(&c.out.join("grids/references_rendered.png"), &[refs])?;
    let text = format!(
        "# Toy world: detector and base-model ceiling\n\n{md}\nCaptions (row order of grids/base_held_in.png):\n\n{}\n",
        captions
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}. {c}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    );
    write_atomic(&c.out.join("ceiling.md"), text.as_bytes())?;
    println!("{text}");
    Ok(())
}

/// A DreamArtist training variant of the sweep (a change to the reference
/// setting). Each is sampled three ways: the DreamArtist way (`<n>` in the
/// negative prompt, cfg 5), without the negative word, and at cfg 3.
struct Variant {
    name: &'static str,
    what: &'static str,
    train: fn(&mut TrainConfig),
    /// The sampling modes it is evaluated in (of [`MODES`]; the first two
    /// for the costlier DreamArtist++ variants).
    modes: usize,
    /// Train with the reference's exact object mask as the loss's weight map
    /// (object pixels 1, the flat background 0).
    masked: bool,
}

/// A copy of the reference `src` in `dir` with its object mask beside it
/// (`<stem>_mask.png`, white on the object): the toy references are one
/// shape on a flat background, so the background is the most common colour.
fn masked_reference(src: &Path, dir: &Path) -> Result<PathBuf> {
    let img = image::open(src)
        .with_context(|| format!("{}: cannot open", src.display()))?
        .to_rgb8();
    let mut counts = std::collections::HashMap::new();
    for p in img.pixels() {
        *counts.entry(p.0).or_insert(0usize) += 1;
    }
    let bg = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| c)
        .unwrap_or([0, 0, 0]);
    let mask = image::GrayImage::from_fn(img.width(), img.height(), |x, y| {
        image::Luma([if img.get_pixel(x, y).0 == bg { 0 } else { 255 }])
    });
    std::fs::create_dir_all(dir)?;
    let stem = src
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "reference".into());
    let copy = dir.join(format!("{stem}.png"));
    img.save(&copy)?;
    mask.save(dir.join(format!("{stem}_mask.png")))?;
    Ok(copy)
}

/// DreamArtist++ at the reference setting plus adapters of `rank` on `targets`.
fn dapp(c: &mut TrainConfig, rank: usize, targets: &str) {
    c.method = "dreamartist++".into();
    c.lora_rank = rank;
    c.lora_alpha = rank as f64;
    c.lora_targets = targets.into();
    c.lora_lr = DAPP_LORA_LR.into();
}

/// The adapters' learning rate in the toy world: 400 steps are few for the
/// usual 1e-4.
const DAPP_LORA_LR: &str = "1e-3";

/// One way of sampling a trained pair.
struct Mode {
    /// Appended to the variant's name to make the table row.
    suffix: &'static str,
    /// `<n>` in the negative prompt.
    negative: bool,
    /// None: the protocol's cfg.
    cfg: Option<f64>,
    phrasing: Phrasing,
}

const MODES: [Mode; 4] = [
    Mode {
        suffix: "",
        negative: true,
        cfg: None,
        phrasing: Phrasing::Protocol,
    },
    Mode {
        suffix: "-noneg",
        negative: false,
        cfg: None,
        phrasing: Phrasing::Protocol,
    },
    Mode {
        suffix: "-cfg3",
        negative: true,
        cfg: Some(3.0),
        phrasing: Phrasing::Protocol,
    },
    // Every background asked for inside the training phrase ("a photo of
    // <p>, X background"); compared with TI sampled the same way (`ti-photo`).
    Mode {
        suffix: "-photo",
        negative: true,
        cfg: None,
        phrasing: Phrasing::Photo,
    },
];

/// TI (no negative word to use or drop) in the protocol's and the photo
/// phrasing: rows `ti` and `ti-photo`.
const TI_MODES: [Mode; 2] = [
    Mode {
        suffix: "",
        negative: false,
        cfg: None,
        phrasing: Phrasing::Protocol,
    },
    Mode {
        suffix: "-photo",
        negative: false,
        cfg: None,
        phrasing: Phrasing::Photo,
    },
];

/// The TI row a DreamArtist row is judged against: the same phrasing.
fn baseline_of(row: &str) -> &'static str {
    if row.ends_with("-photo") {
        "ti-photo"
    } else {
        "ti"
    }
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "da",
            what: "the reference setting (train cfg 3)",
            train: |_| {},
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-g2",
            what: "train cfg 2",
            train: |c| c.train_cfg = "2".into(),
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-g5",
            what: "train cfg 5",
            train: |c| c.train_cfg = "5".into(),
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-dyn",
            what: "dynamic train cfg 1.5-3:cos",
            train: |c| c.train_cfg = "1.5-3:cos".into(),
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-rec",
            what: "reconstruction loss (weight 1)",
            train: |c| c.rec_weight = 1.0,
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-ema",
            what: "EMA 0.97 of both words",
            train: |c| c.ema_decay = Some(0.97),
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-neglr",
            what: "negative lr weight 0.2",
            train: |c| c.neg_lr_weight = 0.2,
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-subject",
            what: "the 26 subject templates",
            train: |c| c.template = "subject".into(),
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-200",
            what: "200 steps",
            train: |c| c.steps = 200,
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "da-800",
            what: "800 steps",
            train: |c| c.steps = 800,
            modes: MODES.len(),
            masked: false,
        },
        Variant {
            name: "dapp-r4",
            what: "DreamArtist++: rank-4 adapters on the UNet's attention and feed-forward (lora lr 1e-3)",
            train: |c| dapp(c, 4, "attn,ff"),
            modes: 2,
            masked: false,
        },
        Variant {
            name: "dapp-r4-te",
            what: "DreamArtist++: rank 4 on the UNet and the text encoder",
            train: |c| dapp(c, 4, "attn,ff,te"),
            modes: 2,
            masked: false,
        },
        Variant {
            name: "dapp-r16",
            what: "DreamArtist++: rank 16 on the UNet",
            train: |c| dapp(c, 16, "attn,ff"),
            modes: 2,
            masked: false,
        },
        Variant {
            name: "da-mask",
            what: "the reference setting trained with the object's mask as weight map",
            train: |_| {},
            modes: 2,
            masked: true,
        },
        Variant {
            name: "dapp-r4-mask",
            what: "DreamArtist++ rank 4 on the UNet, trained with the object's mask",
            train: |c| dapp(c, 4, "attn,ff"),
            modes: 2,
            masked: true,
        },
        Variant {
            name: "dapp-r16-te",
            what: "DreamArtist++: rank 16 on the UNet and the text encoder",
            train: |c| dapp(c, 16, "attn,ff,te"),
            modes: 2,
            masked: false,
        },
    ]
}

#[derive(Serialize, serde::Deserialize)]
struct SweepFile {
    runs: Vec<RunRecord>,
}

fn read_sweep(path: &Path) -> Vec<RunRecord> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<SweepFile>(&t).ok())
        .map(|f| f.runs)
        .unwrap_or_default()
}

/// `sweep.md` from every run: the table (TI and each DreamArtist row), and
/// which rows beat TI on controllability at fidelity ≥ 0.8 on every concept.
fn sweep_report(runs: &[RunRecord], out: &Path) -> Result<()> {
    let mut order: Vec<String> = TI_MODES.iter().map(|m| format!("ti{}", m.suffix)).collect();
    for v in variants() {
        for m in &MODES {
            order.push(format!("{}{}", v.name, m.suffix));
        }
    }
    let order_ref: Vec<&str> = order.iter().map(|s| s.as_str()).collect();
    let summary = summarise(runs, &order_ref);
    let mut verdict = String::new();
    let concepts: Vec<&String> = {
        let mut c: Vec<&String> = summary.iter().map(|(c, _, _)| c).collect();
        c.dedup();
        c
    };
    for row in &order {
        let mut ok = !concepts.is_empty();
        let mut cells = Vec::new();
        for c in &concepts {
            let get = |r: &str| {
                summary
                    .iter()
                    .find(|(cc, rr, _)| cc == *c && rr == r)
                    .map(|(_, _, s)| s)
            };
            let baseline = baseline_of(row);
            match (get(row), get(baseline)) {
                (Some(s), Some(ti)) => {
                    cells.push(format!(
                        "{c}: fidelity {:.2}, control {:.2} vs {baseline} {:.2}",
                        s.fidelity, s.control, ti.control
                    ));
                    ok &= s.fidelity >= 0.8 && s.control > ti.control;
                }
                _ => ok = false,
            }
        }
        if !row.starts_with("ti") && cells.len() == concepts.len() {
            verdict.push_str(&format!(
                "- {row}: {} — {}\n",
                if ok { "**beats TI on both**" } else { "no" },
                cells.join("; ")
            ));
        }
    }
    let md = format!(
        "# Toy world sweep (mean over training seeds; reference figures in parentheses where the row exists)\n\n{}\n## Beats TI on controllability at fidelity ≥ 0.8 on every concept?\n\n(`-photo` rows against `ti-photo`: both sampled with every background inside \"a photo of\".)\n\n{}\n## Controllability per background prompt\n\n{}\n## Per training seed\n\n{}",
        table(&summary),
        verdict,
        per_prompt_table(&summary),
        per_seed_table(runs)
    );
    write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    Ok(())
}

fn sweep(a: &SweepArgs) -> Result<()> {
    let all = variants();
    if a.list {
        for v in &all {
            println!("{:<12} {}", v.name, v.what);
        }
        return Ok(());
    }
    let c = &a.common;
    let path = c.out.join("sweep.json");
    let mut runs = read_sweep(&path);
    // Merge other sweeps' results (parts run elsewhere) or the comparison's
    // `results.json` (its TI and DreamArtist runs are the sweep's `ti`, `da`
    // and `da-noneg` rows), then report.
    for other in &a.merge {
        for mut r in read_sweep(other) {
            if r.seed.is_none() {
                continue;
            }
            if r.row == "da_pos_only" {
                r.row = "da-noneg".into();
            }
            if !runs
                .iter()
                .any(|x| x.concept == r.concept && x.row == r.row && x.seed == r.seed)
            {
                runs.push(r);
            }
        }
    }
    if a.report_only {
        std::fs::create_dir_all(&c.out)?;
        write_json(&path, &SweepFile { runs: runs.clone() })?;
        return sweep_report(&runs, &c.out);
    }
    let chosen: Vec<&Variant> = match &a.only {
        None => all.iter().collect(),
        Some(names) => {
            for n in names {
                if n != "ti" && !all.iter().any(|v| v.name == n) {
                    bail!("unknown variant `{n}` (see --list)");
                }
            }
            all.iter()
                .filter(|v| names.iter().any(|n| n == v.name))
                .collect()
        }
    };
    let with_ti = a.only.as_ref().is_none_or(|o| o.iter().any(|n| n == "ti"));
    let sd = load_model(c)?;
    let ws = scratch_workspace(c)?;
    let grids = c.out.join("sweep-grids");
    let save = |runs: &[RunRecord]| -> Result<()> {
        write_json(
            &path,
            &SweepFile {
                runs: runs.to_vec(),
            },
        )?;
        sweep_report(runs, &c.out)
    };
    let done = |runs: &[RunRecord], concept: &str, row: &str, seed: u64| {
        runs.iter()
            .any(|r| r.concept == concept && r.row == row && r.seed == Some(seed))
    };
    let mut targets = Vec::new();
    let masked_dir = c.out.join("masked-references");
    for name in &a.runs.concepts {
        let spec = spec(name)?;
        let src = a.runs.references.join(format!("{name}.png"));
        let ref_rel = import_reference(&ws, &src)?;
        let masked_rel = import_reference(&ws, &masked_reference(&src, &masked_dir)?)?;
        targets.push((spec, ref_rel, masked_rel));
    }
    // Variant-major order: a sweep stopped early has whole variants (every
    // concept and seed) rather than a little of everything.
    let units: Vec<Option<&Variant>> = with_ti
        .then_some(None)
        .into_iter()
        .chain(chosen.iter().map(|v| Some(*v)))
        .collect();
    for unit in units {
        for (spec, plain_rel, masked_rel) in &targets {
            let ref_rel = if unit.is_some_and(|v| v.masked) {
                masked_rel
            } else {
                plain_rel
            };
            let name = spec.name;
            for &seed in &a.runs.seeds {
                let first = seed == a.runs.seeds[0];
                let (row_name, modes): (&str, &[Mode]) = match unit {
                    None => ("ti", &TI_MODES),
                    Some(v) => (v.name, &MODES[..v.modes.min(MODES.len())]),
                };
                let rows: Vec<String> = modes
                    .iter()
                    .map(|m| format!("{row_name}{}", m.suffix))
                    .collect();
                if rows.iter().all(|row| done(&runs, name, row, seed)) {
                    continue;
                }
                let mut cfg = match unit {
                    None => oneshot::reference_config(Method::TextualInversion, seed),
                    Some(_) => oneshot::reference_config(Method::DreamArtist, seed),
                };
                if let Some(s) = a.runs.train_steps {
                    cfg.steps = s;
                }
                if let Some(v) = unit {
                    (v.train)(&mut cfg);
                }
                let concept = oneshot::concept(&format!("{name}-{row_name}-s{seed}"), ref_rel, cfg);
                let trained = oneshot::train_or_load(&sd, &ws, &concept)?;
                for (m, row) in modes.iter().zip(&rows) {
                    if done(&runs, name, row, seed) {
                        continue;
                    }
                    let bank = oneshot::trained_bank(&trained, m.negative);
                    let st = SampleSettings {
                        cfg: m.cfg.unwrap_or(c.cfg),
                        ..settings(c)
                    };
                    let grid_path = first.then(|| grids.join(format!("{name}_{row}_s{seed}.png")));
                    let (r, _) = eval_row(
                        &sd,
                        spec,
                        &Subject {
                            phrasing: m.phrasing,
                            ..oneshot::subject(&bank, m.negative)
                        },
                        &st,
                        row,
                        Some(seed),
                        Some(&trained),
                        grid_path,
                    )?;
                    runs.push(r);
                    save(&runs)?;
                }
            }
        }
    }
    save(&runs)?;
    Ok(())
}
