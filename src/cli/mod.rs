//! Command-line entry points, one file per command. Thin: parse, call the
//! library, print.

mod concept;
mod eval;
mod generate;
mod interop;
mod runs;
mod slurm;
mod sweep;
mod train;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand};

use crate::selftest::{run_fixture, SelftestOptions, Summary, ALL_KINDS};
use crate::workspace::Workspace;

#[derive(Debug, Parser)]
#[command(
    name = "dreamartist",
    version,
    about = "One-shot concept learning on Stable Diffusion (DreamArtist), in the terminal"
)]
pub struct Cli {
    /// Without a subcommand: the workbench on the current folder's workspace.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// The workbench: a dashboard over a workspace (the default command).
    Tui {
        #[arg(short = 'w', long = "workspace", default_value = ".")]
        workspace: PathBuf,
        /// How images are drawn: auto queries the terminal.
        #[arg(long, value_enum, default_value = "auto")]
        image_protocol: crate::tui::images::ProtocolChoice,
        /// Colour theme (dark, light, catppuccin-mocha, or one in <workspace>/themes/).
        #[arg(long)]
        theme: Option<String>,
        /// Show the last frame's render time in the status bar.
        #[arg(long)]
        debug_fps: bool,
    },
    /// Time a training step and the sampling loop (same JSON keys as the PyTorch peer).
    Bench {
        /// A model spec (diffusers folder, hf:org/name, single file).
        #[arg(long)]
        model: Option<String>,
        /// SD 1.5 sizes with random weights.
        #[arg(long, conflicts_with_all = ["model", "sdxl_random"])]
        sd15_random: bool,
        /// SDXL base sizes with random weights (~14 GB in f32, ~7 GB in f16).
        #[arg(long, conflicts_with = "model")]
        sdxl_random: bool,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 10)]
        train_iters: usize,
        #[arg(long, default_value = "f32")]
        dtype: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Train with activation recompute (gradient checkpointing).
        #[arg(long)]
        recompute: bool,
        /// Print only the JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Print an image in the terminal (kitty, iTerm2, sixel or half-blocks).
    Show {
        image: PathBuf,
        /// Width in terminal columns (default: fit the terminal).
        #[arg(long)]
        width: Option<u32>,
    },
    /// Create a workspace: workspace.toml, references/, concepts/, prompts/, outputs/.
    Init {
        dir: PathBuf,
        /// A diffusers model folder or hf:org/name.
        #[arg(long)]
        model: String,
    },
    /// Manage concepts (pseudo-word pairs).
    Concept {
        #[command(subcommand)]
        action: ConceptCommand,
    },
    /// Train a concept's pseudo-word pair (DreamArtist).
    Train(TrainArgs),
    /// Generate images from a prompt file or --prompt (txt2img, img2img, inpainting).
    Generate(GenerateArgs),
    /// Watch prompts/ and regenerate a prompt file whenever it is saved.
    Watch {
        #[arg(short = 'w', long = "workspace", default_value = ".")]
        workspace: PathBuf,
        /// One JSON object per event on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Import embeddings (A1111 .pt, diffusers, kohya, OneTrainer) into a workspace.
    Import(self::interop::ImportArgs),
    /// Export a concept's pair (or an embeddings/ word) for another tool.
    Export(self::interop::ExportArgs),
    /// Convert embedding files between layouts, without a workspace.
    Convert(self::interop::ConvertArgs),
    /// Say what a file is: an embedding or a single-file checkpoint.
    Inspect(self::interop::InspectArgs),
    /// Score a concept's runs with CLIP: fidelity, text alignment, diversity.
    Eval(self::eval::EvalArgs),
    /// A concept's runs: the table (`runs CONCEPT`), notes, tags, promote, export.
    Runs(self::runs::RunsArgs),
    /// Train a sweep file's grid of options × seeds as runs of one concept.
    Sweep(self::sweep::SweepArgs),
    /// Sweeps' runs with their Slurm state and progress; cancel their tasks.
    Status(self::slurm::StatusArgs),
    /// Check this build against a golden fixture folder (cases.toml + goldens.safetensors + model/).
    Selftest {
        /// Fixture folder, e.g. tests/fixtures/tiny-sd1.
        fixture: PathBuf,
        /// Only these case kinds (comma-separated).
        #[arg(long, value_delimiter = ',')]
        kinds: Option<Vec<String>>,
        /// Device: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Run the cases on this single-file checkpoint (configs from the fixture's model/).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Compute dtype: f32, or f16/bf16 with looser tolerances (vectors,
        /// losses and optimiser state stay f32).
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ConceptCommand {
    /// Create a concept from one or more reference images.
    Add {
        name: String,
        #[arg(long = "reference", required = true, num_args = 1..)]
        references: Vec<PathBuf>,
        /// photo, anime, style, toy or toy++ (the toy world; toy++ is DreamArtist++).
        #[arg(long, default_value = "photo")]
        preset: String,
        #[arg(long)]
        pos_vectors: Option<usize>,
        #[arg(long)]
        neg_vectors: Option<usize>,
        /// Text whose token embeddings initialise the vectors (several words allowed).
        #[arg(long, default_value = "*")]
        init_text: String,
        /// The negative word's own init text (default: --init-text).
        #[arg(long)]
        neg_init_text: Option<String>,
        /// tokens: the init text's embeddings over the slots; mean: every vector =
        /// their mean + N(0, init-noise²).
        #[arg(long)]
        init_mode: Option<String>,
        /// Noise std of `--init-mode mean` (default 0.01).
        #[arg(long)]
        init_noise: Option<f64>,
        /// The class word (e.g. cat), used by evaluation prompts.
        #[arg(long)]
        class: Option<String>,
        /// dreamartist (the word pair), dreamartist++ (the pair plus a positive
        /// and a negative LoRA adapter) or ti (Textual Inversion).
        #[arg(long)]
        method: Option<String>,
        #[arg(short = 'w', long = "workspace", default_value = ".")]
        workspace: PathBuf,
    },
    /// List the concepts of a workspace.
    List {
        #[arg(short = 'w', long = "workspace", default_value = ".")]
        workspace: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The concept to train.
    pub name: String,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
    /// Total steps of the run (with --resume: continue up to this many).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue a run: `latest` or a run id.
    #[arg(long)]
    pub resume: Option<String>,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Learning rate: a number or A1111 steps (`0.005:100, 1e-3`).
    #[arg(long)]
    pub lr: Option<String>,
    /// Train guidance: a number or `lo-hi:ln|cos|cos2`; 1 = Textual Inversion.
    #[arg(long)]
    pub train_cfg: Option<String>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub neg_lr_weight: Option<f64>,
    #[arg(long)]
    pub rec_weight: Option<f64>,
    #[arg(long)]
    pub template: Option<String>,
    /// Training resolution, square (multiple of 8).
    #[arg(long, conflicts_with_all = ["width", "height"])]
    pub size: Option<usize>,
    /// Training width (with --height: a width × height run, references centre-cropped).
    #[arg(long, requires = "height")]
    pub width: Option<usize>,
    #[arg(long, requires = "width")]
    pub height: Option<usize>,
    #[arg(long)]
    pub ema_decay: Option<f64>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Render a preview sample every N steps into the run's samples/.
    #[arg(long)]
    pub sample_every: Option<u64>,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Gradient-norm clip per matrix (0 = off).
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
    /// Train on a fresh VAE posterior sample of the reference each step (default: the mean).
    #[arg(long)]
    pub vae_sample: bool,
    /// Activation recompute: recompute the UNet's activations in backward
    /// instead of keeping them (much less memory, about one more UNet forward per step).
    #[arg(long)]
    pub recompute: bool,
    /// dreamartist, dreamartist++ (words plus LoRA adapters) or ti.
    #[arg(long)]
    pub method: Option<String>,
    /// DreamArtist++: rank of the adapters.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// DreamArtist++: the adapters' alpha (scale alpha / rank).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// DreamArtist++: the adapters' learning rate (the forms of --lr).
    #[arg(long)]
    pub lora_lr: Option<String>,
    /// DreamArtist++: layers with adapters, a comma list of attn, ff, te.
    #[arg(long)]
    pub lora_targets: Option<String>,
    /// MinSNR-γ loss weighting (e.g. 5).
    #[arg(long)]
    pub min_snr_gamma: Option<f64>,
    #[command(flatten)]
    pub slurm: self::slurm::SlurmArgs,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A prompt file (TOML). Command-line options override its fields.
    pub prompt_file: Option<PathBuf>,
    #[arg(short = 'w', long = "workspace", default_value = ".")]
    pub workspace: PathBuf,
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long)]
    pub negative: Option<String>,
    /// -1 picks a random seed (printed and recorded).
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<i64>,
    #[arg(long)]
    pub count: Option<usize>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub cfg: Option<f64>,
    /// ddim, euler, dpmpp_2m, dpmpp_2m_karras (`--scheduler` is the same).
    #[arg(long, visible_alias = "scheduler")]
    pub sampler: Option<String>,
    #[arg(long)]
    pub width: Option<usize>,
    #[arg(long)]
    pub height: Option<usize>,
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    #[arg(long)]
    pub strength: Option<f64>,
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Do not add `<name-neg>` to the negative prompt automatically.
    #[arg(long)]
    pub no_auto_negative: bool,
    /// DreamArtist++: strength of a concept's positive adapter (default 0.8).
    #[arg(long, allow_hyphen_values = true)]
    pub lora_pos: Option<f64>,
    /// DreamArtist++: strength of its negative adapter (default 0.65).
    #[arg(long, allow_hyphen_values = true)]
    pub lora_neg: Option<f64>,
    /// Write the (single) image here instead of outputs/ (missing folders are made).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// One JSON object per image on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parses `f32`, `f16`, `bf16` (the library's rule, for the CLI's flags).
pub fn parse_dtype(s: &str) -> Result<DType> {
    Ok(crate::sd::device::parse_dtype(s)?)
}

/// Parses and opens `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    Ok(crate::sd::device::parse_device(s)?)
}

pub fn main() -> ExitCode {
    // `dreamartist selftest … | head` ends quietly, as command-line tools do,
    // instead of panicking on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    crate::threads::configure();
    let cli = Cli::parse();
    // Headless work runs on the compute pool (see `threads::on_pool`). The
    // workbench and `watch` wait on their engine thread, whose jobs go to the
    // pool themselves: their own thread must not hold a pool worker.
    let result = match cli.command {
        None | Some(Command::Tui { .. }) | Some(Command::Watch { .. }) => run(cli),
        Some(_) => crate::threads::on_pool(|| run(cli)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::errtext::chain(&e));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Tui {
        workspace: PathBuf::from("."),
        image_protocol: crate::tui::images::ProtocolChoice::Auto,
        theme: None,
        debug_fps: false,
    });
    match command {
        Command::Tui {
            workspace,
            image_protocol,
            theme,
            debug_fps,
        } => {
            crate::tui::run(crate::tui::TuiOptions {
                workspace,
                image_protocol,
                theme,
                debug_fps,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            model,
            sd15_random,
            sdxl_random,
            size,
            steps,
            train_iters,
            dtype,
            device,
            recompute,
            json,
        } => {
            let random = match (sd15_random, sdxl_random) {
                (true, _) => Some(crate::bench::RandomModel::Sd15),
                (_, true) => Some(crate::bench::RandomModel::Sdxl),
                _ => None,
            };
            let opts = crate::bench::BenchOptions {
                model,
                random,
                size,
                steps,
                train_iters,
                dtype: parse_dtype(&dtype)?,
                device: parse_device(&device)?,
                recompute,
            };
            let report = crate::bench::run(&opts)?;
            let line = serde_json::to_string(&report)?;
            if json {
                println!("{line}");
            } else {
                println!(
                    "train step {:.2} ms{} · sample step {:.2} ms · sample total {:.1} ms ({} steps) · peak {:.0} MiB (loaded {:.0}, after training {:.0}) · {} threads\n{line}",
                    report.train_step_ms,
                    if report.recompute { " (recompute)" } else { "" },
                    report.sample_step_ms,
                    report.sample_total_ms,
                    report.sampling_steps,
                    report.peak_mem_mib,
                    report.loaded_peak_mem_mib,
                    report.train_peak_mem_mib,
                    report.threads
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { image, width } => {
            let img = image::ImageReader::open(&image)
                .and_then(|r| r.with_guessed_format())
                .with_context(|| format!("{}: cannot open", image.display()))?
                .decode()
                .with_context(|| format!("{}: not a readable image", image.display()))?;
            // Into a file or pipe: plain half-blocks, and no terminal queries
            // (nothing would answer them; their bytes would land in the output).
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let config = viuer::Config {
                width,
                absolute_offset: false,
                use_kitty: terminal,
                use_iterm: terminal,
                ..Default::default()
            };
            viuer::print(&img, &config)
                .map_err(|e| anyhow::anyhow!("{}: cannot print: {e}", image.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir, model } => {
            let ws = Workspace::init(&dir, &model)?;
            println!(
                "created workspace {} (model {})",
                ws.root.display(),
                ws.config.model
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Concept { action } => self::concept::run(action),
        Command::Train(args) => self::train::run(args),
        Command::Generate(args) => self::generate::run(args),
        Command::Watch { workspace, json } => self::watch::run(&workspace, json),
        Command::Import(args) => self::interop::run_import(args),
        Command::Export(args) => self::interop::run_export(args),
        Command::Convert(args) => self::interop::run_convert(args),
        Command::Inspect(args) => self::interop::run_inspect(args),
        Command::Eval(args) => self::eval::run(args),
        Command::Runs(args) => self::runs::run(args),
        Command::Sweep(args) => self::sweep::run(args),
        Command::Status(args) => self::slurm::status(args),
        Command::Selftest {
            fixture,
            kinds,
            device,
            model,
            dtype,
        } => {
            if let Some(ks) = &kinds {
                for k in ks {
                    if !ALL_KINDS.contains(&k.as_str()) {
                        bail!("unknown case kind `{k}` (known: {})", ALL_KINDS.join(", "));
                    }
                }
            }
            let opts = SelftestOptions {
                kinds,
                device: parse_device(&device)?,
                dtype: parse_dtype(&dtype)?,
                model,
            };
            let results = run_fixture(&fixture, &opts, |r| println!("{}", r.line()))?;
            let s = Summary::of(&results);
            println!("{} passed, {} failed", s.passed, s.failed);
            Ok(if s.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
