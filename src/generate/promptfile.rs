//! Prompt files: `prompts/*.toml`, one generation request each. Unknown keys
//! are errors that name the key and its line (typos must not silently fall
//! back to defaults).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::pipeline::GenerateRequest;
use crate::sd::SamplerKind;

#[derive(Debug, thiserror::Error)]
pub enum PromptFileError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    prompt: String,
    #[serde(default)]
    negative: String,
    seed: Option<i64>,
    count: Option<usize>,
    steps: Option<usize>,
    cfg: Option<f64>,
    /// The sampler; `sampler` and `scheduler` are the same key (the command
    /// line's `--sampler` / `--scheduler` too).
    scheduler: Option<String>,
    sampler: Option<String>,
    width: Option<usize>,
    height: Option<usize>,
    init_image: Option<PathBuf>,
    strength: Option<f64>,
    mask: Option<PathBuf>,
    auto_negative: Option<bool>,
    /// DreamArtist++ adapter strengths.
    lora_pos: Option<f64>,
    lora_neg: Option<f64>,
}

/// Parses a prompt file; relative image paths are resolved against `base`
/// (the workspace).
pub fn parse_prompt_file(
    text: &str,
    path: &Path,
    base: &Path,
) -> Result<GenerateRequest, PromptFileError> {
    let invalid = |message: String| PromptFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let f: PromptFile =
        toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_string()))?;
    let d = GenerateRequest::default();
    let (key, name) = match (&f.sampler, &f.scheduler) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "both `sampler` and `scheduler` are given; they are the same setting, keep one"
                    .into(),
            ))
        }
        (Some(s), None) => ("sampler", Some(s)),
        (None, s) => ("scheduler", s.as_ref()),
    };
    let sampler = match name {
        Some(s) => SamplerKind::parse(s).ok_or_else(|| {
            invalid(format!(
                "unknown {key} `{s}` (known: {})",
                SamplerKind::known_names()
            ))
        })?,
        None => d.sampler,
    };
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    for (name, v) in [("width", f.width), ("height", f.height)] {
        if v == Some(0) {
            return Err(invalid(format!(
                "{name} = 0: leave it out for the model's native size"
            )));
        }
    }
    let req = GenerateRequest {
        prompt: f.prompt,
        negative: f.negative,
        seed: f.seed.unwrap_or(d.seed),
        count: f.count.unwrap_or(d.count),
        steps: f.steps.unwrap_or(d.steps),
        cfg: f.cfg.unwrap_or(d.cfg),
        sampler,
        width: f.width.unwrap_or(d.width),
        height: f.height.unwrap_or(d.height),
        init_image: f.init_image.map(resolve),
        strength: f.strength.unwrap_or(d.strength),
        mask: f.mask.map(resolve),
        auto_negative: f.auto_negative.unwrap_or(d.auto_negative),
        lora_pos: f.lora_pos.unwrap_or(d.lora_pos),
        lora_neg: f.lora_neg.unwrap_or(d.lora_neg),
    };
    req.check().map_err(invalid)?;
    Ok(req)
}

pub fn load_prompt_file(path: &Path, base: &Path) -> Result<GenerateRequest, PromptFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PromptFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_prompt_file(&text, path, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "prompt = \"a <cat>\"\nseed = 3\nstpes = 20\n";
        let err = parse_prompt_file(text, Path::new("p.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stpes") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn fields_and_defaults() {
        let text = "prompt = \"x\"\nscheduler = \"euler\"\nwidth = 64\ninit_image = \"in.png\"\nstrength = 0.5\n";
        let r = parse_prompt_file(text, Path::new("p.toml"), Path::new("/ws")).unwrap();
        assert_eq!(r.sampler, SamplerKind::Euler);
        assert_eq!(r.width, 64);
        assert_eq!(r.init_image, Some(PathBuf::from("/ws/in.png")));
        assert_eq!(r.seed, -1);
        assert!(parse_prompt_file(
            "prompt = \"x\"\nscheduler = \"plms\"",
            Path::new("p"),
            Path::new(".")
        )
        .is_err());
        assert!(parse_prompt_file("negative = \"x\"", Path::new("p"), Path::new(".")).is_err());
    }

    /// `sampler` and `scheduler` name one setting, as `--sampler` / `--scheduler` do.
    #[test]
    fn sampler_and_scheduler_are_one_key() {
        let parse = |t: &str| parse_prompt_file(t, Path::new("p.toml"), Path::new("."));
        let r = parse("prompt = \"x\"\nsampler = \"ddim\"\n").unwrap();
        assert_eq!(r.sampler, SamplerKind::Ddim);
        let r = parse("prompt = \"x\"\nscheduler = \"ddim\"\n").unwrap();
        assert_eq!(r.sampler, SamplerKind::Ddim);
        let err = parse("prompt = \"x\"\nsampler = \"plms\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown sampler `plms`") && err.contains("p.toml"),
            "{err}"
        );
        let err = parse("prompt = \"x\"\nsampler = \"ddim\"\nscheduler = \"euler\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep one"), "{err}");
    }
}
