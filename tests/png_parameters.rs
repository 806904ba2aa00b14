//! The PNG `parameters` text read back field by field with a port of A1111's
//! own reader (`parse_generation_parameters` in
//! modules/infotext_utils.py), which Civitai, ComfyUI's importers and
//! A1111's "PNG info" all follow.

mod common;

use std::collections::BTreeMap;

use common::{bin, fixtures, ok, run_ok};
use dreamartist::generate::png::read_png_text;
use regex::Regex;

/// A1111's `parse_generation_parameters`, line for line.
fn parse_generation_parameters(x: &str) -> BTreeMap<String, String> {
    let re_param = Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).unwrap();
    let re_imagesize = Regex::new(r"^(\d+)x(\d+)$").unwrap();
    let mut res = BTreeMap::new();
    let mut prompt = String::new();
    let mut negative_prompt = String::new();
    let mut done_with_prompt = false;
    let mut lines: Vec<&str> = x.trim().split('\n').collect();
    let mut lastline = lines.pop().unwrap_or("");
    if re_param.captures_iter(lastline).count() < 3 {
        lines.push(lastline);
        lastline = "";
    }
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            done_with_prompt = true;
            line = rest.trim();
        }
        let target = if done_with_prompt {
            &mut negative_prompt
        } else {
            &mut prompt
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    for c in re_param.captures_iter(lastline) {
        let k = c[1].to_string();
        let mut v = c[2].to_string();
        if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            v = serde_json::from_str(&v).unwrap();
        }
        match re_imagesize.captures(&v) {
            Some(m) => {
                res.insert(format!("{k}-1"), m[1].to_string());
                res.insert(format!("{k}-2"), m[2].to_string());
            }
            None => {
                res.insert(k, v);
            }
        }
    }
    res.insert("Prompt".into(), prompt);
    res.insert("Negative prompt".into(), negative_prompt);
    res
}

fn parameters(png: &std::path::Path) -> BTreeMap<String, String> {
    let text = read_png_text(png).unwrap();
    let params = text
        .iter()
        .find(|(k, _)| k == "parameters")
        .map(|(_, v)| v.clone())
        .unwrap();
    parse_generation_parameters(&params)
}

#[test]
fn every_field_reads_back_with_a1111s_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let ws_s = ws.to_str().unwrap();
    let model = fixtures().join("tiny-sd1/model");
    ok(&["init", ws_s, "--model", model.to_str().unwrap()]);
    // A trained pair to name in the prompt (one step is enough).
    let reference = fixtures().join("references/chelsea.png");
    ok(&[
        "concept",
        "add",
        "cat",
        "--reference",
        reference.to_str().unwrap(),
        "-w",
        ws_s,
    ]);
    ok(&["train", "cat", "-w", ws_s, "--steps", "1"]);

    let png = tmp.path().join("x.png");
    let prompt = "a photo of <cat>, (detailed:1.2)\nsecond line: with a colon";
    let negative = "blurry, \"low\" quality";
    run_ok(bin().args([
        "generate",
        "-w",
        ws_s,
        "--prompt",
        prompt,
        "--negative",
        negative,
        "--seed",
        "77",
        "--steps",
        "3",
        "--cfg",
        "6.5",
        "--sampler",
        "dpmpp_2m_karras",
        "--width",
        "72",
        "--height",
        "64",
        "--out",
        png.to_str().unwrap(),
    ]));
    let p = parameters(&png);
    assert_eq!(p["Prompt"], prompt);
    // The automatic negative word leads the user's negative prompt.
    assert_eq!(p["Negative prompt"], format!("<cat-neg>, {negative}"));
    assert_eq!(p["Steps"], "3");
    assert_eq!(p["Sampler"], "DPM++ 2M Karras");
    assert_eq!(p["CFG scale"], "6.5");
    assert_eq!(p["Seed"], "77");
    assert_eq!((p["Size-1"].as_str(), p["Size-2"].as_str()), ("72", "64"));
    // The model's name as A1111 gives a checkpoint's: here the folder's.
    assert_eq!(p["Model"], "model");
    // A1111's legacy 8-hex model hash (SHA-256 of 64 KiB at 1 MiB, from
    // the start for files smaller than that), of the UNet's weights.
    let unet = std::fs::read(model.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let at = if unet.len() > 0x100000 { 0x100000 } else { 0 };
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&unet[at..(at + 0x10000).min(unet.len())])
    };
    let want: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(p["Model hash"], want);
    assert_eq!(p["Pseudo-words"], "<cat-neg>, <cat>");
    assert!(p["Version"].starts_with("dreamartist "), "{p:?}");
    assert!(!p.contains_key("Denoising strength"));

    // img2img adds the strength; a model spec with a colon is quoted and
    // still reads back whole.
    let png2 = tmp.path().join("y.png");
    run_ok(bin().args([
        "generate",
        "-w",
        ws_s,
        "--prompt",
        "a cat",
        "--no-auto-negative",
        "--seed",
        "5",
        "--steps",
        "4",
        "--init-image",
        reference.to_str().unwrap(),
        "--strength",
        "0.5",
        "--out",
        png2.to_str().unwrap(),
    ]));
    let p = parameters(&png2);
    assert_eq!(p["Prompt"], "a cat");
    assert_eq!(p["Negative prompt"], "");
    assert_eq!(p["Denoising strength"], "0.5");
    assert_eq!(p["CFG scale"], "7");
    assert!(!p.contains_key("Pseudo-words"));
}

#[test]
fn values_with_commas_and_colons_are_quoted_as_a1111_quotes_them() {
    use candle_core::{Device, Tensor};
    use dreamartist::generate::pipeline::a1111_parameters;
    use dreamartist::generate::{GenerateRequest, Generated};
    let req = GenerateRequest {
        prompt: "x".into(),
        ..Default::default()
    };
    let g = Generated {
        image: image::RgbImage::new(8, 8),
        seed: 1,
        negative: String::new(),
        width: 512,
        height: 768,
        latents: Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
    };
    let text = a1111_parameters(
        &req,
        &g,
        "hf:org/sd, v1",
        "abcdef0123",
        &["<a>".into(), "<b>".into()],
    );
    assert!(text.contains(r#"Model: "hf:org/sd, v1""#), "{text}");
    assert!(text.contains(r#"Pseudo-words: "<a>, <b>""#), "{text}");
    let p = parse_generation_parameters(&text);
    assert_eq!(p["Model"], "hf:org/sd, v1");
    assert_eq!(p["Pseudo-words"], "<a>, <b>");
    assert_eq!(p["Size-1"], "512");
    assert_eq!(p["Size-2"], "768");
}
