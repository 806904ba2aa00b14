//! A diffusers SDXL folder written as an original single-file checkpoint
//! (Stability's `sgm` layout, as A1111 / ComfyUI / Civitai files are).
//!
//! This is the inverse of what the loader reads, written from the LDM naming
//! rules themselves rather than from the loader's tables, so a wrong rule on
//! either side makes the round trip fail instead of cancelling out. Tensors are
//! copied byte for byte (whatever their dtype); the only rewrites are the ones
//! the original modules force: OpenCLIP's q/k/v stacked into `in_proj`, its
//! `text_projection` stored transposed, the VAE attention's linears stored as
//! 1x1 convolutions. Keys real files carry that no diffusers tensor maps to
//! are added too, so a loader is tested on ignoring them.
//!
//! Used by `tests/interop_single_file.rs` and by
//! `cargo run --example sdxl_to_single_file -- MODEL_DIR OUT.safetensors`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// One tensor of the written file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The file's tensors by name.
pub type StateDict = BTreeMap<String, Stored>;

/// The prefixes of an SDXL base checkpoint.
pub const UNET: &str = "model.diffusion_model.";
pub const VAE: &str = "first_stage_model.";
pub const CLIP_L: &str = "conditioner.embedders.0.transformer.";
pub const CLIP_G: &str = "conditioner.embedders.1.model.";

type Res<T> = Result<T, String>;

fn read_json(path: &Path) -> Res<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every tensor of a component's safetensors file.
fn read_tensors(path: &Path) -> Res<BTreeMap<String, Stored>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                Stored {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect())
}

/// `v` as one value per level (diffusers accepts a number or a list).
fn per_level(v: &Value, levels: usize, key: &str) -> Res<Vec<usize>> {
    match v {
        Value::Number(n) => Ok(vec![n.as_u64().ok_or(key)? as usize; levels]),
        Value::Array(a) if a.len() == levels => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| key.to_string())
            })
            .collect(),
        _ => Err(format!("unet config `{key}`: {v}")),
    }
}

fn resnet(rest: &str) -> Res<String> {
    let (first, tail) = rest.split_once('.').ok_or(rest)?;
    let ldm = match first {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "time_emb_proj" => "emb_layers.1",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "conv_shortcut" => "skip_connection",
        _ => return Err(format!("unknown resnet tensor `{rest}`")),
    };
    Ok(format!("{ldm}.{tail}"))
}

/// `input_blocks` / `output_blocks` arithmetic of ldm's UNet (`openaimodel.py`):
/// block 0 of the input is conv_in; each down level adds one block per resnet
/// and one for its downsampler; each up level has one block per resnet, the
/// last one also holding the upsampler.
fn unet_name(name: &str, layers: &[usize], up_attention: &[bool]) -> Res<String> {
    let n = layers.len();
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    let num = |s: &str| s.parse::<usize>().map_err(|_| format!("`{name}`"));
    Ok(match parts.as_slice() {
        ["time_embedding", "linear_1", ..] => {
            name.replacen("time_embedding.linear_1", "time_embed.0", 1)
        }
        ["time_embedding", "linear_2", ..] => {
            name.replacen("time_embedding.linear_2", "time_embed.2", 1)
        }
        ["add_embedding", "linear_1", ..] => {
            name.replacen("add_embedding.linear_1", "label_emb.0.0", 1)
        }
        ["add_embedding", "linear_2", ..] => {
            name.replacen("add_embedding.linear_2", "label_emb.0.2", 1)
        }
        ["conv_in", ..] => name.replacen("conv_in", "input_blocks.0.0", 1),
        ["conv_norm_out", ..] => name.replacen("conv_norm_out", "out.0", 1),
        ["conv_out", ..] => name.replacen("conv_out", "out.2", 1),
        ["down_blocks", b, kind, j, rest] => {
            let (b, j) = (num(b)?, num(j)?);
            let first: usize = 1 + layers[..b].iter().map(|l| l + 1).sum::<usize>();
            match *kind {
                "resnets" => format!("input_blocks.{}.0.{}", first + j, resnet(rest)?),
                "attentions" => format!("input_blocks.{}.1.{rest}", first + j),
                "downsamplers" => {
                    let tail = rest.strip_prefix("conv.").ok_or(name)?;
                    format!("input_blocks.{}.0.op.{tail}", first + layers[b])
                }
                _ => return Err(format!("`{name}`")),
            }
        }
        ["mid_block", kind, j, ..] => {
            let rest = &name[format!("mid_block.{kind}.{j}.").len()..];
            match (*kind, *j) {
                ("resnets", "0") => format!("middle_block.0.{}", resnet(rest)?),
                ("attentions", "0") => format!("middle_block.1.{rest}"),
                ("resnets", "1") => format!("middle_block.2.{}", resnet(rest)?),
                _ => return Err(format!("`{name}`")),
            }
        }
        ["up_blocks", i, kind, j, rest] => {
            let (i, j) = (num(i)?, num(j)?);
            // Up level i mirrors down level n-1-i with one resnet more.
            let first: usize = (0..i).map(|k| layers[n - 1 - k] + 1).sum();
            let count = layers[n - 1 - i] + 1;
            match *kind {
                "resnets" => format!("output_blocks.{}.0.{}", first + j, resnet(rest)?),
                "attentions" => format!("output_blocks.{}.1.{rest}", first + j),
                "upsamplers" => {
                    let tail = rest.strip_prefix("conv.").ok_or(name)?;
                    let slot = if up_attention[i] { 2 } else { 1 };
                    format!("output_blocks.{}.{slot}.conv.{tail}", first + count - 1)
                }
                _ => return Err(format!("`{name}`")),
            }
        }
        _ => return Err(format!("no LDM name for UNet tensor `{name}`")),
    })
}

fn vae_resnet(rest: &str) -> String {
    rest.replacen("conv_shortcut", "nin_shortcut", 1)
}

/// ldm's `Encoder`/`Decoder` names; the decoder's levels count bottom-up.
fn vae_name(name: &str, levels: usize) -> Res<(String, bool)> {
    let parts: Vec<&str> = name.splitn(6, '.').collect();
    let num = |s: &str| s.parse::<usize>().map_err(|_| format!("`{name}`"));
    let mut conv_1x1 = false;
    let ldm = match parts.as_slice() {
        ["quant_conv" | "post_quant_conv", ..] => name.to_string(),
        [side, "conv_norm_out", rest @ ..] => format!("{side}.norm_out.{}", rest.join(".")),
        [side, c @ ("conv_in" | "conv_out"), rest @ ..] => format!("{side}.{c}.{}", rest.join(".")),
        [side, "mid_block", "resnets", j, rest @ ..] => format!(
            "{side}.mid.block_{}.{}",
            num(j)? + 1,
            vae_resnet(&rest.join("."))
        ),
        [side, "mid_block", "attentions", "0", rest @ ..] => {
            let rest = rest.join(".");
            let (module, tail) = if let Some(t) = rest.strip_prefix("group_norm.") {
                ("norm", t)
            } else if let Some(t) = rest.strip_prefix("to_out.0.") {
                ("proj_out", t)
            } else if let Some(t) = rest.strip_prefix("to_q.") {
                ("q", t)
            } else if let Some(t) = rest.strip_prefix("to_k.") {
                ("k", t)
            } else if let Some(t) = rest.strip_prefix("to_v.") {
                ("v", t)
            } else {
                return Err(format!("`{name}`"));
            };
            conv_1x1 = module != "norm" && tail == "weight";
            format!("{side}.mid.attn_1.{module}.{tail}")
        }
        ["encoder", "down_blocks", b, "resnets", j, rest] => {
            format!("encoder.down.{b}.block.{j}.{}", vae_resnet(rest))
        }
        ["encoder", "down_blocks", b, "downsamplers", "0", rest] => {
            format!("encoder.down.{b}.downsample.{rest}")
        }
        ["decoder", "up_blocks", i, "resnets", j, rest] => format!(
            "decoder.up.{}.block.{j}.{}",
            levels - 1 - num(i)?,
            vae_resnet(rest)
        ),
        ["decoder", "up_blocks", i, "upsamplers", "0", rest] => {
            format!("decoder.up.{}.upsample.{rest}", levels - 1 - num(i)?)
        }
        _ => return Err(format!("no LDM name for VAE tensor `{name}`")),
    };
    Ok((ldm, conv_1x1))
}

fn transpose(t: &Stored) -> Res<Stored> {
    let [r, c] = t.shape[..] else {
        return Err(format!("transpose of shape {:?}", t.shape));
    };
    let e = t.dtype.bitsize() / 8;
    let mut data = vec![0u8; t.data.len()];
    for i in 0..r {
        for j in 0..c {
            let from = (i * c + j) * e;
            let to = (j * r + i) * e;
            data[to..to + e].copy_from_slice(&t.data[from..from + e]);
        }
    }
    Ok(Stored {
        dtype: t.dtype,
        shape: vec![c, r],
        data,
    })
}

/// OpenCLIP's module names for a transformers CLIP text tower (SDXL's second
/// encoder keeps every block; SD 2.x would add one unused block).
fn open_clip(te: BTreeMap<String, Stored>, out: &mut StateDict) -> Res<()> {
    let mut qkv: BTreeMap<String, [Option<Stored>; 3]> = BTreeMap::new();
    for (name, t) in te {
        let ldm = if name == "text_projection.weight" {
            out.insert(format!("{CLIP_G}text_projection"), transpose(&t)?);
            continue;
        } else if name == "text_model.embeddings.token_embedding.weight" {
            "token_embedding.weight".to_string()
        } else if name == "text_model.embeddings.position_embedding.weight" {
            "positional_embedding".to_string()
        } else if let Some(t) = name.strip_prefix("text_model.final_layer_norm.") {
            format!("ln_final.{t}")
        } else if let Some(rest) = name.strip_prefix("text_model.encoder.layers.") {
            let (n, rest) = rest.split_once('.').ok_or(&name)?;
            let block = format!("transformer.resblocks.{n}");
            if let Some((proj, kind)) = rest
                .strip_prefix("self_attn.")
                .and_then(|r| r.split_once('.'))
                .filter(|(p, _)| matches!(*p, "q_proj" | "k_proj" | "v_proj"))
            {
                let slot = match proj {
                    "q_proj" => 0,
                    "k_proj" => 1,
                    _ => 2,
                };
                qkv.entry(format!("{block}.attn.in_proj_{kind}"))
                    .or_default()[slot] = Some(t);
                continue;
            }
            let mapped = rest
                .replacen("layer_norm1", "ln_1", 1)
                .replacen("layer_norm2", "ln_2", 1)
                .replacen("self_attn.out_proj", "attn.out_proj", 1)
                .replacen("mlp.fc1", "mlp.c_fc", 1)
                .replacen("mlp.fc2", "mlp.c_proj", 1);
            format!("{block}.{mapped}")
        } else {
            return Err(format!("no OpenCLIP name for `{name}`"));
        };
        out.insert(format!("{CLIP_G}{ldm}"), t);
    }
    for (name, parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            return Err(format!("incomplete q/k/v for `{name}`"));
        };
        let mut shape = q.shape.clone();
        shape[0] *= 3;
        let data = [q.data, k.data, v.data].concat();
        out.insert(
            format!("{CLIP_G}{name}"),
            Stored {
                dtype: q.dtype,
                shape,
                data,
            },
        );
    }
    Ok(())
}

fn f32s(shape: Vec<usize>, v: impl IntoIterator<Item = f32>) -> Stored {
    Stored {
        dtype: Dtype::F32,
        shape,
        data: v.into_iter().flat_map(f32::to_le_bytes).collect(),
    }
}

/// The checkpoint's tensors for the diffusers SDXL folder `model`.
pub fn state_dict(model: &Path) -> Res<StateDict> {
    let mut out = StateDict::new();

    let ucfg = read_json(&model.join("unet/config.json"))?;
    let levels = ucfg["block_out_channels"]
        .as_array()
        .ok_or("unet block_out_channels")?
        .len();
    let layers = per_level(&ucfg["layers_per_block"], levels, "layers_per_block")?;
    let up_attention: Vec<bool> = ucfg["up_block_types"]
        .as_array()
        .ok_or("unet up_block_types")?
        .iter()
        .map(|t| t.as_str() == Some("CrossAttnUpBlock2D"))
        .collect();
    for (name, t) in read_tensors(&model.join("unet/diffusion_pytorch_model.safetensors"))? {
        out.insert(
            format!("{UNET}{}", unet_name(&name, &layers, &up_attention)?),
            t,
        );
    }

    let vcfg = read_json(&model.join("vae/config.json"))?;
    let vae_levels = vcfg["block_out_channels"]
        .as_array()
        .ok_or("vae block_out_channels")?
        .len();
    for (name, mut t) in read_tensors(&model.join("vae/diffusion_pytorch_model.safetensors"))? {
        let (ldm, conv_1x1) = vae_name(&name, vae_levels)?;
        if conv_1x1 {
            t.shape.extend([1, 1]);
        }
        out.insert(format!("{VAE}{ldm}"), t);
    }

    // CLIP-L keeps transformers' names under the embedder's `transformer.`.
    let te1 = read_tensors(&model.join("text_encoder/model.safetensors"))?;
    let positions = te1
        .get("text_model.embeddings.position_embedding.weight")
        .map(|t| t.shape[0])
        .ok_or("text_encoder without position embedding")?;
    for (name, t) in te1 {
        out.insert(format!("{CLIP_L}{name}"), t);
    }
    open_clip(
        read_tensors(&model.join("text_encoder_2/model.safetensors"))?,
        &mut out,
    )?;

    // Keys real SDXL files carry with no diffusers counterpart.
    out.insert(
        format!("{CLIP_L}text_model.embeddings.position_ids"),
        Stored {
            dtype: Dtype::I64,
            shape: vec![1, positions],
            data: (0..positions as i64).flat_map(i64::to_le_bytes).collect(),
        },
    );
    // OpenCLIP's trained temperature, ln(100).
    out.insert(format!("{CLIP_G}logit_scale"), f32s(vec![], [100f32.ln()]));
    // sgm's DiscreteDenoiser buffer (SDXL-Turbo style files): the schedule's
    // sigmas, sqrt((1 - ᾱ) / ᾱ) of scaled_linear 0.00085..0.012 over 1000 steps.
    let (b0, b1, steps) = (0.00085f64.sqrt(), 0.012f64.sqrt(), 1000usize);
    let mut ab = 1.0f64;
    let sigmas = (0..steps).map(|i| {
        let beta = (b0 + (b1 - b0) * i as f64 / (steps - 1) as f64).powi(2);
        ab *= 1.0 - beta;
        ((1.0 - ab) / ab).sqrt() as f32
    });
    out.insert(
        "denoiser.sigmas".into(),
        f32s(vec![steps], sigmas.collect::<Vec<_>>()),
    );
    Ok(out)
}

/// Writes `tensors` as a safetensors file.
pub fn write(tensors: &StateDict, to: &Path) -> Res<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect::<Res<_>>()?;
    safetensors::serialize_to_file(views, None, to).map_err(|e| format!("{}: {e}", to.display()))
}

/// The diffusers SDXL folder `model` as an original single file at `to`.
pub fn convert(model: &Path, to: &Path) -> Res<usize> {
    let sd = state_dict(model)?;
    write(&sd, to)?;
    Ok(sd.len())
}
