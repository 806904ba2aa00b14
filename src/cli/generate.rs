//! `dreamartist generate`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::GenerateArgs;
use crate::generate::output::{save_sample, Destination};
use crate::generate::promptfile::load_prompt_file;
use crate::generate::word_bank;
use crate::generate::{generate_each, GenerateError, GenerateRequest, StepControl};
use crate::sd::SamplerKind;
use crate::workspace::Workspace;

/// The request from a prompt file and/or flags (flags win).
pub fn request_from_args(args: &GenerateArgs, ws: &Workspace) -> Result<GenerateRequest> {
    let mut req = match &args.prompt_file {
        Some(p) => load_prompt_file(p, &ws.root)?,
        None => GenerateRequest::default(),
    };
    if let Some(p) = &args.prompt {
        req.prompt = p.clone();
    } else if args.prompt_file.is_none() {
        bail!("give a prompt file or --prompt \"...\"");
    }
    if let Some(v) = &args.negative {
        req.negative = v.clone();
    }
    if let Some(v) = args.seed {
        req.seed = v;
    }
    if let Some(v) = args.count {
        req.count = v;
    }
    if let Some(v) = args.steps {
        req.steps = v;
    }
    if let Some(v) = args.cfg {
        req.cfg = v;
    }
    if let Some(s) = &args.sampler {
        req.sampler = SamplerKind::parse(s).with_context(|| {
            format!(
                "unknown sampler `{s}` (known: {})",
                SamplerKind::known_names()
            )
        })?;
    }
    if let Some(v) = args.width {
        req.width = v;
    }
    if let Some(v) = args.height {
        req.height = v;
    }
    if let Some(v) = &args.init_image {
        req.init_image = Some(v.clone());
    }
    if let Some(v) = args.strength {
        req.strength = v;
    }
    if let Some(v) = &args.mask {
        req.mask = Some(v.clone());
    }
    if let Some(v) = args.lora_pos {
        req.lora_pos = v;
    }
    if let Some(v) = args.lora_neg {
        req.lora_neg = v;
    }
    if args.no_auto_negative {
        req.auto_negative = false;
    }
    for (name, v) in [("--width", args.width), ("--height", args.height)] {
        if v == Some(0) {
            bail!("{name} 0: leave it out for the model's native size");
        }
    }
    req.check().map_err(|e| anyhow::anyhow!(e))?;
    Ok(req)
}

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let ws = Workspace::open(&args.workspace)?;
    let req = request_from_args(&args, &ws)?;
    if let Some(out) = &args.out {
        let text = out.to_string_lossy();
        if out.is_dir() || text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
            bail!(
                "--out {text} is a folder; --out names the image file (e.g. {}/image.png), \
                 or leave it out to number the files in outputs/",
                text.trim_end_matches(['/', std::path::MAIN_SEPARATOR])
            );
        }
    }
    if args.out.is_some() && req.count > 1 {
        bail!(
            "--out names one file but count is {}; drop --out to number the files in outputs/",
            req.count
        );
    }
    // Before the model loads: a folder that cannot be made fails fast.
    if let Some(parent) = args.out.as_deref().and_then(std::path::Path::parent) {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("--out: cannot create {}", parent.display()))?;
        }
    }
    let bank = word_bank(&ws)?;
    let sd = ws.load_model()?;
    let hash = sd.model_hash();
    let out_dir = match &args.prompt_file {
        Some(p) => ws.outputs_for(p),
        None => ws.outputs_dir(),
    };
    // Each image is written (and reported) as soon as it is decoded.
    generate_each(
        &sd,
        &bank,
        &req,
        |_| StepControl::Continue,
        |g| {
            let dest = match &args.out {
                Some(p) => Destination::File(p),
                None => Destination::Numbered(&out_dir),
            };
            let path =
                save_sample(&sd, &hash, &req, &g, dest, &[]).map_err(GenerateError::Output)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "sample", "path": path, "seed": g.seed, "prompt": req.prompt, "negative": g.negative})
                );
            } else {
                println!("{} (seed {})", path.display(), g.seed);
            }
            Ok(())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
