//! LoRA networks on disk in the kohya layout, the one AUTOMATIC1111, ComfyUI
//! and diffusers' `load_lora_weights` read: for each adapted layer
//! `<name>.lora_down.weight` `[r, in]` (`[r, in, 1, 1]` for a 1×1
//! convolution), `<name>.lora_up.weight` `[out, r]` and `<name>.alpha` (a
//! scalar), where `<name>` is `lora_unet_` / `lora_te_` (SDXL: `lora_te1_`,
//! `lora_te2_`) followed by the layer's diffusers path with `.` → `_`, and
//! kohya's `ss_*` metadata.
//!
//! Reading also takes SDXL files named after the original (SGM) UNet layout
//! (`lora_unet_input_blocks_4_1_…`, as kohya's SDXL scripts write them): their
//! transformer blocks are mapped to the diffusers names. Formats that are not
//! plain LoRA (LoHa, LoKr, DoRA, full-rank diffs) are refused by name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::family::Family;
use super::lora::{LayerKey, LinearSite, LoraLayer, LoraNetwork, Net, SiteKind};

/// Why a LoRA file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LoraFileError {
    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: cannot write: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{path}: not a LoRA network in the kohya layout ({message})")]
    NotKohya { path: PathBuf, message: String },
    #[error("{path}: {format} networks are not supported, only plain LoRA (lora_down / lora_up / alpha); convert it to LoRA or use it in a tool that reads {format}")]
    UnsupportedFormat { path: PathBuf, format: String },
    #[error("{path}: {count} layer(s) do not exist in this {family} model, e.g. {examples}; was the LoRA made for another model family?")]
    UnknownLayers {
        path: PathBuf,
        count: usize,
        family: String,
        examples: String,
    },
    #[error("{path}: `{name}` is {found:?}, the model's layer needs {expected}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("{path}: `{name}` has {part} but no {missing}")]
    Incomplete {
        path: PathBuf,
        name: String,
        part: String,
        missing: String,
    },
    #[error("{path}: `{name}` holds {count} NaN or infinite value(s); the file is damaged or the training diverged")]
    NonFinite {
        path: PathBuf,
        name: String,
        count: usize,
    },
}

/// The suffixes of a layer's tensors in the kohya layout.
pub const DOWN: &str = ".lora_down.weight";
pub const UP: &str = ".lora_up.weight";
pub const ALPHA: &str = ".alpha";

/// The kohya name of the layer at `key` in a model of `family`.
pub fn kohya_name(key: &LayerKey, family: Family) -> String {
    let prefix = match (key.net, family) {
        (Net::Unet, _) => "lora_unet_",
        (Net::TextEncoder, Family::Sdxl) => "lora_te1_",
        (Net::TextEncoder, _) => "lora_te_",
        (Net::TextEncoder2, _) => "lora_te2_",
    };
    format!("{prefix}{}", key.path.replace('.', "_"))
}

/// The base-model version kohya's metadata names.
fn base_model_version(family: Family) -> &'static str {
    match family {
        Family::Sd1 => "sd_v1",
        Family::Sd2 => "sd_v2",
        Family::Sdxl => "sdxl_base_v1-0",
    }
}

/// A SGM (original SDXL / LDM) UNet name's transformer part in diffusers
/// naming: `lora_unet_input_blocks_4_1_rest` → `lora_unet_down_blocks_1_attentions_0_rest`.
fn sgm_to_diffusers(name: &str) -> Option<String> {
    let rest = name.strip_prefix("lora_unet_")?;
    let numbers = |s: &str| -> Option<(usize, usize, String)> {
        let mut it = s.splitn(3, '_');
        let a = it.next()?.parse().ok()?;
        let b = it.next()?.parse().ok()?;
        Some((a, b, it.next()?.to_string()))
    };
    if let Some(s) = rest.strip_prefix("input_blocks_") {
        let (i, j, tail) = numbers(s)?;
        (j == 1 && i >= 1).then(|| {
            format!(
                "lora_unet_down_blocks_{}_attentions_{}_{tail}",
                (i - 1) / 3,
                (i - 1) % 3
            )
        })
    } else if let Some(s) = rest.strip_prefix("middle_block_1_") {
        Some(format!("lora_unet_mid_block_attentions_0_{s}"))
    } else if let Some(s) = rest.strip_prefix("output_blocks_") {
        let (i, j, tail) = numbers(s)?;
        (j == 1).then(|| format!("lora_unet_up_blocks_{}_attentions_{}_{tail}", i / 3, i % 3))
    } else {
        None
    }
}

/// Metadata for a network we write: kohya's keys plus ours (`extra`).
pub fn kohya_metadata(
    network: &LoraNetwork,
    family: Family,
    extra: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("ss_network_module".into(), "networks.lora".into());
    if let Some(r) = network.rank() {
        m.insert("ss_network_dim".into(), r.to_string());
    }
    if let Some(a) = network.alpha() {
        m.insert("ss_network_alpha".into(), format!("{a}"));
    }
    m.insert(
        "ss_base_model_version".into(),
        base_model_version(family).into(),
    );
    m.insert("ss_v2".into(), (family == Family::Sd2).to_string());
    for (k, v) in extra {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// Writes `network` to `path` (atomically) in the kohya layout; `sites`
/// says which layers are 1×1 convolutions.
pub fn save_kohya(
    path: &Path,
    network: &LoraNetwork,
    sites: &[LinearSite],
    family: Family,
    extra: &BTreeMap<String, String>,
) -> Result<(), LoraFileError> {
    let write_err = |e: &dyn std::fmt::Display| LoraFileError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let conv: std::collections::HashSet<&LayerKey> = sites
        .iter()
        .filter(|s| s.kind == SiteKind::Conv1x1)
        .map(|s| &s.key)
        .collect();
    let mut owned: Vec<(String, Tensor)> = Vec::with_capacity(network.len() * 3);
    for (key, layer) in network.layers() {
        let name = kohya_name(key, family);
        let as_stored = |t: &Tensor| -> candle_core::Result<Tensor> {
            let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            if conv.contains(key) {
                t.unsqueeze(2)?.unsqueeze(3)
            } else {
                Ok(t)
            }
        };
        let down = as_stored(&layer.down).map_err(|e| write_err(&e))?;
        let up = as_stored(&layer.up).map_err(|e| write_err(&e))?;
        let alpha = Tensor::new(layer.alpha as f32, &Device::Cpu).map_err(|e| write_err(&e))?;
        owned.push((format!("{name}{DOWN}"), down));
        owned.push((format!("{name}{UP}"), up));
        owned.push((format!("{name}{ALPHA}"), alpha));
    }
    let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    crate::fsutil::save_safetensors_atomic(
        path,
        &refs,
        Some(kohya_metadata(network, family, extra)),
    )
    .map_err(|e| write_err(&e))
}

/// A network read from a file, with the file's metadata.
#[derive(Debug, Clone)]
pub struct LoadedLora {
    pub network: LoraNetwork,
    pub metadata: BTreeMap<String, String>,
}

/// The `__metadata__` of a safetensors file's header.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, LoraFileError> {
    use std::io::Read;
    let err = |message: String| LoraFileError::Read {
        path: path.to_path_buf(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| err("shorter than a safetensors header".into()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(err(format!("a {len}-byte header: not a safetensors file")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|_| err("the safetensors header is cut short".into()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(format!("bad header: {e}")))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// Reads a kohya LoRA file for a model with `sites` of `family`: every layer
/// of the file must exist in the model with matching widths (layers the file
/// leaves out get no adapter). Tensors come back in f32 on `device`.
pub fn load_kohya(
    path: &Path,
    sites: &[LinearSite],
    family: Family,
    device: &Device,
) -> Result<LoadedLora, LoraFileError> {
    let tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| LoraFileError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let metadata = read_metadata(path)?;
    for (marker, format) in [
        ("hada_w1", "LoHa"),
        ("lokr_w1", "LoKr"),
        ("dora_scale", "DoRA"),
        (".diff", "full-rank difference (LyCORIS full)"),
        ("lora_mid", "LoCon with a mid (Tucker) layer"),
        ("oft_blocks", "OFT"),
    ] {
        if tensors.keys().any(|k| k.contains(marker)) {
            return Err(LoraFileError::UnsupportedFormat {
                path: path.to_path_buf(),
                format: format.into(),
            });
        }
    }
    // Group the file's tensors by layer name.
    let mut parts: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
    for (k, t) in &tensors {
        let (name, slot) = if let Some(n) = k.strip_suffix(DOWN) {
            (n, 0)
        } else if let Some(n) = k.strip_suffix(UP) {
            (n, 1)
        } else if let Some(n) = k.strip_suffix(ALPHA) {
            (n, 2)
        } else {
            return Err(LoraFileError::NotKohya {
                path: path.to_path_buf(),
                message: format!(
                    "tensor `{k}` is none of <layer>{DOWN}, <layer>{UP}, <layer>{ALPHA}"
                ),
            });
        };
        parts.entry(name.to_string()).or_default()[slot] = Some(t.clone());
    }
    if parts.is_empty() {
        return Err(LoraFileError::NotKohya {
            path: path.to_path_buf(),
            message: "it holds no tensors".into(),
        });
    }
    let by_name: HashMap<String, &LinearSite> = sites
        .iter()
        .map(|s| (kohya_name(&s.key, family), s))
        .collect();
    let mut layers = BTreeMap::new();
    let mut unknown = Vec::new();
    for (name, [down, up, alpha]) in parts {
        let site = by_name
            .get(&name)
            .copied()
            .or_else(|| sgm_to_diffusers(&name).and_then(|n| by_name.get(&n).copied()));
        let Some(site) = site else {
            unknown.push(name);
            continue;
        };
        let incomplete = |part: &str, missing: &str| LoraFileError::Incomplete {
            path: path.to_path_buf(),
            name: name.clone(),
            part: part.into(),
            missing: missing.into(),
        };
        let down = down.ok_or_else(|| incomplete("lora_up", "lora_down"))?;
        let up = up.ok_or_else(|| incomplete("lora_down", "lora_up"))?;
        let rank = down.dims().first().copied().unwrap_or(0);
        let shape_err = |part: &str, t: &Tensor, expected: String| LoraFileError::Shape {
            path: path.to_path_buf(),
            name: format!("{name}.{part}"),
            found: t.dims().to_vec(),
            expected,
        };
        let as_matrix = |t: &Tensor, rows: usize, cols: usize, part: &str| {
            let ok = match t.dims() {
                [r, c] => *r == rows && *c == cols,
                [r, c, 1, 1] => *r == rows && *c == cols,
                _ => false,
            };
            if !ok || rank == 0 {
                return Err(shape_err(part, t, format!("[{rows}, {cols}]")));
            }
            t.reshape((rows, cols))
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_device(device))
                .map_err(|e| LoraFileError::Read {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        };
        let down = as_matrix(&down, rank, site.in_dim, "lora_down.weight")?;
        let up = as_matrix(&up, site.out_dim, rank, "lora_up.weight")?;
        let alpha = match alpha {
            Some(a) => a
                .to_dtype(DType::F64)
                .and_then(|a| a.flatten_all())
                .and_then(|a| a.to_vec1::<f64>())
                .ok()
                .and_then(|v| (v.len() == 1).then(|| v[0]))
                .ok_or_else(|| shape_err("alpha", &a, "a single number".into()))?,
            // kohya's default when a file has no alpha: no scaling.
            None => rank as f64,
        };
        for (part, t) in [("lora_down.weight", &down), ("lora_up.weight", &up)] {
            let bad = non_finite(t).map_err(|e| LoraFileError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            if bad > 0 {
                return Err(LoraFileError::NonFinite {
                    path: path.to_path_buf(),
                    name: format!("{name}.{part}"),
                    count: bad,
                });
            }
        }
        if !alpha.is_finite() {
            return Err(LoraFileError::NonFinite {
                path: path.to_path_buf(),
                name: format!("{name}.alpha"),
                count: 1,
            });
        }
        layers.insert(site.key.clone(), LoraLayer { down, up, alpha });
    }
    if !unknown.is_empty() {
        let examples: Vec<&str> = unknown.iter().take(3).map(String::as_str).collect();
        return Err(LoraFileError::UnknownLayers {
            path: path.to_path_buf(),
            count: unknown.len(),
            family: family.short().to_string(),
            examples: examples.join(", "),
        });
    }
    Ok(LoadedLora {
        network: LoraNetwork::new(layers),
        metadata,
    })
}

fn non_finite(t: &Tensor) -> candle_core::Result<usize> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.iter().filter(|x| !x.is_finite()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_names_follow_the_family() {
        let k = LayerKey::new(
            Net::Unet,
            "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0",
        );
        assert_eq!(
            kohya_name(&k, Family::Sd1),
            "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_out_0"
        );
        let te = LayerKey::new(
            Net::TextEncoder,
            "text_model.encoder.layers.0.self_attn.q_proj",
        );
        assert_eq!(
            kohya_name(&te, Family::Sd2),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
        );
        assert!(kohya_name(&te, Family::Sdxl).starts_with("lora_te1_text_model"));
        let te2 = LayerKey::new(Net::TextEncoder2, "text_model.encoder.layers.0.mlp.fc1");
        assert_eq!(
            kohya_name(&te2, Family::Sdxl),
            "lora_te2_text_model_encoder_layers_0_mlp_fc1"
        );
    }

    #[test]
    fn sgm_names_map_to_diffusers() {
        assert_eq!(
            sgm_to_diffusers("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q")
                .as_deref(),
            Some("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q")
        );
        assert_eq!(
            sgm_to_diffusers("lora_unet_input_blocks_8_1_proj_in").as_deref(),
            Some("lora_unet_down_blocks_2_attentions_1_proj_in")
        );
        assert_eq!(
            sgm_to_diffusers("lora_unet_middle_block_1_transformer_blocks_3_ff_net_2").as_deref(),
            Some("lora_unet_mid_block_attentions_0_transformer_blocks_3_ff_net_2")
        );
        assert_eq!(
            sgm_to_diffusers("lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_k")
                .as_deref(),
            Some("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_k")
        );
        assert_eq!(
            sgm_to_diffusers("lora_unet_input_blocks_4_0_in_layers_2"),
            None
        );
        assert_eq!(sgm_to_diffusers("lora_te1_text_model"), None);
    }
}
