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
use dreamartist::sd::single_file::shipped_tokenizer_with_pad;
use dreamartist::sd::single_file::{
    shipped_tokenizer, ConfigOrigin, Family, SingleFile, SingleFileSpec,
};
use dreamartist::sd::{ClipTokenizer, LoadError, LoadOptions, ModelSpec, StableDiffusion};
use dreamartist::selftest::{run_fixture, Outcome, SelftestOptions, Summary};

mod common;
use common::f32_bits as bits;
use common::ldm_sdxl;

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

/// Runs every case of fixture `fx` on `model` (sizes from the fixture's
/// `model/` folder); all must pass, and there must be at least `cases`.
fn check_selftest_n(fx: &Path, model: PathBuf, cases: usize) {
    let opts = SelftestOptions {
        model: Some(model),
        ..Default::default()
    };
    let results = run_fixture(fx, &opts, |_| {}).expect("fixture runs");
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Pass { .. }))
        .map(|r| r.line())
        .collect();
    assert!(
        failures.is_empty(),
        "{}:\n{}",
        fx.display(),
        failures.join("\n")
    );
    assert!(Summary::of(&results).passed >= cases, "{}", fx.display());
}

fn check_selftest(fx: &str, model: PathBuf) {
    check_selftest_n(&fixture(fx), model, 30);
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

    // A stray SDXL key makes it an SDXL file, and one without its encoders.
    let p = edited("tiny-sd1", tmp.path(), |t| {
        let x = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        t.insert(
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias".into(),
            x,
        );
    });
    let msg = load_err(&with_config(p, "tiny-sd1")).to_string();
    assert!(
        msg.contains("SDXL checkpoint") && msg.contains("without its first text encoder"),
        "{msg}"
    );

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

// ---------------------------------------------------------------------------
// SDXL: the fixture ships no single file, so the tests write one from its
// diffusers folder (`common/ldm_sdxl.rs`, the inverse mapping written from the
// LDM naming rules) and read it back.

/// The tiny SDXL model as an original single file in `dir`.
fn sdxl_file(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-sdxl.safetensors");
    ldm_sdxl::convert(&fixture("tiny-sdxl/model"), &out).expect("writes the SDXL single file");
    out
}

fn sdxl_spec(path: &Path) -> SingleFileSpec {
    SingleFileSpec {
        path: path.to_path_buf(),
        config: Some(fixture("tiny-sdxl/model")),
        prediction: None,
    }
}

#[test]
fn tiny_sdxl_single_file_passes_every_case() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sdxl_file(tmp.path());
    check_selftest_n(&fixture("tiny-sdxl"), file.clone(), 23);
    // The same tensors in a Lightning `.ckpt`, read through the safe pickle reader.
    let ckpt = tmp.path().join("tiny-sdxl.ckpt");
    write_ckpt(&file, &ckpt, true);
    check_selftest_n(&fixture("tiny-sdxl"), ckpt.clone(), 23);
    let sf = SingleFile::open(&sdxl_spec(&ckpt)).unwrap();
    assert_eq!(sf.layout.family, Family::Sdxl);
}

#[test]
fn sdxl_file_has_the_names_real_checkpoints_use() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sdxl_file(tmp.path());
    let st = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    // Names as in sd_xl_base_1.0.safetensors (same block arithmetic: 3 levels,
    // 2 resnets each, no attention in the first, upsamplers after attention).
    for name in [
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.label_emb.0.2.bias",
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.4.1.proj_in.weight",
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.6.0.op.weight",
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.1.ff.net.0.proj.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.1.norm3.weight",
        "model.diffusion_model.middle_block.2.emb_layers.1.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.2.mlp.fc2.weight",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.token_embedding.weight",
        "conditioner.embedders.1.model.positional_embedding",
        "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight",
        "conditioner.embedders.1.model.transformer.resblocks.2.mlp.c_proj.bias",
        "conditioner.embedders.1.model.ln_final.bias",
        "conditioner.embedders.1.model.text_projection",
        "conditioner.embedders.1.model.logit_scale",
    ] {
        assert!(st.contains_key(name), "{name} not written");
    }
    assert_eq!(
        st["conditioner.embedders.1.model.text_projection"].dims(),
        [48, 24]
    );
    assert_eq!(
        st["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"].dims(),
        [144, 48]
    );
    assert_eq!(
        st["first_stage_model.decoder.mid.attn_1.proj_out.weight"].dims(),
        [32, 32, 1, 1]
    );
    assert!(!st.keys().any(|k| k.starts_with("cond_stage_model.")));
}

#[test]
fn sdxl_mapped_tensors_equal_the_diffusers_folder_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sdxl_file(tmp.path());
    let sf = SingleFile::open(&sdxl_spec(&file)).unwrap();
    assert_eq!(sf.layout.family, Family::Sdxl);
    let sources = [
        ("text_encoder/model.safetensors", sf.text_encoder_source()),
        (
            "text_encoder_2/model.safetensors",
            sf.text_encoder_2_source()
                .expect("SDXL has a second encoder"),
        ),
        (
            "unet/diffusion_pytorch_model.safetensors",
            sf.unet_source().unwrap(),
        ),
        ("vae/diffusion_pytorch_model.safetensors", sf.vae_source()),
    ];
    let mut read = std::collections::BTreeSet::new();
    for (part, src) in sources {
        let want =
            candle_core::safetensors::load(fixture("tiny-sdxl/model").join(part), &Device::Cpu)
                .unwrap();
        assert!(want.len() > 20, "{part}");
        for (name, t) in &want {
            assert_eq!(
                src.shape(name).as_deref(),
                Some(t.dims()),
                "{part}: {name} ({})",
                src.describe(name)
            );
            let got = src.load(name, &Device::Cpu).unwrap();
            assert!(bits(&got) == bits(t), "{part}: {name} differs");
            read.insert(src.describe(name));
        }
    }
    // Every tensor of the file is read, except the keys real files carry for
    // their own modules (which a loader must skip).
    let all = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let unread: Vec<&String> = all.keys().filter(|k| !read.contains(*k)).collect();
    let mut unread: Vec<&str> = unread.iter().map(|s| s.as_str()).collect();
    unread.sort();
    assert_eq!(
        unread,
        [
            "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
            "conditioner.embedders.1.model.logit_scale",
            "denoiser.sigmas",
        ]
    );
}

#[test]
fn sdxl_shapes_alone_reproduce_the_fixture_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sdxl_file(tmp.path());
    let read = |c: &str| -> serde_json::Value {
        let path = fixture("tiny-sdxl/model").join(c).join("config.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let sf = SingleFile::open(&SingleFileSpec::new(&file)).unwrap();
    assert_eq!(sf.layout.family, Family::Sdxl);
    let ConfigOrigin::Inferred(inf) = &sf.configs.origin else {
        panic!("configs not inferred");
    };
    let text_keys = [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "max_position_embeddings",
        "hidden_act",
        "vocab_size",
    ];
    let te = read("text_encoder");
    for key in text_keys {
        assert_eq!(inf.text[key], te[key], "text_encoder {key}");
    }
    let te2 = read("text_encoder_2");
    let inf2 = inf.text_2.as_ref().expect("second encoder inferred");
    // Unlike SD 2.x, every OpenCLIP block is part of SDXL's encoder.
    for key in text_keys.iter().copied().chain(["projection_dim"]) {
        assert_eq!(inf2[key], te2[key], "text_encoder_2 {key}");
    }
    let unet = read("unet");
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
        "addition_embed_type",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
    ] {
        assert_eq!(inf.unet[key], unet[key], "unet {key}");
    }
    let vae = read("vae");
    for key in [
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "latent_channels",
        "scaling_factor",
        "use_quant_conv",
        "use_post_quant_conv",
        "mid_block_add_attention",
    ] {
        assert_eq!(inf.vae[key], vae[key], "vae {key}");
    }
    // The schedule SDXL was trained with.
    let s = &sf.configs.scheduler;
    assert_eq!(
        (
            s.num_train_timesteps,
            s.beta_schedule.as_str(),
            s.prediction_type.as_str()
        ),
        (1000, "scaled_linear", "epsilon")
    );
    assert_eq!((s.beta_start, s.beta_end), (0.00085, 0.012));
    let assumed = inf.assumed.join("\n");
    for what in [
        "text encoder num_attention_heads",
        "text encoder 2 num_attention_heads",
        "UNet attention heads",
        "UNet norm_num_groups",
        "VAE norm_num_groups",
        "VAE scaling_factor (0.13025)",
        "VAE sample_size (1024",
    ] {
        assert!(assumed.contains(what), "{what} not listed in\n{assumed}");
    }
    // The widths without a config folder, and with one.
    let widths = |spec: &str| text_encoder_widths(&ModelSpec::parse(spec)).unwrap();
    assert_eq!(widths(file.to_str().unwrap()), [32, 48]);
    let with_config = format!(
        "{}?config={}",
        file.display(),
        fixture("tiny-sdxl/model").display()
    );
    assert_eq!(widths(&with_config), [32, 48]);
}

/// Copies `src` into `dst` recursively (configs and tokenizers only: the
/// weights come from the single file).
fn copy_configs(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_configs(&e.path(), &to);
        } else if !e.path().to_string_lossy().ends_with(".safetensors") {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

#[test]
fn sdxl_inferred_sizes_pass_every_case_given_the_conventions() {
    // The tiny model's heads and group-norm groups do not follow SDXL's
    // conventions (64-wide heads, 32 groups), so a file alone cannot pass. Here
    // the configs are the inferred ones with only those documented assumptions
    // replaced by the fixture's values, and no tokenizer folders (the shipped
    // vocabulary, with each tokenizer's pad): that must pass every case.
    let tmp = tempfile::tempdir().unwrap();
    let file = sdxl_file(tmp.path());
    let sf = SingleFile::open(&SingleFileSpec::new(&file)).unwrap();
    let ConfigOrigin::Inferred(inf) = &sf.configs.origin else {
        panic!("configs not inferred");
    };
    let fx = fixture("tiny-sdxl");
    let cfg_dir = tmp.path().join("inferred");
    copy_configs(&fx.join("model"), &cfg_dir);
    std::fs::remove_dir_all(cfg_dir.join("tokenizer")).unwrap();
    std::fs::remove_dir_all(cfg_dir.join("tokenizer_2")).unwrap();
    let fixture_cfg = |c: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(cfg_dir.join(c).join("config.json")).unwrap())
            .unwrap()
    };
    let mut unet = inf.unet.clone();
    let mut vae = inf.vae.clone();
    let (fu, fv) = (fixture_cfg("unet"), fixture_cfg("vae"));
    for key in ["attention_head_dim", "norm_num_groups"] {
        assert_ne!(unet[key], fu[key], "unet {key} now follows the convention");
        unet[key] = fu[key].clone();
    }
    for key in ["norm_num_groups", "sample_size"] {
        assert_ne!(vae[key], fv[key], "vae {key} now follows the convention");
        vae[key] = fv[key].clone();
    }
    let write = |c: &str, v: &serde_json::Value| {
        std::fs::write(
            cfg_dir.join(c).join("config.json"),
            serde_json::to_string_pretty(v).unwrap(),
        )
        .unwrap()
    };
    // The text encoders' 8-wide fallback heads happen to be the tiny model's.
    write("text_encoder", &inf.text);
    write("text_encoder_2", inf.text_2.as_ref().unwrap());
    write("unet", &unet);
    write("vae", &vae);
    // A fixture folder whose cases and goldens are tiny-sdxl's, with `model/` the configs above.
    let cases = std::fs::read_to_string(fx.join("cases.toml"))
        .unwrap()
        .replace("model = \"model\"", "model = \"inferred\"")
        .replace(
            "tensors = \"goldens.safetensors\"",
            &format!(
                "tensors = {:?}",
                fx.join("goldens.safetensors").display().to_string()
            ),
        );
    assert!(cases.contains("model = \"inferred\""));
    std::fs::write(tmp.path().join("cases.toml"), cases).unwrap();
    check_selftest_n(tmp.path(), file, 23);
}

#[test]
fn sdxl_shipped_tokenizers_match_the_fixture_tokenizers() {
    let prompt = "a photo of an astronaut riding a horse, trending on artstation!";
    for (folder, shipped) in [
        ("tokenizer", shipped_tokenizer(Family::Sdxl).unwrap()),
        ("tokenizer_2", shipped_tokenizer_with_pad("!").unwrap()),
    ] {
        let reference = ClipTokenizer::from_dir(&fixture("tiny-sdxl/model").join(folder)).unwrap();
        assert_eq!(shipped.pad, reference.pad, "{folder}");
        assert_eq!(
            shipped.tokenize(prompt, &[]),
            reference.tokenize(prompt, &[]),
            "{folder}"
        );
    }
}

/// Rewrites the tiny SDXL single file with `edit` applied to its tensors.
fn sdxl_edited(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> PathBuf {
    let mut t = candle_core::safetensors::load(sdxl_file(dir), &Device::Cpu).unwrap();
    edit(&mut t);
    let out = dir.join("tiny-sdxl-edited.safetensors");
    candle_core::safetensors::save(&t, &out).unwrap();
    out
}

#[test]
fn broken_sdxl_files_name_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = |p: &Path| SingleFileSpec::new(p);

    // No second text encoder: with the configs and without, the same message.
    let p = sdxl_edited(tmp.path(), |t| {
        t.retain(|k, _| !k.starts_with("conditioner.embedders.1."))
    });
    for spec in [sdxl_spec(&p), bare(&p)] {
        let err = load_err(&spec);
        let msg = err.to_string();
        assert!(
            matches!(err, LoadError::UnsupportedLayout { .. }),
            "{err:?}"
        );
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(
            msg.contains("without its second text encoder")
                && msg.contains("`conditioner.embedders.1.model.")
                && msg.contains("use the full checkpoint"),
            "{msg}"
        );
    }
    assert!(text_encoder_widths(&ModelSpec::parse(p.to_str().unwrap()))
        .unwrap_err()
        .to_string()
        .contains("second text encoder"));

    // A truncated file (an interrupted download), as safetensors and as .ckpt.
    let whole = std::fs::read(sdxl_file(tmp.path())).unwrap();
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    for spec in [sdxl_spec(&cut), bare(&cut)] {
        let err = load_err(&spec);
        let msg = err.to_string();
        assert!(matches!(err, LoadError::BadWeights { .. }), "{err:?}");
        assert!(
            msg.contains(&cut.display().to_string()) && msg.contains("truncated"),
            "{msg}"
        );
    }
    let ckpt = tmp.path().join("whole.ckpt");
    write_ckpt(&sdxl_file(tmp.path()), &ckpt, true);
    let bytes = std::fs::read(&ckpt).unwrap();
    let cut = tmp.path().join("cut.ckpt");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let msg = load_err(&sdxl_spec(&cut)).to_string();
    assert!(msg.contains(&cut.display().to_string()), "{msg}");

    // A mis-shaped added embedding (`label_emb`): the configs name both shapes;
    // read off the shapes, the arithmetic that fails is named.
    let p = sdxl_edited(tmp.path(), |t| {
        t.insert(
            "model.diffusion_model.label_emb.0.0.weight".into(),
            Tensor::zeros((128, 71), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&sdxl_spec(&p));
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err:?}");
    assert!(
        msg.contains(&p.display().to_string())
            && msg.contains("`model.diffusion_model.label_emb.0.0.weight`")
            && msg.contains("[128, 71]")
            && msg.contains("[128, 72]"),
        "{msg}"
    );
    let err = load_err(&bare(&p));
    let msg = err.to_string();
    assert!(
        matches!(err, LoadError::UnsupportedLayout { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains(&p.display().to_string())
            && msg.contains("`model.diffusion_model.label_emb.0.0.weight` has shape [128, 71]")
            && msg.contains("6 × time-id width"),
        "{msg}"
    );
    let p = sdxl_edited(tmp.path(), |t| {
        t.insert(
            "model.diffusion_model.label_emb.0.2.weight".into(),
            Tensor::zeros((128, 64), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    for spec in [sdxl_spec(&p), bare(&p)] {
        let msg = load_err(&spec).to_string();
        assert!(
            msg.contains("`model.diffusion_model.label_emb.0.2.weight`")
                && msg.contains("[128, 64]")
                && msg.contains("[128, 128]"),
            "{msg}"
        );
    }

    // No pooled projection: named as the file names it.
    let p = sdxl_edited(tmp.path(), |t| {
        t.remove("conditioner.embedders.1.model.text_projection");
    });
    let err = load_err(&sdxl_spec(&p));
    assert!(matches!(err, LoadError::MissingTensor { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("`conditioner.embedders.1.model.text_projection`"),
        "{err}"
    );

    // An SD 1.x config folder for an SDXL file, and the other way round.
    let file = sdxl_file(tmp.path());
    let err = load_err(&SingleFileSpec {
        config: Some(fixture("tiny-sd1/model")),
        ..SingleFileSpec::new(&file)
    });
    let msg = err.to_string();
    assert!(matches!(err, LoadError::BadConfig { .. }), "{err:?}");
    assert!(
        msg.contains("describes an SD 1.x model") && msg.contains("is SDXL"),
        "{msg}"
    );
    let msg = load_err(&SingleFileSpec {
        config: Some(fixture("tiny-sdxl/model")),
        ..SingleFileSpec::new(fixture("tiny-sd1/single_file.safetensors"))
    })
    .to_string();
    assert!(
        msg.contains("describes an SDXL model") && msg.contains("is SD 1.x"),
        "{msg}"
    );

    // The refiner (one OpenCLIP-G at embedders.0) is refused by name.
    let p = sdxl_edited(tmp.path(), |t| {
        let keys: Vec<String> = t.keys().cloned().collect();
        for k in keys {
            if k.starts_with("conditioner.") {
                let v = t.remove(&k).unwrap();
                if let Some(rest) = k.strip_prefix("conditioner.embedders.1.") {
                    t.insert(format!("conditioner.embedders.0.{rest}"), v);
                }
            }
        }
    });
    let msg = load_err(&bare(&p)).to_string();
    assert!(msg.contains("SDXL refiner"), "{msg}");
}

#[test]
fn inspect_reports_an_sdxl_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sdxl_file(tmp.path());
    let out = dreamartist::interop::inspect::inspect(&file, None)
        .unwrap()
        .to_string();
    for want in [
        "SDXL (CLIP-L + OpenCLIP-G",
        "text encoder: width 32, 3 layers, 4 heads, MLP 64",
        "quick_gelu",
        "text encoder 2: width 48, 3 layers, 6 heads, MLP 96, vocabulary 49408, 77 positions, gelu, pooled projection 24",
        "cross-attention width 80",
        "transformer depth [1, 1, 2]",
        "added embedding (text_time): pooled text 24 + 6 time ids × 8 = 72 → 128",
        "scaling factor 0.13025",
        "- UNet attention heads",
        "- VAE scaling_factor (0.13025)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let out = dreamartist::interop::inspect::inspect(&file, Some(&fixture("tiny-sdxl/model")))
        .unwrap()
        .to_string();
    assert!(
        out.contains("text encoder 2: width 48") && out.contains("configs:      from"),
        "{out}"
    );
}
