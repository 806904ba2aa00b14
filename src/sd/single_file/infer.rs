//! Configs of a single-file checkpoint read off its tensor shapes, for files
//! that come without a diffusers config folder.
//!
//! Determined by the shapes: every channel count, the number of levels, layers
//! per block, which levels have attention, transformer depth per level, the
//! cross-attention width, conv vs linear projections, each text encoder's
//! width, depth, MLP size, vocabulary, positions and (SDXL's second) projection
//! width, SDXL's added-embedding sizes, the VAE's channels, depth and latent
//! channels. Not in the shapes, so taken from the SD family's convention:
//! attention heads (SD 1.x: 8 per UNet block; SD 2.x and SDXL: 64-wide heads;
//! text encoders: 64-wide heads), activation (quick_gelu for CLIP, gelu for
//! OpenCLIP), group-norm groups (32), the VAE scaling factor (0.18215; SDXL
//! 0.13025), SDXL's native image size (1024) and `upcast_attention` (SD 2.x).
//! All of those are listed in [`InferredConfigs::assumed`]; where a convention
//! does not even fit the shapes (tiny test models: widths that are no multiple
//! of 64), the entry says it is a guess. Give `config=<folder>` to be exact.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use super::{Family, Layout};
use crate::sd::error::LoadError;
use crate::sd::weights::TensorSource;

/// Configs in diffusers' `config.json` form, plus what had to be assumed.
#[derive(Debug, Clone)]
pub struct InferredConfigs {
    pub text: Value,
    /// SDXL's second text encoder (OpenCLIP-G, with its projection).
    pub text_2: Option<Value>,
    pub unet: Value,
    pub vae: Value,
    /// Settings the shapes do not determine, with the value assumed for each.
    pub assumed: Vec<String>,
}

struct Shapes<'a> {
    src: &'a dyn TensorSource,
    names: Vec<String>,
    path: &'a Path,
}

impl Shapes<'_> {
    fn get(&self, name: &str, what: &str) -> Result<Vec<usize>, LoadError> {
        self.src
            .shape(name)
            .ok_or_else(|| LoadError::UnsupportedLayout {
                path: self.path.to_path_buf(),
                message: format!(
                    "cannot infer the {what} from the tensor shapes: `{name}` is missing; \
                     give the configs of a matching diffusers folder (config=<DIR>)"
                ),
            })
    }

    fn dim(&self, name: &str, axis: usize, what: &str) -> Result<usize, LoadError> {
        let s = self.get(name, what)?;
        s.get(axis)
            .copied()
            .ok_or_else(|| LoadError::UnsupportedLayout {
                path: self.path.to_path_buf(),
                message: format!("`{name}` has shape {s:?}, too few dimensions for the {what}"),
            })
    }

    fn has(&self, name: &str) -> bool {
        self.src.shape(name).is_some()
    }

    /// The distinct `i` of names `prefix{i}.…`.
    fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect()
    }

    fn bad(&self, message: String) -> LoadError {
        LoadError::UnsupportedLayout {
            path: self.path.to_path_buf(),
            message,
        }
    }
}

/// One value for all levels when they agree, else a per-level list.
fn per_level(v: &[usize]) -> Value {
    if v.windows(2).all(|w| w[0] == w[1]) {
        json!(v.first().copied().unwrap_or(1))
    } else {
        json!(v)
    }
}

/// Heads for a width under the 64-wide-head convention (CLIP text encoders, SD 2.x UNets).
fn heads_64(width: usize) -> Option<usize> {
    (width >= 64 && width % 64 == 0).then_some(width / 64)
}

/// Fallback head count when the convention does not divide the width.
fn fallback_heads(width: usize) -> usize {
    if width % 8 == 0 {
        width / 8
    } else {
        1
    }
}

pub fn infer(src: &dyn TensorSource, layout: &Layout) -> Result<InferredConfigs, LoadError> {
    let s = Shapes {
        src,
        names: src.names(),
        path: src.origin(),
    };
    let mut assumed = Vec::new();
    let first = match layout.family {
        Family::Sd1 | Family::Sdxl => TextKind::Clip,
        Family::Sd2 => TextKind::OpenClipPenultimate,
    };
    let text = infer_text(&s, first, &layout.text_prefix, "text encoder", &mut assumed)?;
    let text_2 = match &layout.text2_prefix {
        Some(p) => Some(infer_text(
            &s,
            TextKind::OpenClipProjected,
            p,
            "text encoder 2",
            &mut assumed,
        )?),
        None => None,
    };
    let pooled = text_2
        .as_ref()
        .and_then(|t| t["projection_dim"].as_u64())
        .map(|p| p as usize);
    let unet = infer_unet(&s, layout.family, pooled, &mut assumed)?;
    let vae = infer_vae(&s, layout.family, &mut assumed)?;
    Ok(InferredConfigs {
        text,
        text_2,
        unet,
        vae,
        assumed,
    })
}

/// How a text encoder is stored and which of its layers the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    /// HF CLIP names (SD 1.x; SDXL's first encoder): every layer is part of the model.
    Clip,
    /// OpenCLIP names, SD 2.x: the file's last block is not run (penultimate layer).
    OpenClipPenultimate,
    /// OpenCLIP names, SDXL's second encoder: every block is kept (the UNet
    /// reads `hidden_states[-2]`, the pooled output needs the last block) and
    /// `text_projection` becomes `projection_dim`.
    OpenClipProjected,
}

fn infer_text(
    s: &Shapes,
    kind: TextKind,
    p: &str,
    label: &str,
    assumed: &mut Vec<String>,
) -> Result<Value, LoadError> {
    let what = format!("{label} config");
    let what = what.as_str();
    let (token, pos, layers, fc1, act) = match kind {
        TextKind::Clip => (
            format!("{p}embeddings.token_embedding.weight"),
            format!("{p}embeddings.position_embedding.weight"),
            s.indices(&format!("{p}encoder.layers.")).len(),
            format!("{p}encoder.layers.0.mlp.fc1.weight"),
            "quick_gelu",
        ),
        TextKind::OpenClipPenultimate | TextKind::OpenClipProjected => {
            let blocks = s.indices(&format!("{p}transformer.resblocks.")).len();
            if blocks < 2 {
                let why = if kind == TextKind::OpenClipPenultimate {
                    "SD 2.x uses all but the last"
                } else {
                    "SDXL's UNet reads the penultimate one"
                };
                return Err(s.bad(format!(
                    "the OpenCLIP text encoder (`{p}transformer.resblocks.*`) has {blocks} block(s); \
                     {why}, so at least 2 are needed"
                )));
            }
            // SD 2.x runs the penultimate layer, so the file's last block is not
            // part of diffusers' encoder; SDXL's keeps every block (its pooled
            // output needs the last) and picks the penultimate state at run time.
            let layers = if kind == TextKind::OpenClipPenultimate {
                blocks - 1
            } else {
                blocks
            };
            (
                format!("{p}token_embedding.weight"),
                format!("{p}positional_embedding"),
                layers,
                format!("{p}transformer.resblocks.0.mlp.c_fc.weight"),
                "gelu",
            )
        }
    };
    let vocab = s.dim(&token, 0, what)?;
    let d = s.dim(&token, 1, what)?;
    let positions = s.dim(&pos, 0, what)?;
    let inter = s.dim(&fc1, 0, what)?;
    let heads = match heads_64(d) {
        Some(h) => {
            assumed.push(format!("{label} num_attention_heads ({h}: 64-wide heads)"));
            h
        }
        None => {
            let h = fallback_heads(d);
            assumed.push(format!(
                "{label} num_attention_heads ({h}: a guess, {d} is no multiple of 64)"
            ));
            h
        }
    };
    let mut cfg = json!({
        "hidden_size": d,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "max_position_embeddings": positions,
        "hidden_act": act,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-5,
    });
    if kind == TextKind::OpenClipProjected {
        let name = format!("{p}text_projection");
        let shape = s.get(&name, what)?;
        // Stored as OpenCLIP multiplies, `x @ P`: `[width, projection]`.
        match shape.as_slice() {
            [rows, proj] if *rows == d => cfg["projection_dim"] = json!(proj),
            _ => {
                return Err(s.bad(format!(
                    "`{name}` has shape {shape:?}; OpenCLIP stores it as [width, projection] with width {d}"
                )))
            }
        }
    }
    Ok(cfg)
}

fn infer_unet(
    s: &Shapes,
    family: Family,
    pooled: Option<usize>,
    assumed: &mut Vec<String>,
) -> Result<Value, LoadError> {
    let p = "model.diffusion_model.";
    let what = "UNet config";
    let has_label_emb = s
        .names
        .iter()
        .any(|n| n.starts_with(&format!("{p}label_emb.")));
    if has_label_emb && family != Family::Sdxl {
        return Err(s.bad(format!(
            "the UNet has a class/label embedding (`{p}label_emb.*`) but the text encoder is {}: \
             an upscaler or unCLIP model, which is not supported",
            family.short()
        )));
    }
    let conv_in = s.get(&format!("{p}input_blocks.0.0.weight"), what)?;
    let [c0, in_ch, k_in, _] = conv_in.as_slice() else {
        return Err(s.bad(format!(
            "`{p}input_blocks.0.0.weight` has shape {conv_in:?}, expected a 3x3 conv"
        )));
    };
    let inputs = s.indices(&format!("{p}input_blocks."));
    let max_k = inputs.iter().max().copied().unwrap_or(0);
    let ops: Vec<usize> = inputs
        .iter()
        .copied()
        .filter(|k| s.has(&format!("{p}input_blocks.{k}.0.op.weight")))
        .collect();
    let n = ops.len() + 1;
    let mut starts = Vec::with_capacity(n);
    let mut layers = Vec::with_capacity(n);
    let mut start = 1;
    let ends = ops.iter().copied().chain(std::iter::once(max_k + 1));
    for (b, end) in ends.enumerate() {
        if end <= start {
            return Err(s.bad(format!(
                "UNet level {b} has no resnets (input_blocks {start}..{end})"
            )));
        }
        starts.push(start);
        layers.push(end - start);
        start = end + 1;
    }
    let mut boc = Vec::with_capacity(n);
    let mut attn = Vec::with_capacity(n);
    let mut depth = Vec::with_capacity(n);
    for &k in &starts {
        boc.push(s.dim(
            &format!("{p}input_blocks.{k}.0.in_layers.2.weight"),
            0,
            what,
        )?);
        let has_attn = s.has(&format!("{p}input_blocks.{k}.1.proj_in.weight"));
        attn.push(has_attn);
        let t = s
            .indices(&format!("{p}input_blocks.{k}.1.transformer_blocks."))
            .len();
        depth.push(if has_attn { t } else { 1 });
    }
    let total_up: usize = layers.iter().map(|l| l + 1).sum();
    let outputs = s.indices(&format!("{p}output_blocks."));
    if outputs.len() != total_up {
        return Err(s.bad(format!(
            "the UNet has {} output blocks but its input blocks imply {total_up}",
            outputs.len()
        )));
    }
    let mut up_attn = Vec::with_capacity(n);
    let mut k = 0;
    for i in 0..n {
        up_attn.push(s.has(&format!("{p}output_blocks.{k}.1.proj_in.weight")));
        k += layers[n - 1 - i] + 1;
    }
    let first_attn = starts
        .iter()
        .zip(&attn)
        .find(|(_, a)| **a)
        .map(|(k, _)| *k)
        .ok_or_else(|| {
            s.bad("the UNet has no attention blocks; not a text-conditioned SD UNet".into())
        })?;
    let t0 = format!("{p}input_blocks.{first_attn}.1.");
    let cross = s.dim(
        &format!("{t0}transformer_blocks.0.attn2.to_k.weight"),
        1,
        what,
    )?;
    let linear = s.get(&format!("{t0}proj_in.weight"), what)?.len() == 2;
    if !s.has(&format!("{p}middle_block.1.proj_in.weight")) {
        return Err(s.bad(
            "the UNet's middle block has no attention (only UNetMidBlock2DCrossAttn is supported)"
                .into(),
        ));
    }
    // diffusers gives the middle block the deepest level's transformer depth.
    let mid_depth = s
        .indices(&format!("{p}middle_block.1.transformer_blocks."))
        .len();
    let deepest = depth.last().copied().unwrap_or(1);
    if mid_depth != deepest {
        return Err(s.bad(format!(
            "the UNet's middle block has {mid_depth} transformer block(s) but its deepest level {deepest}; \
             diffusers' UNet ties them, so this UNet cannot be described by a config"
        )));
    }
    let temb = s.dim(&format!("{p}time_embed.0.weight"), 0, what)?;
    let out = s.get(&format!("{p}out.2.weight"), what)?;
    let (out_ch, k_out) = (out[0], out.get(2).copied().unwrap_or(3));
    let convention: Option<Vec<usize>> = match family {
        Family::Sd1 => boc.iter().map(|&c| (c % 8 == 0).then_some(8)).collect(),
        Family::Sd2 | Family::Sdxl => boc.iter().map(|&c| heads_64(c)).collect(),
    };
    let added = if family == Family::Sdxl {
        Some(infer_added_embedding(s, temb, pooled)?)
    } else {
        None
    };
    let heads = match convention {
        Some(h) => {
            let rule = match family {
                Family::Sd1 => "8 heads per block, SD 1.x",
                Family::Sd2 => "64-wide heads, SD 2.x",
                Family::Sdxl => "64-wide heads, SDXL",
            };
            assumed.push(format!("UNet attention heads ({h:?}: {rule})"));
            h
        }
        None => {
            let h: Vec<usize> = boc
                .iter()
                .map(|&c| if c % 8 == 0 { 8 } else { 1 })
                .collect();
            assumed.push(format!(
                "UNet attention heads ({h:?}: a guess, the channels {boc:?} do not fit the family's head width)"
            ));
            h
        }
    };
    assumed.push("UNet norm_num_groups (32)".into());
    let upcast = family == Family::Sd2;
    if upcast {
        assumed.push("UNet upcast_attention (true)".into());
    }
    let mut cfg = json!({
        "in_channels": in_ch,
        "out_channels": out_ch,
        "block_out_channels": boc,
        "down_block_types": attn.iter().map(|a| if *a { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect::<Vec<_>>(),
        "up_block_types": up_attn.iter().map(|a| if *a { "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect::<Vec<_>>(),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": per_level(&layers),
        "attention_head_dim": per_level(&heads),
        "cross_attention_dim": cross,
        "transformer_layers_per_block": per_level(&depth),
        "use_linear_projection": linear,
        "upcast_attention": upcast,
        "norm_num_groups": 32,
        "conv_in_kernel": k_in,
        "conv_out_kernel": k_out,
    });
    if temb != 4 * c0 {
        cfg["time_embedding_dim"] = json!(temb);
    }
    if let Some((time_dim, input)) = added {
        cfg["addition_embed_type"] = json!("text_time");
        cfg["addition_time_embed_dim"] = json!(time_dim);
        cfg["projection_class_embeddings_input_dim"] = json!(input);
    }
    Ok(cfg)
}

/// SDXL's `text_time` embedding (`label_emb.0.0` = `add_embedding.linear_1`):
/// its input is the pooled text (the projection's width) followed by six
/// sinusoidally embedded time ids, so the time-id width is what is left over,
/// divided by six. Returns `(addition_time_embed_dim, projection_class_embeddings_input_dim)`.
fn infer_added_embedding(
    s: &Shapes,
    temb: usize,
    pooled: Option<usize>,
) -> Result<(usize, usize), LoadError> {
    let name = "model.diffusion_model.label_emb.0.0.weight";
    let shape = s.get(name, "SDXL added-embedding (text_time) config")?;
    let Some(pooled) = pooled else {
        return Err(s.bad(format!(
            "`{name}` needs the pooled text width, and the file has no second text encoder projection"
        )));
    };
    let [rows, input] = shape.as_slice() else {
        return Err(s.bad(format!(
            "`{name}` has shape {shape:?}, expected a linear weight [{temb}, pooled {pooled} + 6 × time-id width]"
        )));
    };
    if *rows != temb || *input <= pooled || (input - pooled) % 6 != 0 {
        return Err(s.bad(format!(
            "`{name}` has shape {shape:?}, expected [{temb}, {pooled} + 6 × time-id width]: the UNet's \
             time embedding is {temb} wide and the second text encoder projects to {pooled}; the file is \
             damaged or its parts come from different models"
        )));
    }
    Ok(((input - pooled) / 6, *input))
}

fn infer_vae(s: &Shapes, family: Family, assumed: &mut Vec<String>) -> Result<Value, LoadError> {
    let p = "first_stage_model.";
    let what = "VAE config";
    let levels = s.indices(&format!("{p}encoder.down.")).len();
    if levels == 0 {
        return Err(s.bad(format!(
            "no VAE encoder levels (`{p}encoder.down.*`) in the file"
        )));
    }
    let boc = (0..levels)
        .map(|b| {
            s.dim(
                &format!("{p}encoder.down.{b}.block.0.conv1.weight"),
                0,
                what,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let layers = s.indices(&format!("{p}encoder.down.0.block.")).len();
    let dec_layers = s.indices(&format!("{p}decoder.up.0.block.")).len();
    if dec_layers != layers + 1 {
        return Err(s.bad(format!(
            "the VAE decoder has {dec_layers} resnets per level but the encoder's {layers} imply {}",
            layers + 1
        )));
    }
    // SDXL's VAE was retrained with another latent scale.
    let scaling = if family == Family::Sdxl {
        0.13025
    } else {
        0.18215
    };
    assumed.push("VAE norm_num_groups (32)".into());
    assumed.push(format!("VAE scaling_factor ({scaling})"));
    let mut cfg = json!({
        "in_channels": s.dim(&format!("{p}encoder.conv_in.weight"), 1, what)?,
        "out_channels": s.dim(&format!("{p}decoder.conv_out.weight"), 0, what)?,
        "block_out_channels": boc,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "layers_per_block": layers,
        "latent_channels": s.dim(&format!("{p}decoder.conv_in.weight"), 1, what)?,
        "norm_num_groups": 32,
        "scaling_factor": scaling,
        "use_quant_conv": s.has(&format!("{p}quant_conv.weight")),
        "use_post_quant_conv": s.has(&format!("{p}post_quant_conv.weight")),
        "mid_block_add_attention": s.has(&format!("{p}encoder.mid.attn_1.q.weight")),
    });
    // The native image size (generation's default, training's buckets): SD
    // 1.x/2.x files do not say 512 from 768, so they keep the 512 default;
    // SDXL models are all 1024.
    if family == Family::Sdxl {
        cfg["sample_size"] = json!(1024);
        assumed.push("VAE sample_size (1024: SDXL's native image size)".into());
    }
    Ok(cfg)
}
