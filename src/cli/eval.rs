//! `dreamartist eval`: CLIP scores of a concept's runs or checkpoints, as a
//! table (side by side for several), `eval.json` and sample grids.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::parse_device;
use crate::concept::Concept;
use crate::eval::prompts::load_prompt_file;
use crate::eval::report::eval_dir;
use crate::eval::{
    evaluate, resolve_targets, table_lines, ClipModel, EvalControl, EvalEvent, EvalRequest,
    EvalSettings, DEFAULT_CLIP,
};
use crate::sd::SamplerKind;
use crate::train::RunDir;
use crate::workspace::Workspace;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The concept to evaluate.
    pub concept: String,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
    /// A run id or `latest` (the default); repeat to compare runs side by side.
    #[arg(long = "run")]
    pub runs: Vec<String>,
    /// A checkpoint step of each run (`final` = its finished pair, the default);
    /// repeat to compare checkpoints side by side.
    #[arg(long = "checkpoint")]
    pub checkpoints: Vec<String>,
    /// Prompt file: one prompt per line, `[name]` (or `<concept>`) where the concept goes.
    /// Default: the built-in object or style prompts, by the concept's preset.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Samples per prompt.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Seed of the first sample of every prompt (the others count up).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Denoising steps per sample (default 20).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale (default 7).
    #[arg(long)]
    pub cfg: Option<f64>,
    /// ddim, euler, dpmpp_2m, dpmpp_2m_karras (`--scheduler` is the same).
    #[arg(long, visible_alias = "scheduler")]
    pub sampler: Option<String>,
    /// CLIP model: a Hugging Face CLIP folder or hf:org/name (offline cache).
    #[arg(long, default_value = DEFAULT_CLIP)]
    pub clip: String,
    /// Class word for CLIP-T (overrides the concept's `class`).
    #[arg(long)]
    pub class: Option<String>,
    /// One JSON object per report on stdout.
    #[arg(long)]
    pub json: bool,
}

fn settings(args: &EvalArgs) -> Result<EvalSettings> {
    let mut s = EvalSettings {
        samples: args.samples,
        seed: args.seed,
        class_word: args.class.clone(),
        prompts: args.prompts.clone(),
        ..Default::default()
    };
    if let Some(v) = args.steps {
        s.steps = v;
    }
    if let Some(v) = args.cfg {
        s.cfg = v;
    }
    if let Some(name) = &args.sampler {
        s.sampler = SamplerKind::parse(name).with_context(|| {
            format!(
                "unknown sampler `{name}` (known: {})",
                SamplerKind::known_names()
            )
        })?;
    }
    if s.samples == 0 {
        anyhow::bail!("--samples must be at least 1");
    }
    Ok(s)
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    let concept = Concept::load(&ws, &args.concept)?;
    let settings = settings(&args)?;
    // Fail on bad targets or prompt files before loading any model.
    let targets = resolve_targets(
        &concept.name,
        &concept.dir(&ws),
        &args.runs,
        &args.checkpoints,
    )?;
    if let Some(p) = &args.prompts {
        load_prompt_file(p, &concept.positive_word())?;
    }
    let device = parse_device(&ws.config.device)?;
    let clip = ClipModel::load(&args.clip, &device)?;
    let sd = ws.load_model()?;
    let req = EvalRequest {
        concept: concept.name.clone(),
        targets,
        settings,
    };
    let tty = std::io::stderr().is_terminal();
    let reports = evaluate(&sd, &clip, &ws, &req, |ev| {
        if !args.json {
            let line = match ev {
                EvalEvent::Target {
                    index,
                    count,
                    label,
                } => format!("[{}/{count}] {label}", index + 1),
                EvalEvent::Prompt {
                    index,
                    count,
                    prompt,
                    ..
                } => format!("  sampling {}/{count}: {prompt}", index + 1),
                EvalEvent::Report { path, .. } => format!("  wrote {}", path.display()),
            };
            let mut err = std::io::stderr();
            let _ = writeln!(err, "{line}");
            if tty {
                let _ = err.flush();
            }
        }
        EvalControl::Continue
    })?;
    let concept_dir = concept.dir(&ws);
    if args.json {
        for (r, t) in reports.iter().zip(&req.targets) {
            let dir = eval_dir(RunDir::at(&concept_dir, &t.run).path(), t);
            let mut v = serde_json::to_value(r)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("event".into(), "report".into());
                obj.insert("dir".into(), serde_json::to_value(&dir)?);
            }
            println!("{}", serde_json::to_string(&v)?);
        }
    } else {
        for line in table_lines(&reports) {
            println!("{line}");
        }
        for t in &req.targets {
            let dir = eval_dir(RunDir::at(&concept_dir, &t.run).path(), t);
            println!("{}: {}", t.label(), dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
