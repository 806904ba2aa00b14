//! Diffusers tensor names → original LDM single-file names.
//!
//! The model code asks for diffusers names (`down_blocks.1.resnets.0.conv1.weight`);
//! [`MappedSource`] answers from a checkpoint in the original layout
//! (`model.diffusion_model.input_blocks.4.0.in_layers.2.weight`). Translating in
//! this direction means a missing or mis-shaped tensor is reported under the
//! name the user's file actually uses. Four reshapes happen on the way:
//! OpenCLIP's stacked `in_proj` is split into q/k/v, its `text_projection`
//! (stored `x @ P`, `[d, proj]`) is transposed into a linear weight, the VAE
//! attention's 1x1 convolutions become linear weights, and the decoder's levels
//! are renumbered.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::sd::error::LoadError;
use crate::sd::weights::TensorSource;

/// Where a diffusers tensor comes from in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Plain(String),
    /// Rows `[index·n/parts, (index+1)·n/parts)` of a stacked tensor.
    Part {
        name: String,
        index: usize,
        parts: usize,
    },
    /// A `[C, C, 1, 1]` convolution weight read as a `[C, C]` linear weight.
    Squeeze(String),
    /// A `[d, proj]` matrix read as its `[proj, d]` transpose (OpenCLIP's
    /// `text_projection`, which multiplies from the right).
    Transpose(String),
}

impl Origin {
    pub fn name(&self) -> &str {
        match self {
            Origin::Plain(n) | Origin::Squeeze(n) | Origin::Transpose(n) => n,
            Origin::Part { name, .. } => name,
        }
    }
}

/// The text encoder's layout in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextLayout {
    /// HF CLIP names under a prefix (SD 1.x: `cond_stage_model.transformer.text_model.`).
    Clip { prefix: String },
    /// OpenCLIP names (SD 2.x: `cond_stage_model.model.`; SDXL's second
    /// encoder: `conditioner.embedders.1.model.`).
    OpenClip { prefix: String },
}

/// The UNet's block arithmetic, from the per-level layer counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetLayout {
    pub prefix: String,
    /// `input_blocks` index of each down level's first resnet.
    down_start: Vec<usize>,
    /// Resnets per down level (`layers_per_block`).
    down_layers: Vec<usize>,
    /// `output_blocks` index of each up level's first resnet.
    up_start: Vec<usize>,
    /// Resnets per up level (`layers_per_block + 1` of the mirrored down level).
    up_count: Vec<usize>,
    /// Whether each up level has attentions (its upsampler then sits at `.2`).
    up_attention: Vec<bool>,
}

impl UnetLayout {
    /// `layers[b]` resnets per down level `b`; `up_attention[i]` per up level `i` (diffusers order).
    pub fn new(prefix: &str, layers: &[usize], up_attention: &[bool]) -> Self {
        let n = layers.len();
        let mut down_start = Vec::with_capacity(n);
        let mut k = 1;
        for &l in layers {
            down_start.push(k);
            k += l + 1;
        }
        let up_count: Vec<usize> = (0..n).map(|i| layers[n - 1 - i] + 1).collect();
        let mut up_start = Vec::with_capacity(n);
        let mut k = 0;
        for &c in &up_count {
            up_start.push(k);
            k += c;
        }
        Self {
            prefix: prefix.to_string(),
            down_start,
            down_layers: layers.to_vec(),
            up_start,
            up_count,
            up_attention: up_attention.to_vec(),
        }
    }
}

/// A component's translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Text(TextLayout),
    Unet(UnetLayout),
    Vae { prefix: String, levels: usize },
}

fn idx(s: &str) -> Option<usize> {
    s.parse().ok()
}

fn join(parts: &[&str]) -> String {
    parts.join(".")
}

/// ResnetBlock2D names of the UNet → LDM ResBlock names.
fn unet_resnet(rest: &[&str]) -> Option<String> {
    let (first, tail) = rest.split_first()?;
    let mapped = match *first {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "time_emb_proj" => "emb_layers.1",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "conv_shortcut" => "skip_connection",
        _ => return None,
    };
    Some(if tail.is_empty() {
        mapped.to_string()
    } else {
        format!("{mapped}.{}", join(tail))
    })
}

/// ResnetBlock2D names of the VAE → LDM names (only the shortcut differs).
fn vae_resnet(rest: &[&str]) -> Option<String> {
    let (first, tail) = rest.split_first()?;
    let mapped = match *first {
        "conv_shortcut" => "nin_shortcut",
        n @ ("norm1" | "conv1" | "norm2" | "conv2") => n,
        _ => return None,
    };
    Some(format!("{mapped}.{}", join(tail)))
}

impl Component {
    /// The checkpoint tensor behind a diffusers name, if the layout has one.
    pub fn original(&self, name: &str) -> Option<Origin> {
        let s: Vec<&str> = name.split('.').collect();
        match self {
            Component::Text(t) => text(t, &s),
            Component::Unet(u) => unet(u, &s).map(|n| Origin::Plain(format!("{}{n}", u.prefix))),
            Component::Vae { prefix, levels } => vae(*levels, &s).map(|o| match o {
                Origin::Plain(n) => Origin::Plain(format!("{prefix}{n}")),
                Origin::Squeeze(n) => Origin::Squeeze(format!("{prefix}{n}")),
                part => part,
            }),
        }
    }

    /// The prefix all of this component's checkpoint names share.
    pub fn prefix(&self) -> &str {
        match self {
            Component::Text(TextLayout::Clip { prefix })
            | Component::Text(TextLayout::OpenClip { prefix })
            | Component::Vae { prefix, .. } => prefix,
            Component::Unet(u) => &u.prefix,
        }
    }
}

fn text(layout: &TextLayout, s: &[&str]) -> Option<Origin> {
    if let (TextLayout::OpenClip { prefix }, ["text_projection", "weight"]) = (layout, s) {
        return Some(Origin::Transpose(format!("{prefix}text_projection")));
    }
    let ["text_model", rest @ ..] = s else {
        return None;
    };
    match layout {
        TextLayout::Clip { prefix } => Some(Origin::Plain(format!("{prefix}{}", join(rest)))),
        TextLayout::OpenClip { prefix } => {
            let p = |n: String| Some(Origin::Plain(format!("{prefix}{n}")));
            match rest {
                ["embeddings", "token_embedding", "weight"] => p("token_embedding.weight".into()),
                ["embeddings", "position_embedding", "weight"] => p("positional_embedding".into()),
                ["final_layer_norm", tail @ ..] => p(format!("ln_final.{}", join(tail))),
                ["encoder", "layers", i, tail @ ..] => {
                    let i = idx(i)?;
                    let block = format!("transformer.resblocks.{i}");
                    match tail {
                        ["layer_norm1", t @ ..] => p(format!("{block}.ln_1.{}", join(t))),
                        ["layer_norm2", t @ ..] => p(format!("{block}.ln_2.{}", join(t))),
                        ["self_attn", proj @ ("q_proj" | "k_proj" | "v_proj"), kind @ ("weight" | "bias")] =>
                        {
                            let index = match *proj {
                                "q_proj" => 0,
                                "k_proj" => 1,
                                _ => 2,
                            };
                            Some(Origin::Part {
                                name: format!("{prefix}{block}.attn.in_proj_{kind}"),
                                index,
                                parts: 3,
                            })
                        }
                        ["self_attn", "out_proj", t @ ..] => {
                            p(format!("{block}.attn.out_proj.{}", join(t)))
                        }
                        ["mlp", "fc1", t @ ..] => p(format!("{block}.mlp.c_fc.{}", join(t))),
                        ["mlp", "fc2", t @ ..] => p(format!("{block}.mlp.c_proj.{}", join(t))),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
    }
}

fn unet(u: &UnetLayout, s: &[&str]) -> Option<String> {
    let n = u.down_layers.len();
    Some(match s {
        ["time_embedding", "linear_1", t @ ..] => format!("time_embed.0.{}", join(t)),
        ["time_embedding", "linear_2", t @ ..] => format!("time_embed.2.{}", join(t)),
        // SDXL's `text_time` embedding: ldm's `label_emb` Sequential(Linear, SiLU, Linear).
        ["add_embedding", "linear_1", t @ ..] => format!("label_emb.0.0.{}", join(t)),
        ["add_embedding", "linear_2", t @ ..] => format!("label_emb.0.2.{}", join(t)),
        ["conv_in", t @ ..] => format!("input_blocks.0.0.{}", join(t)),
        ["conv_norm_out", t @ ..] => format!("out.0.{}", join(t)),
        ["conv_out", t @ ..] => format!("out.2.{}", join(t)),
        ["down_blocks", b, kind, j, t @ ..] => {
            let (b, j) = (idx(b)?, idx(j)?);
            if b >= n {
                return None;
            }
            let start = u.down_start[b];
            match *kind {
                "resnets" if j < u.down_layers[b] => {
                    format!("input_blocks.{}.0.{}", start + j, unet_resnet(t)?)
                }
                "attentions" if j < u.down_layers[b] => {
                    format!("input_blocks.{}.1.{}", start + j, join(t))
                }
                "downsamplers" if j == 0 && b + 1 < n => match t {
                    ["conv", t @ ..] => {
                        format!("input_blocks.{}.0.op.{}", start + u.down_layers[b], join(t))
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
        ["mid_block", kind, j, t @ ..] => match (*kind, *j) {
            ("resnets", "0") => format!("middle_block.0.{}", unet_resnet(t)?),
            ("attentions", "0") => format!("middle_block.1.{}", join(t)),
            ("resnets", "1") => format!("middle_block.2.{}", unet_resnet(t)?),
            _ => return None,
        },
        ["up_blocks", i, kind, j, t @ ..] => {
            let (i, j) = (idx(i)?, idx(j)?);
            if i >= n {
                return None;
            }
            let start = u.up_start[i];
            let count = u.up_count[i];
            match *kind {
                "resnets" if j < count => {
                    format!("output_blocks.{}.0.{}", start + j, unet_resnet(t)?)
                }
                "attentions" if j < count => format!("output_blocks.{}.1.{}", start + j, join(t)),
                "upsamplers" if j == 0 && i + 1 < n => match t {
                    ["conv", t @ ..] => format!(
                        "output_blocks.{}.{}.conv.{}",
                        start + count - 1,
                        if u.up_attention[i] { 2 } else { 1 },
                        join(t)
                    ),
                    _ => return None,
                },
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn vae(levels: usize, s: &[&str]) -> Option<Origin> {
    let plain = |n: String| Some(Origin::Plain(n));
    match s {
        [q @ ("quant_conv" | "post_quant_conv"), t @ ..] => plain(format!("{q}.{}", join(t))),
        [side @ ("encoder" | "decoder"), rest @ ..] => match rest {
            [c @ ("conv_in" | "conv_out"), t @ ..] => plain(format!("{side}.{c}.{}", join(t))),
            ["conv_norm_out", t @ ..] => plain(format!("{side}.norm_out.{}", join(t))),
            ["mid_block", "resnets", j @ ("0" | "1"), t @ ..] => plain(format!(
                "{side}.mid.block_{}.{}",
                if *j == "0" { 1 } else { 2 },
                vae_resnet(t)?
            )),
            ["mid_block", "attentions", "0", "group_norm", t @ ..] => {
                plain(format!("{side}.mid.attn_1.norm.{}", join(t)))
            }
            ["mid_block", "attentions", "0", proj @ .., kind @ ("weight" | "bias")] => {
                let ldm = match proj {
                    ["to_q"] => "q",
                    ["to_k"] => "k",
                    ["to_v"] => "v",
                    ["to_out", "0"] => "proj_out",
                    _ => return None,
                };
                let name = format!("{side}.mid.attn_1.{ldm}.{kind}");
                Some(if *kind == "weight" {
                    Origin::Squeeze(name)
                } else {
                    Origin::Plain(name)
                })
            }
            ["down_blocks", b, kind, j, t @ ..] if *side == "encoder" => {
                let (b, j) = (idx(b)?, idx(j)?);
                match (*kind, t) {
                    ("resnets", t) => {
                        plain(format!("encoder.down.{b}.block.{j}.{}", vae_resnet(t)?))
                    }
                    ("downsamplers", ["conv", t @ ..]) if j == 0 => {
                        plain(format!("encoder.down.{b}.downsample.conv.{}", join(t)))
                    }
                    _ => None,
                }
            }
            ["up_blocks", i, kind, j, t @ ..] if *side == "decoder" => {
                let (i, j) = (idx(i)?, idx(j)?);
                let level = levels.checked_sub(i + 1)?;
                match (*kind, t) {
                    ("resnets", t) => {
                        plain(format!("decoder.up.{level}.block.{j}.{}", vae_resnet(t)?))
                    }
                    ("upsamplers", ["conv", t @ ..]) if j == 0 => {
                        plain(format!("decoder.up.{level}.upsample.conv.{}", join(t)))
                    }
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// One component of a single-file checkpoint, under diffusers names.
pub struct MappedSource {
    inner: Arc<dyn TensorSource>,
    component: Component,
}

impl MappedSource {
    pub fn new(inner: Arc<dyn TensorSource>, component: Component) -> Self {
        Self { inner, component }
    }
}

/// The shape a diffusers name has, given the checkpoint tensor's shape.
fn mapped_shape(origin: &Origin, stored: Vec<usize>) -> Vec<usize> {
    match origin {
        Origin::Plain(_) => stored,
        Origin::Part { parts, .. } => match stored.split_first() {
            Some((&rows, rest)) if rows % parts == 0 => {
                let mut s = vec![rows / parts];
                s.extend_from_slice(rest);
                s
            }
            // Not divisible: report the stored shape, which the shape check then names.
            _ => stored,
        },
        Origin::Squeeze(_) => match stored.as_slice() {
            [o, i, 1, 1] => vec![*o, *i],
            _ => stored,
        },
        Origin::Transpose(_) => match stored.as_slice() {
            [d, p] => vec![*p, *d],
            _ => stored,
        },
    }
}

impl TensorSource for MappedSource {
    fn origin(&self) -> &Path {
        self.inner.origin()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let o = self.component.original(name)?;
        let stored = self.inner.shape(o.name())?;
        Some(mapped_shape(&o, stored))
    }

    fn load(&self, name: &str, device: &Device) -> Result<Tensor, LoadError> {
        let missing = || LoadError::MissingTensor {
            path: self.inner.origin().to_path_buf(),
            name: self.describe(name),
            expected: Vec::new(),
            component: "model".into(),
        };
        let o = self.component.original(name).ok_or_else(missing)?;
        let stored = self.inner.shape(o.name()).ok_or_else(missing)?;
        let want = mapped_shape(&o, stored);
        let t = self.inner.load(o.name(), device)?;
        let t = match &o {
            Origin::Plain(_) => Ok(t),
            Origin::Part { index, .. } => t.narrow(0, index * want[0], want[0]),
            Origin::Squeeze(_) => t.reshape(want.as_slice()),
            Origin::Transpose(_) if t.rank() == 2 => t.t().and_then(|t| t.contiguous()),
            Origin::Transpose(_) => Ok(t),
        };
        t.map_err(|source| LoadError::Tensor {
            path: self.inner.origin().to_path_buf(),
            source,
        })
    }

    fn names(&self) -> Vec<String> {
        let p = self.component.prefix();
        self.inner
            .names()
            .into_iter()
            .filter(|n| n.starts_with(p))
            .collect()
    }

    fn describe(&self, name: &str) -> String {
        match self.component.original(name) {
            Some(o) => o.name().to_string(),
            None => name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> Option<Origin> {
        Some(Origin::Plain(s.to_string()))
    }

    #[test]
    fn unet_block_arithmetic() {
        // SD 1.5: 4 levels, 2 layers each, no attention in the deepest level.
        let u = Component::Unet(UnetLayout::new(
            "m.",
            &[2, 2, 2, 2],
            &[false, true, true, true],
        ));
        assert_eq!(
            u.original("conv_in.weight"),
            plain("m.input_blocks.0.0.weight")
        );
        assert_eq!(
            u.original("down_blocks.1.resnets.0.conv1.weight"),
            plain("m.input_blocks.4.0.in_layers.2.weight")
        );
        assert_eq!(
            u.original("down_blocks.1.attentions.1.proj_in.weight"),
            plain("m.input_blocks.5.1.proj_in.weight")
        );
        assert_eq!(
            u.original("down_blocks.2.downsamplers.0.conv.bias"),
            plain("m.input_blocks.9.0.op.bias")
        );
        assert_eq!(u.original("down_blocks.3.downsamplers.0.conv.bias"), None);
        assert_eq!(
            u.original("up_blocks.0.upsamplers.0.conv.weight"),
            plain("m.output_blocks.2.1.conv.weight")
        );
        assert_eq!(
            u.original("up_blocks.1.upsamplers.0.conv.weight"),
            plain("m.output_blocks.5.2.conv.weight")
        );
        assert_eq!(
            u.original("up_blocks.3.resnets.2.conv_shortcut.weight"),
            plain("m.output_blocks.11.0.skip_connection.weight")
        );
        assert_eq!(u.original("up_blocks.3.upsamplers.0.conv.weight"), None);
        assert_eq!(
            u.original("mid_block.resnets.1.time_emb_proj.weight"),
            plain("m.middle_block.2.emb_layers.1.weight")
        );
        assert_eq!(
            u.original("time_embedding.linear_2.bias"),
            plain("m.time_embed.2.bias")
        );
        assert_eq!(u.original("conv_norm_out.weight"), plain("m.out.0.weight"));
    }

    #[test]
    fn sdxl_added_embedding_and_pooled_projection() {
        // SDXL: 3 levels, no attention in the first up level's mirror (the last).
        let u = Component::Unet(UnetLayout::new("m.", &[2, 2, 2], &[true, true, false]));
        assert_eq!(
            u.original("add_embedding.linear_1.weight"),
            plain("m.label_emb.0.0.weight")
        );
        assert_eq!(
            u.original("add_embedding.linear_2.bias"),
            plain("m.label_emb.0.2.bias")
        );
        assert_eq!(
            u.original("up_blocks.0.upsamplers.0.conv.weight"),
            plain("m.output_blocks.2.2.conv.weight")
        );
        assert_eq!(
            u.original("down_blocks.0.downsamplers.0.conv.weight"),
            plain("m.input_blocks.3.0.op.weight")
        );
        let g = Component::Text(TextLayout::OpenClip {
            prefix: "g.".into(),
        });
        let proj = g.original("text_projection.weight");
        assert_eq!(proj, Some(Origin::Transpose("g.text_projection".into())));
        assert_eq!(
            mapped_shape(&Origin::Transpose("x".into()), vec![48, 24]),
            vec![24, 48]
        );
        // HF CLIP names have no projection to transpose.
        let l = Component::Text(TextLayout::Clip {
            prefix: "l.".into(),
        });
        assert_eq!(
            l.original("text_model.final_layer_norm.weight"),
            plain("l.final_layer_norm.weight")
        );
    }

    #[test]
    fn vae_and_openclip_reshapes() {
        let v = Component::Vae {
            prefix: "f.".into(),
            levels: 4,
        };
        assert_eq!(
            v.original("decoder.up_blocks.0.upsamplers.0.conv.weight"),
            plain("f.decoder.up.3.upsample.conv.weight")
        );
        assert_eq!(
            v.original("encoder.down_blocks.1.resnets.0.conv_shortcut.bias"),
            plain("f.encoder.down.1.block.0.nin_shortcut.bias")
        );
        assert_eq!(
            v.original("decoder.mid_block.attentions.0.to_out.0.weight"),
            Some(Origin::Squeeze(
                "f.decoder.mid.attn_1.proj_out.weight".into()
            ))
        );
        assert_eq!(
            v.original("encoder.mid_block.attentions.0.to_q.bias"),
            plain("f.encoder.mid.attn_1.q.bias")
        );
        let t = Component::Text(TextLayout::OpenClip {
            prefix: "c.".into(),
        });
        assert_eq!(
            t.original("text_model.encoder.layers.2.self_attn.v_proj.weight"),
            Some(Origin::Part {
                name: "c.transformer.resblocks.2.attn.in_proj_weight".into(),
                index: 2,
                parts: 3
            })
        );
        assert_eq!(
            t.original("text_model.embeddings.position_embedding.weight"),
            plain("c.positional_embedding")
        );
        assert_eq!(
            mapped_shape(&Origin::Squeeze("x".into()), vec![8, 8, 1, 1]),
            vec![8, 8]
        );
        assert_eq!(
            mapped_shape(
                &Origin::Part {
                    name: "x".into(),
                    index: 0,
                    parts: 3
                },
                vec![144, 48]
            ),
            vec![48, 48]
        );
    }
}
