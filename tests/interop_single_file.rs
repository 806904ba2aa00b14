//! Single-file checkpoints (original LDM layout): both fixtures' files map to
//! exactly the diffusers folder's tensors and pass every golden case; the same
//! weights as a `.ckpt` torch pickle do too; configs read off the shapes match
//! the fixtures where shapes determine them; broken files give clear errors.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dreamartist::sd::config::Prediction;
use dreamartist::sd::model::text_encoder_widths;
use dreamartist::sd::single_file::{
    shipped_tokenizer, ConfigOrigin, Family, SingleFile, SingleFileSpec,
};
use dreamartist::sd::{ClipTokenizer, LoadError, LoadOptions, ModelSpec, StableDiffusion};
use dreamartist::selftest::{run_fixture, Outcome, SelftestOptions, Summary};

mod common;
use common::f32_bits as bits;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn spec_with_config(name: &str) -> SingleFileSpec {
    SingleFileSpec {
        path: fixture(name).join("single_file.safetensors"),
        config: Some(fixture(name).join("model")),
        prediction: None,
    }
}

fn check_selftest(fx: &str, model: PathBuf) {
    let opts = SelftestOptions {
        model: Some(model),
        ..Default::default()
    };
    let results = run_fixture(&fixture(fx), &opts, |_| {}).expect("fixture runs");
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Pass { .. }))
        .map(|r| r.line())
        .collect();
    assert!(failures.is_empty(), "{fx}:\n{}", failures.join("\n"));
    assert!(Summary::of(&results).passed >= 30, "{fx}");
}

#[test]
fn tiny_sd1_single_file_passes_every_case() {
    check_selftest("tiny-sd1", fixture("tiny-sd1/single_file.safetensors"));
}

#[test]
fn tiny_sd2v_single_file_passes_every_case() {
    check_selftest("tiny-sd2v", fixture("tiny-sd2v/single_file.safetensors"));
}

#[test]
fn mapped_tensors_equal_the_diffusers_folder_bit_for_bit() {
    for fx in ["tiny-sd1", "tiny-sd2v"] {
        let sf = SingleFile::open(&spec_with_config(fx)).unwrap();
        let sources = [
            ("text_encoder/model.safetensors", sf.text_encoder_source()),
            (
                "unet/diffusion_pytorch_model.safetensors",
                sf.unet_source().unwrap(),
            ),
            ("vae/diffusion_pytorch_model.safetensors", sf.vae_source()),
        ];
        for (file, src) in sources {
            let want =
                candle_core::safetensors::load(fixture(fx).join("model").join(file), &Device::Cpu)
                    .unwrap();
            assert!(want.len() > 20, "{fx}/{file}");
            for (name, t) in &want {
                assert_eq!(
                    src.shape(name).as_deref(),
                    Some(t.dims()),
                    "{fx}/{file}: {name} ({})",
                    src.describe(name)
                );
                let got = src.load(name, &Device::Cpu).unwrap();
                assert!(bits(&got) == bits(t), "{fx}/{file}: {name} differs");
            }
        }
    }
}

#[test]
fn shapes_alone_reproduce_the_fixture_configs() {
    let read = |fx: &str, c: &str| -> serde_json::Value {
        let text =
            std::fs::read_to_string(fixture(fx).join("model").join(c).join("config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    for (fx, family) in [("tiny-sd1", Family::Sd1), ("tiny-sd2v", Family::Sd2)] {
        let sf = SingleFile::open(&SingleFileSpec::new(
            fixture(fx).join("single_file.safetensors"),
        ))
        .unwrap();
        assert_eq!(sf.layout.family, family);
        let ConfigOrigin::Inferred(inf) = &sf.configs.origin else {
            panic!("{fx}: configs not inferred");
        };
        let te = read(fx, "text_encoder");
        for key in [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "max_position_embeddings",
            "hidden_act",
            "vocab_size",
        ] {
            assert_eq!(inf.text[key], te[key], "{fx} text_encoder {key}");
        }
        let unet = read(fx, "unet");
        for key in [
            "in_channels",
            "out_channels",
            "block_out_channels",
            "down_block_types",
            "up_block_types",
            "mid_block_type",
            "layers_per_block",
            "cross_attention_dim",
            "transformer_layers_per_block",
            "use_linear_projection",
            "conv_in_kernel",
            "conv_out_kernel",
        ] {
            assert_eq!(inf.unet[key], unet[key], "{fx} unet {key}");
        }
        let vae = read(fx, "vae");
        for key in [
            "in_channels",
            "out_channels",
            "block_out_channels",
            "down_block_types",
            "up_block_types",
            "layers_per_block",
            "latent_channels",
            "use_quant_conv",
            "use_post_quant_conv",
            "mid_block_add_attention",
        ] {
            assert_eq!(inf.vae[key], vae[key], "{fx} vae {key}");
        }
        // What the shapes cannot say is listed, never silently claimed.
        let assumed = inf.assumed.join("\n");
        for what in [
            "attention heads",
            "UNet norm_num_groups",
            "VAE norm_num_groups",
            "scaling_factor",
        ] {
            assert!(
                assumed.contains(what),
                "{fx}: {what} not listed in\n{assumed}"
            );
        }
    }
    // SD 1.x's 8-head convention happens to be the tiny model's value; SD 2.x's 64-wide heads are not.
    let sd1 = SingleFile::open(&SingleFileSpec::new(fixture(
        "tiny-sd1/single_file.safetensors",
    )))
    .unwrap();
    assert_eq!(
        serde_json::to_value(8).unwrap(),
        match &sd1.configs.origin {
            ConfigOrigin::Inferred(i) => i.unet["attention_head_dim"].clone(),
            _ => unreachable!(),
        }
    );
}

/// A minimal pickle emitter for the checkpoint below.
struct Pk(Vec<u8>);

impl Pk {
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.0.push(b'J');
        self.0.extend((v as i32).to_le_bytes());
    }
    fn raw(&mut self, b: &[u8]) {
        self.0.extend(b);
    }
}

/// Writes the safetensors file's tensors as a PyTorch Lightning `.ckpt`
/// (`{"epoch", "callbacks": <foreign object>, "state_dict": OrderedDict}`), or
/// with the state dict at the top level.
fn write_ckpt(from: &Path, to: &Path, lightning: bool) {
    let bytes = std::fs::read(from).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut p = Pk(Vec::new());
    p.raw(b"\x80\x02");
    if lightning {
        p.raw(b"}(");
        p.str("epoch");
        p.int(6);
        p.str("callbacks");
        p.raw(b"cpytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\n)R}");
        p.str("best_model_score");
        p.raw(b"cnumpy.core.multiarray\nscalar\n)Rsb");
        p.str("state_dict");
    }
    p.raw(b"ccollections\nOrderedDict\n)R(");
    let mut storages = Vec::new();
    for (i, (name, view)) in st.tensors().into_iter().enumerate() {
        let class = match view.dtype() {
            safetensors::Dtype::F32 => "FloatStorage",
            safetensors::Dtype::I64 => "LongStorage",
            safetensors::Dtype::I32 => "IntStorage",
            other => panic!("{name}: {other:?}"),
        };
        let elem = view.dtype().bitsize() / 8;
        let numel = view.data().len() / elem;
        p.str(&name);
        p.raw(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        p.str("storage");
        p.raw(format!("ctorch\n{class}\n").as_bytes());
        p.str(&i.to_string());
        p.str("cpu");
        p.int(numel);
        p.raw(b"tQ");
        p.int(0);
        let shape = view.shape();
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        p.raw(b"(");
        shape.iter().for_each(|&d| p.int(d));
        p.raw(b"t(");
        stride.iter().for_each(|&d| p.int(d));
        p.raw(b"t\x89ccollections\nOrderedDict\n)RtR");
        storages.push(view.data().to_vec());
    }
    p.raw(if lightning { b"uu." } else { b"u." });
    let mut w = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    w.start_file("checkpoint/data.pkl", opts).unwrap();
    w.write_all(&p.0).unwrap();
    w.start_file("checkpoint/byteorder", opts).unwrap();
    w.write_all(b"little").unwrap();
    for (i, data) in storages.iter().enumerate() {
        w.start_file(format!("checkpoint/data/{i}"), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.start_file("checkpoint/version", opts).unwrap();
    w.write_all(b"3\n").unwrap();
    w.finish().unwrap();
}

#[test]
fn ckpt_pickle_checkpoint_passes_every_case() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("tiny-sd1.ckpt");
    write_ckpt(&fixture("tiny-sd1/single_file.safetensors"), &ckpt, true);
    check_selftest("tiny-sd1", ckpt.clone());
    // The same file through a workspace-style model spec.
    assert_eq!(
        text_encoder_widths(&ModelSpec::parse(ckpt.to_str().unwrap())).unwrap(),
        [32]
    );
    // A bare state dict at the top level reads the same.
    let bare = tmp.path().join("bare.ckpt");
    write_ckpt(&fixture("tiny-sd2v/single_file.safetensors"), &bare, false);
    let sf = SingleFile::open(&SingleFileSpec {
        config: Some(fixture("tiny-sd2v/model")),
        ..SingleFileSpec::new(&bare)
    })
    .unwrap();
    assert_eq!(sf.layout.family, Family::Sd2);
    let name = "text_model.encoder.layers.2.self_attn.k_proj.weight";
    let want = candle_core::safetensors::load(
        fixture("tiny-sd2v/model/text_encoder/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let got = sf.text_encoder_source().load(name, &Device::Cpu).unwrap();
    assert!(bits(&got) == bits(&want[name]));
}

/// Rewrites a copy of a single file with `edit` applied to its tensors.
fn edited(fx: &str, dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> PathBuf {
    let mut t =
        candle_core::safetensors::load(fixture(fx).join("single_file.safetensors"), &Device::Cpu)
            .unwrap();
    edit(&mut t);
    let out = dir.join(format!("{fx}-edited.safetensors"));
    candle_core::safetensors::save(&t, &out).unwrap();
    out
}

fn load_err(spec: &SingleFileSpec) -> LoadError {
    match StableDiffusion::load_single_file(spec, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", spec.path.display()),
        Err(e) => e,
    }
}

#[test]
fn broken_files_name_the_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let with_config = |path: PathBuf, fx: &str| SingleFileSpec {
        path,
        config: Some(fixture(fx).join("model")),
        prediction: None,
    };

    // Neither text-encoder layout.
    let p = edited("tiny-sd1", tmp.path(), |t| {
        t.retain(|k, _| !k.starts_with("cond_stage_model."))
    });
    let err = load_err(&with_config(p.clone(), "tiny-sd1"));
    let msg = err.to_string();
    assert!(
        matches!(err, LoadError::UnsupportedLayout { .. }),
        "{err:?}"
    );
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("no SD 1.x text encoder") && msg.contains("SD 2.x"),
        "{msg}"
    );
    assert!(msg.contains("`model.diffusion_model.*`"), "{msg}");

    // A missing UNet tensor is named as the file names it.
    let p = edited("tiny-sd1", tmp.path(), |t| {
        t.remove("model.diffusion_model.input_blocks.4.0.in_layers.2.weight");
    });
    let err = load_err(&with_config(p.clone(), "tiny-sd1"));
    let msg = err.to_string();
    assert!(matches!(err, LoadError::MissingTensor { .. }), "{err:?}");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("`model.diffusion_model.input_blocks.4.0.in_layers.2.weight`"),
        "{msg}"
    );
    assert!(msg.contains("[64, 32, 3, 3]"), "{msg}");

    // A wrong shape names both shapes (an OpenCLIP in_proj that cannot split in three).
    let p = edited("tiny-sd2v", tmp.path(), |t| {
        t.insert(
            "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias".into(),
            Tensor::zeros(100, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&with_config(p.clone(), "tiny-sd2v"));
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err:?}");
    assert!(
        msg.contains("`cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias`"),
        "{msg}"
    );
    assert!(msg.contains("[100]") && msg.contains("[48]"), "{msg}");

    // SDXL is refused by name.
    let p = edited("tiny-sd1", tmp.path(), |t| {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        t.insert(
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias".into(),
            x,
        );
    });
    let msg = load_err(&with_config(p, "tiny-sd1")).to_string();
    assert!(msg.contains("SDXL is not supported yet"), "{msg}");

    // A missing file says so.
    let msg = load_err(&SingleFileSpec::new(tmp.path().join("nope.safetensors"))).to_string();
    assert!(
        msg.contains("nope.safetensors") && msg.contains("no such"),
        "{msg}"
    );
}

#[test]
fn model_spec_options_and_prediction_sources() {
    let spec = ModelSpec::parse("/m/sd21.safetensors?config=cfg&prediction=v");
    assert_eq!(
        spec,
        ModelSpec::SingleFile {
            path: "/m/sd21.safetensors".into(),
            options: Some("config=cfg&prediction=v".into())
        }
    );
    let sf = spec.single_file().unwrap().unwrap();
    assert_eq!(sf.config, Some(PathBuf::from("/m/cfg")));
    assert_eq!(sf.prediction, Some(Prediction::V));
    assert!(matches!(
        ModelSpec::parse("models/x.CKPT"),
        ModelSpec::SingleFile { .. }
    ));
    assert!(matches!(
        ModelSpec::parse("models/sd15"),
        ModelSpec::Folder(_)
    ));
    let err = ModelSpec::parse("x.safetensors?colour=red")
        .single_file()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("colour") && err.contains("config=DIR"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("v-model.safetensors");
    std::fs::copy(fixture("tiny-sd2v/single_file.safetensors"), &file).unwrap();
    let open = |spec: SingleFileSpec| SingleFile::open(&spec).unwrap().configs;
    // Nothing says v: epsilon, and the report says why.
    let c = open(SingleFileSpec::new(&file));
    assert_eq!(c.prediction, Prediction::Epsilon);
    assert!(
        c.prediction_source.contains("does not say"),
        "{}",
        c.prediction_source
    );
    // The config folder's scheduler says v.
    let with_config = SingleFileSpec {
        config: Some(fixture("tiny-sd2v/model")),
        ..SingleFileSpec::new(&file)
    };
    assert_eq!(open(with_config.clone()).prediction, Prediction::V);
    // A sidecar yaml (A1111) beats the folder; an explicit flag beats both.
    std::fs::write(
        tmp.path().join("v-model.yaml"),
        "model:\n  params:\n    parameterization: \"eps\" # not v\n",
    )
    .unwrap();
    let c = open(with_config.clone());
    assert_eq!(c.prediction, Prediction::Epsilon);
    assert!(
        c.prediction_source.contains("v-model.yaml"),
        "{}",
        c.prediction_source
    );
    std::fs::write(
        tmp.path().join("v-model.yaml"),
        "    parameterization: \"v\"\n",
    )
    .unwrap();
    assert_eq!(open(SingleFileSpec::new(&file)).prediction, Prediction::V);
    let flagged = SingleFileSpec {
        prediction: Some(Prediction::Epsilon),
        ..with_config
    };
    assert_eq!(open(flagged).prediction, Prediction::Epsilon);
}

#[test]
fn workspace_style_spec_loads_with_the_right_tokenizer_and_prediction() {
    let file = fixture("tiny-sd2v/single_file.safetensors");
    let spec = format!(
        "{}?config={}",
        file.display(),
        fixture("tiny-sd2v/model").display()
    );
    let sd = StableDiffusion::load(&spec, &LoadOptions::default()).unwrap();
    assert_eq!(sd.prediction(), Prediction::V);
    assert_eq!(sd.text.first().tokenizer.pad, 0);
    assert_eq!(sd.name, "single_file");
    assert_eq!(text_encoder_widths(&ModelSpec::parse(&spec)).unwrap(), [48]);
    // Without a config folder the width comes from the checkpoint's shapes.
    let bare = ModelSpec::parse(file.to_str().unwrap());
    assert_eq!(text_encoder_widths(&bare).unwrap(), [48]);
}

#[test]
fn shipped_tokenizer_matches_the_fixture_tokenizers() {
    let prompt = "a photo of an astronaut riding a horse, trending on artstation!";
    for (fx, family) in [("tiny-sd1", Family::Sd1), ("tiny-sd2v", Family::Sd2)] {
        let reference = ClipTokenizer::from_dir(&fixture(fx).join("model/tokenizer")).unwrap();
        let shipped = shipped_tokenizer(family).unwrap();
        assert_eq!(shipped.pad, reference.pad, "{fx}");
        assert_eq!(
            shipped.tokenize(prompt, &[]),
            reference.tokenize(prompt, &[]),
            "{fx}"
        );
    }
}
