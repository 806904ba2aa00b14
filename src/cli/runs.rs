//! `dreamartist runs`: a concept's runs as a table, a run's note and tags,
//! and making a run's (or checkpoint's) vectors the concept's pair or
//! exporting them.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::concept::rundir::format_utc;
use crate::concept::{Concept, RunDir};
use crate::interop::export::ExportFormat;
use crate::runs::{export_run, list_runs, promote, sort_runs, table_lines, RunColumn, RunSummary};
use crate::workspace::Workspace;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Option<RunsCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The concept whose runs to list.
    #[arg(required = true)]
    pub concept: Option<String>,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
    /// Sort by: id, status, step, loss, smoothed, started, method, seed, options,
    /// fidelity (clip-i), text_alignment (clip-t), diversity, tags.
    #[arg(long, default_value = "id")]
    pub sort: String,
    /// Largest first (runs without a value stay last).
    #[arg(long)]
    pub desc: bool,
    /// One JSON object per run on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A run: its id or `latest`.
#[derive(Debug, clap::Args)]
pub struct RunRef {
    pub concept: String,
    /// A run id, or `latest`.
    pub run: String,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// The runs table (what `runs CONCEPT` prints).
    List(ListArgs),
    /// Everything about one run: status, losses, options, scores, note.
    Show(RunRef),
    /// Print a run's note, or replace it (`-` reads it from stdin).
    Note {
        #[command(flatten)]
        run: RunRef,
        text: Option<String>,
        /// Remove the note.
        #[arg(long, conflicts_with = "text")]
        clear: bool,
    },
    /// Print a run's tags, or add some (and remove others with --remove).
    Tag {
        #[command(flatten)]
        run: RunRef,
        tags: Vec<String>,
        #[arg(long = "remove", value_name = "TAG")]
        remove: Vec<String>,
    },
    /// Make a run's pair (or a checkpoint's vectors) the concept's active pair.
    Promote {
        #[command(flatten)]
        run: RunRef,
        /// A checkpoint step instead of the run's finished pair.
        #[arg(long)]
        step: Option<u64>,
    },
    /// Write a run's pair (or a checkpoint's vectors) for another tool.
    Export {
        #[command(flatten)]
        run: RunRef,
        /// A checkpoint step instead of the run's finished pair.
        #[arg(long)]
        step: Option<u64>,
        /// a1111, a1111-pt, kohya, diffusers or onetrainer.
        #[arg(long)]
        format: String,
        /// Output folder (default: <workspace>/exports/<format>/<run>[-step-N]).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(args: RunsArgs) -> Result<ExitCode> {
    match args.action {
        None => list(args.list),
        Some(RunsCommand::List(a)) => list(a),
        Some(RunsCommand::Show(r)) => show(r),
        Some(RunsCommand::Note { run, text, clear }) => note(run, text, clear),
        Some(RunsCommand::Tag { run, tags, remove }) => tag(run, tags, remove),
        Some(RunsCommand::Promote { run, step }) => {
            let (ws, concept, dir) = open(&run)?;
            let p = promote(&ws, &concept, dir.id(), step)?;
            println!(
                "<{}> is now run {} at step {}: {}",
                concept.name,
                p.run,
                p.step,
                p.positive.display()
            );
            match &p.negative {
                Some(n) => println!("negative: {}", n.display()),
                None => println!(
                    "negative: none (a Textual Inversion run; <{}-neg> removed)",
                    concept.name
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsCommand::Export {
            run,
            step,
            format,
            out,
        }) => {
            let (ws, concept, dir) = open(&run)?;
            let format = ExportFormat::parse(&format)?;
            let out = out.unwrap_or_else(|| {
                let folder = match step {
                    Some(s) => format!("{}-step-{s}", dir.id()),
                    None => dir.id().to_string(),
                };
                ws.root.join("exports").join(format.name()).join(folder)
            });
            let e = export_run(&ws, &concept, dir.id(), step, format, &out)?;
            for p in &e.files {
                println!("{}", p.display());
            }
            if let Some(note) = &e.note {
                eprint!("{note}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The workspace, the concept and the run a command names.
fn open(r: &RunRef) -> Result<(Workspace, Concept, RunDir)> {
    let ws = Workspace::open(&r.workspace)?;
    let concept = Concept::load(&ws, &r.concept)?;
    let run = RunDir::find(&concept.name, &concept.dir(&ws), &r.run)?;
    Ok((ws, concept, run))
}

fn list(a: ListArgs) -> Result<ExitCode> {
    let Some(name) = a.concept else {
        bail!("name a concept: dreamartist runs CONCEPT");
    };
    let ws = Workspace::open(&a.workspace)?;
    let concept = Concept::load(&ws, &name)?;
    let column = RunColumn::parse(&a.sort).map_err(anyhow::Error::msg)?;
    let mut runs = list_runs(&concept, &concept.dir(&ws));
    sort_runs(&mut runs, column, a.desc);
    if a.json {
        for r in &runs {
            println!("{}", serde_json::to_string(r)?);
        }
    } else if runs.is_empty() {
        eprintln!(
            "concept <{name}> has no runs yet; train it with `dreamartist train {name}` or a sweep"
        );
    } else {
        for line in table_lines(&runs) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(r: RunRef) -> Result<ExitCode> {
    let (ws, concept, dir) = open(&r)?;
    let s = RunSummary::read(&concept, &concept.dir(&ws), dir.id());
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
    println!("run       {} ({})", s.id, dir.path().display());
    println!("status    {}", s.state);
    if let Some(m) = &s.message {
        println!("          {m}");
    }
    println!("steps     {}", s.progress());
    println!(
        "loss      {} (smoothed {})",
        opt(s.loss),
        opt(s.smoothed_loss)
    );
    if let Some(t) = s.started {
        println!("started   {} UTC", format_utc(t));
    }
    if let Some(t) = s.ended {
        println!("ended     {} UTC", format_utc(t));
    }
    println!(
        "method    {}{}",
        s.method,
        s.preset
            .as_deref()
            .map(|p| format!(" (preset {p})"))
            .unwrap_or_default()
    );
    for c in &s.changed {
        println!(
            "option    {} = {} (concept: {})",
            c.key,
            c.value,
            c.default.as_deref().unwrap_or("unset")
        );
    }
    let cps: Vec<String> = s.checkpoints.iter().map(u64::to_string).collect();
    println!(
        "saved     {}checkpoints {}",
        if s.has_pair { "pair, " } else { "" },
        if cps.is_empty() {
            "none".into()
        } else {
            cps.join(", ")
        }
    );
    if let Some(e) = &s.eval {
        println!(
            "CLIP      fidelity {:.3}, text alignment {:.3}, diversity {} ({})",
            e.fidelity,
            e.text_alignment,
            e.diversity
                .map_or_else(|| "-".into(), |d| format!("{d:.3}")),
            e.target
        );
    }
    if !s.tags.is_empty() {
        println!("tags      {}", s.tags.join(" "));
    }
    if !s.note.is_empty() {
        println!("note\n{}", s.note.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn note(r: RunRef, text: Option<String>, clear: bool) -> Result<ExitCode> {
    let (_, _, dir) = open(&r)?;
    let path = dir.note_path();
    let write = |t: &str| {
        dir.set_note(t)
            .with_context(|| format!("{}: cannot write", path.display()))
    };
    match (text, clear) {
        (_, true) => write("")?,
        (Some(t), _) if t == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            write(&s)?;
        }
        (Some(t), _) => write(&t)?,
        (None, _) => print!("{}", dir.note()),
    }
    Ok(ExitCode::SUCCESS)
}

fn tag(r: RunRef, add: Vec<String>, remove: Vec<String>) -> Result<ExitCode> {
    let (_, _, dir) = open(&r)?;
    let tags = if add.is_empty() && remove.is_empty() {
        dir.tags()
    } else {
        dir.edit_tags(&add, &remove)?
    };
    for t in tags {
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
