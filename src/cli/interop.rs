//! `dreamartist import | export | convert | inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::interop::export::{ExportFormat, Exported};
use crate::interop::inspect::inspect;
use crate::interop::workspace::{convert, export_with_note, import, ImportOptions};
use crate::workspace::Workspace;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Embedding files (.pt, .bin, .safetensors); a DreamArtist pair X + X-neg becomes concept X.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Name the imported word (or pair) instead of using the file's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Store the (single) file as this concept's negative word.
    #[arg(long)]
    pub as_negative_of: Option<String>,
    /// Make the (single) kohya LoRA file this concept's DreamArtist++ positive adapter.
    #[arg(long, conflicts_with_all = ["as_negative_of", "name"])]
    pub lora_of: Option<String>,
    /// With --lora-of: the negative adapter instead.
    #[arg(long, requires = "lora_of")]
    pub negative: bool,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A concept (its <name> / <name-neg> pair) or a word in embeddings/.
    pub concept: String,
    /// a1111, a1111-pt, kohya, diffusers or onetrainer.
    #[arg(long)]
    pub format: String,
    /// Output folder (default: <workspace>/exports/<format>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Embedding files in any importable layout.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// a1111, a1111-pt, kohya, diffusers or onetrainer.
    #[arg(long)]
    pub format: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Name the converted word (or pair) instead of using the file's name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// An embedding, a kohya LoRA file or a single-file checkpoint.
    pub file: PathBuf,
    /// For a checkpoint: a diffusers folder whose configs describe it (else read off the shapes).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run_import(args: ImportArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    if let Some(concept) = &args.lora_of {
        let [file] = args.files.as_slice() else {
            anyhow::bail!("--lora-of takes exactly one file, got {}", args.files.len());
        };
        let to = crate::interop::lora::import_adapter(&ws, file, concept, args.negative)?;
        println!(
            "imported {} as the {} adapter of concept {concept}: {}",
            file.display(),
            if args.negative {
                "negative"
            } else {
                "positive"
            },
            to.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let done = import(
        &ws,
        &args.files,
        &ImportOptions {
            name: args.name,
            as_negative_of: args.as_negative_of,
        },
    )?;
    for d in &done {
        println!("imported {}", d.describe());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_export(args: ExportArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    let format = ExportFormat::parse(&args.format)?;
    let out = args
        .out
        .unwrap_or_else(|| ws.root.join("exports").join(format.name()));
    print_exported(&export_with_note(&ws, &args.concept, format, &out)?);
    Ok(ExitCode::SUCCESS)
}

pub fn run_convert(args: ConvertArgs) -> Result<ExitCode> {
    let format = ExportFormat::parse(&args.format)?;
    print_exported(&convert(
        &args.files,
        format,
        &args.out,
        args.name.as_deref(),
    )?);
    Ok(ExitCode::SUCCESS)
}

/// The files on stdout, one a line (for scripts); how to load them on stderr.
fn print_exported(e: &Exported) {
    for p in &e.files {
        println!("{}", p.display());
    }
    if let Some(note) = &e.note {
        eprint!("{note}");
    }
}

pub fn run_inspect(args: InspectArgs) -> Result<ExitCode> {
    print!("{}", inspect(&args.file, args.config.as_deref())?);
    Ok(ExitCode::SUCCESS)
}
