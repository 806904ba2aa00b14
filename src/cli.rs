//! Command-line entry points. Thin: parse, call the library, print.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand};

use crate::selftest::{run_fixture, SelftestOptions, Summary, ALL_KINDS};

#[derive(Debug, Parser)]
#[command(
    name = "dreamartist",
    version,
    about = "One-shot concept learning on Stable Diffusion (DreamArtist), in the terminal"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    },
}

/// Parses `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::new_cuda(n)?),
            _ => bail!("unknown device `{other}` (use cpu, cuda or cuda:N)"),
        },
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Selftest {
            fixture,
            kinds,
            device,
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
                dtype: DType::F32,
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
