//! `inspect`: says what a file is — an embedding (layout, word, vectors,
//! width, step) or a single-file checkpoint (family, sizes read off the
//! shapes, prediction type if known) — without loading a model.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::embeddings::{load_embedding_file, Embedding};
use super::{family, family_hint, safetensors_header, InteropError};
use crate::sd::config::{ClipTextConfig, PerBlock};
use crate::sd::single_file::{ConfigOrigin, SingleFile, SingleFileSpec};
use crate::torchfile::{self, TorchCheckpoint};

/// What a file turned out to be.
pub enum Report {
    Embedding(Box<Embedding>),
    Checkpoint(Box<CheckpointReport>),
    /// A LoRA network in the kohya layout.
    Lora(Box<super::lora::LoraReport>),
}

pub struct CheckpointReport {
    pub path: PathBuf,
    pub container: &'static str,
    /// Tensor count per stored dtype.
    pub dtypes: BTreeMap<String, usize>,
    pub file: SingleFile,
}

const CHECKPOINT_PREFIXES: [&str; 4] = [
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.",
    "conditioner.",
];

fn checkpoint(path: &Path, config: Option<&Path>) -> Result<Report, InteropError> {
    let file = SingleFile::open(&SingleFileSpec {
        config: config.map(Path::to_path_buf),
        ..SingleFileSpec::new(path)
    })?;
    let mut dtypes = BTreeMap::new();
    let container = if path_is_torch(path)? {
        let ckpt = TorchCheckpoint::open(path)?;
        for n in ckpt.names() {
            if let Some(d) = ckpt.dtype_name(&n) {
                *dtypes.entry(d.to_string()).or_insert(0) += 1;
            }
        }
        "torch pickle (.ckpt)"
    } else {
        for t in safetensors_header::read(path)?.tensors {
            *dtypes.entry(t.dtype).or_insert(0) += 1;
        }
        "safetensors"
    };
    Ok(Report::Checkpoint(Box::new(CheckpointReport {
        path: path.to_path_buf(),
        container,
        dtypes,
        file,
    })))
}

fn head(path: &Path) -> Result<Vec<u8>, InteropError> {
    use std::io::Read;
    let mut buf = vec![0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| InteropError::io(path, e))?;
    let mut n = 0;
    while n < buf.len() {
        match f
            .read(&mut buf[n..])
            .map_err(|e| InteropError::io(path, e))?
        {
            0 => break,
            r => n += r,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

fn path_is_torch(path: &Path) -> Result<bool, InteropError> {
    Ok(torchfile::sniff(&head(path)?).is_some())
}

/// Works out what `path` is; `config` is a diffusers folder describing a checkpoint.
pub fn inspect(path: &Path, config: Option<&Path>) -> Result<Report, InteropError> {
    let bytes = head(path)?;
    if safetensors_header::sniff(&bytes) {
        let header = safetensors_header::read(path)?;
        let is_model = header
            .tensors
            .iter()
            .any(|t| CHECKPOINT_PREFIXES.iter().any(|p| t.name.starts_with(p)));
        if is_model {
            return checkpoint(path, config);
        }
        if super::lora::is_lora(&header) {
            return Ok(Report::Lora(Box::new(super::lora::inspect_lora(
                path, &header,
            ))));
        }
        return Ok(Report::Embedding(Box::new(load_embedding_file(path)?)));
    }
    if torchfile::sniff(&bytes).is_some() {
        let ckpt_ext = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ckpt"));
        if ckpt_ext {
            return checkpoint(path, config);
        }
        return match load_embedding_file(path) {
            Ok(e) => Ok(Report::Embedding(Box::new(e))),
            // A whole model saved as .pt/.bin: report it as one if it reads as one.
            Err(e) => checkpoint(path, config).map_err(|_| e),
        };
    }
    // Let the embedding reader give its "not an embedding" message.
    load_embedding_file(path).map(|e| Report::Embedding(Box::new(e)))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Embedding(e) => write_embedding(f, e),
            Report::Checkpoint(c) => write_checkpoint(f, c),
            Report::Lora(l) => write!(f, "{l}"),
        }
    }
}

fn write_embedding(f: &mut fmt::Formatter<'_>, e: &Embedding) -> fmt::Result {
    writeln!(f, "{}: embedding, {}", e.source.display(), e.layout())?;
    writeln!(
        f,
        "  container:  {} (stored as {})",
        e.container, e.stored_dtype
    )?;
    write!(f, "  word:       <{}>", e.name)?;
    match &e.stored_name {
        Some(n) if *n != e.name => writeln!(f, " (the file calls it \"{n}\")")?,
        _ => writeln!(f)?,
    }
    match e.widths.as_slice() {
        [l, g] => writeln!(
            f,
            "  vectors:    {} × {} ({}: clip_l {l} + clip_g {g})",
            e.count(),
            e.width(),
            family(&e.widths).unwrap_or("two text encoders")
        )?,
        w => writeln!(
            f,
            "  vectors:    {} × {}{}",
            e.count(),
            e.width(),
            family_hint(w)
        )?,
    }
    if let Some(s) = e.step {
        writeln!(f, "  step:       {s}")?;
    }
    match e.non_finite() {
        0 => {}
        n => writeln!(
            f,
            "  WARNING:    {n} of {} values are NaN or infinite: import and convert refuse this file",
            e.vectors.elem_count()
        )?,
    }
    if let Some(c) = &e.checkpoint_name {
        match &e.checkpoint_hash {
            Some(h) => writeln!(f, "  trained on: {c} [{h}]")?,
            None => writeln!(f, "  trained on: {c}")?,
        }
    }
    Ok(())
}

fn per_block(p: &PerBlock<usize>) -> String {
    match p {
        PerBlock::One(v) => v.to_string(),
        PerBlock::Many(v) => format!("{v:?}"),
    }
}

fn yes_no(v: &[String], yes: &str) -> String {
    v.iter()
        .map(|t| if t.starts_with(yes) { "yes" } else { "no" })
        .collect::<Vec<_>>()
        .join(", ")
}

fn text_sizes(t: &ClipTextConfig) -> String {
    format!(
        "width {}, {} layers, {} heads, MLP {}, vocabulary {}, {} positions, {}",
        t.hidden_size,
        t.num_hidden_layers,
        t.num_attention_heads,
        t.intermediate_size,
        t.vocab_size,
        t.max_position_embeddings,
        t.hidden_act
    )
}

fn write_checkpoint(f: &mut fmt::Formatter<'_>, c: &CheckpointReport) -> fmt::Result {
    let sf = &c.file;
    let cfg = &sf.configs;
    writeln!(
        f,
        "{}: Stable Diffusion checkpoint (original LDM single-file layout), {}",
        c.path.display(),
        c.container
    )?;
    writeln!(f, "  family:       {}", sf.layout.family.describe())?;
    let total: usize = c.dtypes.values().sum();
    let dtypes: Vec<String> = c.dtypes.iter().map(|(d, n)| format!("{d} {n}")).collect();
    writeln!(f, "  tensors:      {total} ({})", dtypes.join(", "))?;
    writeln!(f, "  text encoder: {}", text_sizes(&cfg.text))?;
    if let Some(t2) = &cfg.text_2 {
        // SDXL: the second encoder's pooled projection conditions the UNet too.
        let proj = t2
            .projection_dim
            .map(|p| format!(", pooled projection {p}"))
            .unwrap_or_default();
        writeln!(f, "  text encoder 2: {}{proj}", text_sizes(t2))?;
    }
    let u = &cfg.unet;
    writeln!(
        f,
        "  UNet:         channels {:?}, layers per block {}, {} in / {} out channels",
        u.block_out_channels,
        per_block(&u.layers_per_block),
        u.in_channels,
        u.out_channels
    )?;
    writeln!(
        f,
        "                attention in down levels: {}; transformer depth {}; cross-attention width {}; {} projections; heads {}",
        yes_no(&u.down_block_types, "CrossAttn"),
        per_block(&u.transformer_layers_per_block),
        per_block(&u.cross_attention_dim),
        if u.use_linear_projection { "linear" } else { "1x1 conv" },
        per_block(u.num_attention_heads.as_ref().unwrap_or(&u.attention_head_dim))
    )?;
    if let (Some(kind), Some(time_dim), Some(input)) = (
        &u.addition_embed_type,
        u.addition_time_embed_dim,
        u.projection_class_embeddings_input_dim,
    ) {
        let temb = u
            .time_embedding_dim
            .or_else(|| u.block_out_channels.first().map(|c| 4 * c))
            .unwrap_or(0);
        writeln!(
            f,
            "                added embedding ({kind}): pooled text {} + 6 time ids × {time_dim} = {input} → {temb}",
            input.saturating_sub(6 * time_dim)
        )?;
    }
    let v = &cfg.vae;
    writeln!(
        f,
        "  VAE:          channels {:?}, {} layer(s) per block, {} latent channels, scaling factor {}",
        v.block_out_channels, v.layers_per_block, v.latent_channels, v.scaling_factor
    )?;
    writeln!(
        f,
        "  prediction:   {} ({})",
        cfg.prediction.as_str(),
        cfg.prediction_source
    )?;
    match &cfg.origin {
        ConfigOrigin::Folder(dir) => writeln!(f, "  configs:      from {}", dir.display())?,
        ConfigOrigin::Inferred(i) => {
            writeln!(
                f,
                "  configs:      read off the tensor shapes; not in the shapes, assumed (give config=<diffusers folder> to be exact):"
            )?;
            for a in &i.assumed {
                writeln!(f, "                - {a}")?;
            }
        }
    }
    Ok(())
}
