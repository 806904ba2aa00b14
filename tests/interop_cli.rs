//! `import`, `export`, `convert` and `inspect` through the binary: every
//! fixture layout converts, every export layout round-trips bit-exactly, pairs
//! become concepts whose words work in prompts, and refusals exit non-zero
//! with a message that names the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dreamartist::concept::Concept;
use dreamartist::generate::word_bank;
use dreamartist::interop::export::{export_word, ExportFormat, ExportWord};
use dreamartist::interop::{load_embedding_file, EmbeddingFormat};
use dreamartist::workspace::Workspace;

mod common;
use common::{assert_bitwise_same as assert_same, fails, fixtures, ok};

fn emb(file: &str) -> PathBuf {
    fixtures().join("embeddings").join(file)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(emb("expected.safetensors"), &Device::Cpu).unwrap()
}

/// `emb_params` of one of our (or kohya's) files, checked to be f32.
fn emb_params(path: &Path) -> Tensor {
    let t = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v = t["emb_params"].clone();
    assert_eq!(v.dtype(), DType::F32, "{}", path.display());
    v
}

/// The fixture files that load, with the word each becomes.
const LOADABLE: [(&str, &str); 8] = [
    ("astro.pt", "astro"),
    ("astro-neg.pt", "astro-neg"),
    ("kohya.safetensors", "kohya"),
    ("learned_embeds.bin", "cat-toy"),
    ("learned_embeds.safetensors", "cat-toy"),
    ("legacy.pt", "legacy"),
    ("onetrainer.safetensors", "onetrainer"),
    ("wide-sd2.pt", "wide-sd2"),
];

#[test]
fn every_fixture_converts_to_kohya() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = expected();
    for (i, (file, name)) in LOADABLE.iter().enumerate() {
        let out = tmp.path().join(i.to_string());
        let stdout = ok(&[
            "convert",
            s(&emb(file)),
            "--format",
            "kohya",
            "--out",
            s(&out),
        ]);
        let written = out.join(format!("{name}.safetensors"));
        assert!(stdout.contains(s(&written)), "{file}: {stdout}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "{file}");
        assert_same(
            &emb_params(&written),
            &expected[&format!("expected/{file}")],
            file,
        );
    }
}

#[test]
fn bad_files_exit_nonzero_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, says) in [
        ("truncated.pt", "truncated"),
        ("two-keys.safetensors", "cannot tell which tensor"),
    ] {
        let err = fails(&[
            "convert",
            s(&emb(file)),
            "--format",
            "kohya",
            "--out",
            s(tmp.path()),
        ]);
        assert!(err.contains(file) && err.contains(says), "{file}: {err}");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let err = fails(&[
        "convert",
        s(&emb("astro.pt")),
        "--format",
        "gif",
        "--out",
        s(tmp.path()),
    ]);
    assert!(err.contains("gif") && err.contains("onetrainer"), "{err}");
    // Two inputs with the same word would overwrite each other.
    let err = fails(&[
        "convert",
        s(&emb("learned_embeds.bin")),
        s(&emb("learned_embeds.safetensors")),
        "--format",
        "a1111",
        "--out",
        s(tmp.path()),
    ]);
    assert!(err.contains("cat-toy"), "{err}");
}

#[test]
fn a_pair_stays_a_pair_in_every_format_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = expected();
    let (astro, astro_neg) = (emb("astro.pt"), emb("astro-neg.pt"));
    for format in ExportFormat::NAMES {
        let out = tmp.path().join(format);
        let mut args = vec!["convert", s(&astro), s(&astro_neg)];
        args.extend(["--format", format, "--out", s(&out)]);
        ok(&args);
        let fmt = ExportFormat::parse(format).unwrap();
        for (word, file) in [("astro", "astro.pt"), ("astro-neg", "astro-neg.pt")] {
            let path = fmt.path_for(&out, word);
            let back = load_embedding_file(&path).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(back.name, word, "{format}");
            assert_same(
                &back.vectors,
                &expected[&format!("expected/{file}")],
                format,
            );
        }
    }
    // The layouts themselves.
    let d = tmp
        .path()
        .join("diffusers/astro-neg/learned_embeds.safetensors");
    let t = candle_core::safetensors::load(&d, &Device::Cpu).unwrap();
    assert_eq!(t.keys().collect::<Vec<_>>(), ["<astro-neg>"]);
    let o = tmp.path().join("onetrainer/astro.safetensors");
    let t = candle_core::safetensors::load(&o, &Device::Cpu).unwrap();
    assert_eq!(t.keys().collect::<Vec<_>>(), ["emp_params"]);
    // --name renames the pair.
    let out = tmp.path().join("renamed");
    ok(&[
        "convert",
        s(&emb("astro.pt")),
        s(&emb("astro-neg.pt")),
        "--format",
        "a1111",
        "--out",
        s(&out),
        "--name",
        "moon",
    ]);
    assert!(out.join("moon.safetensors").is_file() && out.join("moon-neg.safetensors").is_file());
}

/// A workspace whose model is a stand-in with a `width`-wide text encoder:
/// import only reads `text_encoder/config.json`.
fn workspace(dir: &Path, width: usize) -> PathBuf {
    workspace_widths(dir, &[width])
}

/// The same with one text encoder per width (`text_encoder`, `text_encoder_2`: SDXL's layout).
fn workspace_widths(dir: &Path, widths: &[usize]) -> PathBuf {
    let model = dir.join("model");
    for (i, width) in widths.iter().enumerate() {
        let folder = match i {
            0 => "text_encoder".to_string(),
            i => format!("text_encoder_{}", i + 1),
        };
        std::fs::create_dir_all(model.join(&folder)).unwrap();
        std::fs::write(
            model.join(folder).join("config.json"),
            format!(
                r#"{{"hidden_size": {width}, "intermediate_size": {}, "num_attention_heads": 12,
                    "num_hidden_layers": 12, "vocab_size": 49408}}"#,
                width * 4
            ),
        )
        .unwrap();
    }
    let ws = dir.join("ws");
    ok(&["init", s(&ws), "--model", s(&model)]);
    ws
}

#[test]
fn import_pairs_singles_and_negatives_into_a_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let ws_dir = workspace(tmp.path(), 768);
    let w = s(&ws_dir);
    let expected = expected();

    let out = ok(&[
        "import",
        s(&emb("astro.pt")),
        s(&emb("astro-neg.pt")),
        "-w",
        w,
    ]);
    assert!(
        out.contains("concept <astro>") && out.contains("3 + 6 vectors"),
        "{out}"
    );
    let ws = Workspace::open(&ws_dir).unwrap();
    let c = Concept::load(&ws, "astro").unwrap();
    assert_eq!((c.pos_vectors, c.neg_vectors), (3, 6));
    assert!(c.references.is_empty());
    let dir = ws.concept_dir("astro");
    assert_same(
        &emb_params(&dir.join("astro.safetensors")),
        &expected["expected/astro.pt"],
        "pos",
    );
    assert_same(
        &emb_params(&dir.join("astro-neg.safetensors")),
        &expected["expected/astro-neg.pt"],
        "neg",
    );

    ok(&["import", s(&emb("kohya.safetensors")), "-w", w]);
    ok(&[
        "import",
        s(&emb("learned_embeds.bin")),
        "--name",
        "toy",
        "-w",
        w,
    ]);
    assert_same(
        &emb_params(&ws_dir.join("embeddings/toy.safetensors")),
        &expected["expected/learned_embeds.bin"],
        "toy",
    );
    let bank = word_bank(&ws).unwrap();
    let mut names = bank.names();
    names.sort();
    assert_eq!(names, ["<astro-neg>", "<astro>", "<kohya>", "<toy>"]);

    // Refusals: wrong width, an existing concept or word, and a bad name.
    let err = fails(&["import", s(&emb("wide-sd2.pt")), "-w", w]);
    assert!(
        err.contains(
            "wide-sd2.pt: an SD 2.x embedding (1024-wide vectors) cannot be used with \
             this workspace's SD 1.x model (768-wide text encoder)"
        ),
        "{err}"
    );
    let err = fails(&[
        "import",
        s(&emb("astro.pt")),
        s(&emb("astro-neg.pt")),
        "-w",
        w,
    ]);
    assert!(
        err.contains("astro") && err.contains("already exists"),
        "{err}"
    );
    let err = fails(&[
        "import",
        s(&emb("onetrainer.safetensors")),
        "--name",
        "kohya",
        "-w",
        w,
    ]);
    assert!(err.contains("<kohya>"), "{err}");
    let err = fails(&["import", s(&emb("legacy.pt")), "--name", "a b", "-w", w]);
    assert!(err.contains("`a b`"), "{err}");
    let err = fails(&[
        "import",
        s(&emb("legacy.pt")),
        "--as-negative-of",
        "astro",
        "-w",
        w,
    ]);
    assert!(err.contains("already has a negative"), "{err}");
    let err = fails(&[
        "import",
        s(&emb("legacy.pt")),
        "--as-negative-of",
        "nobody",
        "-w",
        w,
    ]);
    assert!(err.contains("nobody") && err.contains("astro"), "{err}");

    // --as-negative-of: a concept made from a photo gets an imported negative.
    let photo = fixtures().join("references/chelsea.png");
    ok(&["concept", "add", "cat", "--reference", s(&photo), "-w", w]);
    ok(&[
        "import",
        s(&emb("legacy.pt")),
        "--as-negative-of",
        "cat",
        "-w",
        w,
    ]);
    let cat = Concept::load(&ws, "cat").unwrap();
    assert_eq!(cat.neg_vectors, 2);
    assert_same(
        &emb_params(&ws.concept_dir("cat").join("cat-neg.safetensors")),
        &expected["expected/legacy.pt"],
        "cat-neg",
    );
}

#[test]
fn export_then_import_is_bit_exact_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let ws_dir = workspace(tmp.path(), 768);
    let w = s(&ws_dir);
    let expected = expected();
    ok(&[
        "import",
        s(&emb("astro.pt")),
        s(&emb("astro-neg.pt")),
        "-w",
        w,
    ]);
    ok(&["import", s(&emb("onetrainer.safetensors")), "-w", w]);
    for format in ExportFormat::NAMES {
        let out = tmp.path().join("out").join(format);
        let stdout = ok(&[
            "export",
            "astro",
            "--format",
            format,
            "--out",
            s(&out),
            "-w",
            w,
        ]);
        assert_eq!(stdout.lines().count(), 2, "{format}: {stdout}");
        // Back into a fresh workspace: the pair is a concept again, bit for bit.
        let fresh = tempfile::tempdir().unwrap();
        let ws2 = workspace(fresh.path(), 768);
        let files: Vec<String> = stdout.lines().map(str::to_string).collect();
        let mut args = vec!["import".to_string()];
        args.extend(files);
        args.extend(["-w".into(), s(&ws2).into()]);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let d = ws2.join("concepts/astro");
        assert_same(
            &emb_params(&d.join("astro.safetensors")),
            &expected["expected/astro.pt"],
            format,
        );
        assert_same(
            &emb_params(&d.join("astro-neg.safetensors")),
            &expected["expected/astro-neg.pt"],
            format,
        );
        // A single word from embeddings/ exports too.
        let out1 = tmp.path().join("single").join(format);
        ok(&[
            "export",
            "onetrainer",
            "--format",
            format,
            "--out",
            s(&out1),
            "-w",
            w,
        ]);
        let path = ExportFormat::parse(format)
            .unwrap()
            .path_for(&out1, "onetrainer");
        assert_same(
            &load_embedding_file(&path).unwrap().vectors,
            &expected["expected/onetrainer.safetensors"],
            format,
        );
    }
    // The default output folder, and refusals.
    ok(&["export", "astro", "--format", "kohya", "-w", w]);
    assert!(ws_dir.join("exports/kohya/astro-neg.safetensors").is_file());
    let err = fails(&["export", "nothing", "--format", "kohya", "-w", w]);
    assert!(
        err.contains("nothing") && err.contains("astro") && err.contains("onetrainer"),
        "{err}"
    );
}

/// Random `[n, 32]` vectors written as a kohya file.
fn tiny_word(dir: &Path, name: &str, n: usize) -> PathBuf {
    let v = Tensor::randn(0f32, 0.1, (n, 32), &Device::Cpu).unwrap();
    export_word(
        &ExportWord {
            name,
            vectors: &v,
            widths: &[],
            step: None,
            checkpoint_name: None,
            checkpoint_hash: None,
        },
        ExportFormat::Kohya,
        dir,
    )
    .unwrap()
}

#[test]
fn imported_pair_works_in_prompts_and_is_not_trainable_without_references() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let model = fixtures().join("tiny-sd1/model");
    ok(&["init", s(&ws), "--model", s(&model)]);
    let pos = tiny_word(tmp.path(), "x", 2);
    let neg = tiny_word(tmp.path(), "x-neg", 3);
    ok(&["import", s(&neg), s(&pos), "-w", s(&ws)]);
    let img = tmp.path().join("x.png");
    let out = ok(&[
        "generate",
        "--prompt",
        "a photo of <x>",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "1",
        "--out",
        s(&img),
        "--json",
        "-w",
        s(&ws),
    ]);
    assert!(img.is_file(), "{out}");
    assert!(
        out.contains("<x-neg>"),
        "the negative word is added automatically: {out}"
    );
    let err = fails(&["train", "x", "-w", s(&ws), "--steps", "1"]);
    assert!(err.contains("no reference images"), "{err}");
}

#[test]
fn single_file_workspace_checks_widths_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let model = fixtures().join("tiny-sd2v/single_file.safetensors");
    ok(&["init", s(&ws), "--model", s(&model)]);
    let err = fails(&["import", s(&emb("astro.pt")), "-w", s(&ws)]);
    assert!(
        err.contains("an SD 1.x embedding (768-wide vectors)")
            && err.contains("this workspace's model (48-wide text encoder)"),
        "{err}"
    );
    let v = Tensor::randn(0f32, 0.1, (2, 48), &Device::Cpu).unwrap();
    let file = export_word(
        &ExportWord {
            name: "w48",
            vectors: &v,
            widths: &[],
            step: None,
            checkpoint_name: None,
            checkpoint_hash: None,
        },
        ExportFormat::A1111Pt,
        tmp.path(),
    )
    .unwrap();
    ok(&["import", s(&file), "-w", s(&ws)]);
    assert_same(
        &emb_params(&ws.join("embeddings/w48.safetensors")),
        &v,
        "w48",
    );
}

#[test]
fn inspect_describes_embeddings_and_checkpoints() {
    let out = ok(&["inspect", s(&emb("astro.pt"))]);
    for want in [
        "AUTOMATIC1111",
        "<astro>",
        "3 × 768 (SD 1.x)",
        "step:       1500",
        "v1-5-pruned-emaonly",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let out = ok(&["inspect", s(&emb("kohya.safetensors"))]);
    assert!(
        out.contains("emb_params") && out.contains("F16") && out.contains("5 × 768"),
        "{out}"
    );
    let out = ok(&[
        "inspect",
        s(&fixtures().join("tiny-sd2v/single_file.safetensors")),
    ]);
    for want in [
        "SD 2.x (OpenCLIP",
        "width 48, 3 layers",
        "channels [32, 64, 64]",
        "linear projections",
        "cross-attention width 48",
        "VAE:          channels [16, 32, 32, 32], 2 layer(s)",
        "prediction:   epsilon",
        "norm_num_groups",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let out = ok(&[
        "inspect",
        s(&fixtures().join("tiny-sd1/single_file.safetensors")),
    ]);
    assert!(
        out.contains("SD 1.x (CLIP") && out.contains("1x1 conv projections"),
        "{out}"
    );
    let err = fails(&["inspect", s(&emb("two-keys.safetensors"))]);
    assert!(
        err.contains("two-keys.safetensors") && err.contains("`a`"),
        "{err}"
    );
}

#[test]
fn selftest_binary_runs_on_a_single_file() {
    let fx = fixtures().join("tiny-sd2v");
    let out = ok(&[
        "selftest",
        s(&fx),
        "--model",
        s(&fx.join("single_file.safetensors")),
        "--kinds",
        "text_encode,unet,vae_decode",
    ]);
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

// ---- SDXL: `clip_l` + `clip_g` files ----

fn xl(file: &str) -> PathBuf {
    fixtures().join("tiny-sdxl/embeddings").join(file)
}

/// A fresh workspace `<dir>/ws` on the tiny SDXL model (text encoders 32 and 48 wide).
fn sdxl_workspace(dir: &Path) -> PathBuf {
    let ws = dir.join("ws");
    ok(&[
        "init",
        s(&ws),
        "--model",
        s(&fixtures().join("tiny-sdxl/model")),
    ]);
    ws
}

/// `clip_l` and `clip_g` of a fixture, widened to f32 (exact for f16).
fn fixture_blocks(path: &Path) -> (Tensor, Tensor) {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let f32 = |k: &str| t[k].to_dtype(DType::F32).unwrap();
    (f32("clip_l"), f32("clip_g"))
}

/// `clip_l` and `clip_g` of a written file, which must be f32 and its only tensors.
fn written_blocks(path: &Path) -> (Tensor, Tensor) {
    let t = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    assert_eq!(keys, ["clip_g", "clip_l"], "{}", path.display());
    for k in ["clip_l", "clip_g"] {
        assert_eq!(t[k].dtype(), DType::F32, "{}: {k}", path.display());
    }
    (t["clip_l"].clone(), t["clip_g"].clone())
}

/// The written file holds exactly the fixture's vectors.
fn assert_blocks(written: &Path, fixture: &Path) {
    let (l, g) = written_blocks(written);
    let (fl, fg) = fixture_blocks(fixture);
    let what = format!("{} vs {}", written.display(), fixture.display());
    assert_same(&l, &fl, &format!("clip_l of {what}"));
    assert_same(&g, &fg, &format!("clip_g of {what}"));
}

/// `dreamartist ARGS`, which must succeed: (stdout, stderr).
fn ok_both(args: &[&str]) -> (String, String) {
    let out = common::run_ok(common::bin().args(args));
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn sdxl_pair_imports_into_an_sdxl_workspace_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let ws_dir = sdxl_workspace(tmp.path());
    let w = s(&ws_dir);
    let out = ok(&[
        "import",
        s(&xl("pair.safetensors")),
        s(&xl("pair-neg.safetensors")),
        "-w",
        w,
    ]);
    assert!(
        out.contains("concept <pair>") && out.contains("3 + 6 vectors"),
        "{out}"
    );
    let ws = Workspace::open(&ws_dir).unwrap();
    let c = Concept::load(&ws, "pair").unwrap();
    assert_eq!((c.pos_vectors, c.neg_vectors), (3, 6));
    let dir = ws.concept_dir("pair");
    assert_blocks(&dir.join("pair.safetensors"), &xl("pair.safetensors"));
    assert_blocks(
        &dir.join("pair-neg.safetensors"),
        &xl("pair-neg.safetensors"),
    );
    // Our own SDXL files read back as the word: clip_l's columns, then clip_g's.
    let own = load_embedding_file(&dir.join("pair.safetensors")).unwrap();
    assert_eq!(
        (own.format, &own.widths[..]),
        (EmbeddingFormat::Dreamartist, &[32, 48][..])
    );
    let (fl, fg) = fixture_blocks(&xl("pair.safetensors"));
    assert_same(
        &own.vectors,
        &Tensor::cat(&[&fl, &fg], 1).unwrap(),
        "own file",
    );
    let out = ok(&["inspect", s(&dir.join("pair.safetensors"))]);
    assert!(
        out.contains("dreamartist (clip_l + clip_g + metadata)")
            && out.contains("3 × 80 (SDXL: clip_l 32 + clip_g 48)"),
        "{out}"
    );

    // f16 on disk: stored as f32, each value exactly the f16 one.
    ok(&[
        "import",
        s(&xl("pair-fp16.safetensors")),
        "--name",
        "half",
        "-w",
        w,
    ]);
    let half = ws_dir.join("embeddings/half.safetensors");
    assert_blocks(&half, &xl("pair-fp16.safetensors"));
    assert!(
        common::f32_bits(&written_blocks(&half).0)
            != common::f32_bits(&fixture_blocks(&xl("pair.safetensors")).0),
        "the f16 fixture differs from the f32 one"
    );

    // --as-negative-of
    let photo = fixtures().join("references/chelsea.png");
    ok(&["concept", "add", "cat", "--reference", s(&photo), "-w", w]);
    ok(&[
        "import",
        s(&xl("pair-neg.safetensors")),
        "--as-negative-of",
        "cat",
        "-w",
        w,
    ]);
    assert_eq!(Concept::load(&ws, "cat").unwrap().neg_vectors, 6);
    assert_blocks(
        &ws.concept_dir("cat").join("cat-neg.safetensors"),
        &xl("pair-neg.safetensors"),
    );
    let names = word_bank(&ws).unwrap().names();
    for want in ["<pair>", "<pair-neg>", "<half>", "<cat-neg>"] {
        assert!(names.contains(&want.to_string()), "{want}: {names:?}");
    }

    // The imported words work in prompts on the SDXL model.
    let img = tmp.path().join("pair.png");
    let out = ok(&[
        "generate",
        "--prompt",
        "a photo of <pair> and <half>",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "1",
        "--out",
        s(&img),
        "--json",
        "-w",
        w,
    ]);
    assert!(img.is_file() && out.contains("<pair-neg>"), "{out}");

    // Other families are refused, naming both sides; nothing is written.
    let err = fails(&["import", s(&emb("astro.pt")), "-w", w]);
    assert!(
        err.contains(
            "astro.pt: an SD 1.x embedding (768-wide vectors) cannot be used with this \
             workspace's SDXL model (clip_l 32 + clip_g 48)"
        ),
        "{err}"
    );
    let err = fails(&["import", s(&emb("sdxl.safetensors")), "-w", w]);
    assert!(
        err.contains(
            "sdxl.safetensors: an SDXL embedding (clip_l 768 + clip_g 1280) cannot be used \
             with this workspace's SDXL model (clip_l 32 + clip_g 48)"
        ),
        "{err}"
    );
    assert!(!ws_dir.join("embeddings/astro.safetensors").exists());
    assert!(!ws_dir.join("embeddings/sdxl.safetensors").exists());
}

#[test]
fn families_refuse_each_others_words_by_encoder_widths() {
    let tmp = tempfile::tempdir().unwrap();
    // A stand-in with SDXL's real widths: SD 1.x's 768 is its first encoder's width too.
    let xl_ws = workspace_widths(&tmp.path().join("xl"), &[768, 1280]);
    let err = fails(&["import", s(&emb("astro.pt")), "-w", s(&xl_ws)]);
    assert!(
        err.contains(
            "astro.pt: an SD 1.x embedding (768-wide vectors) cannot be used with this \
             workspace's SDXL model (clip_l 768 + clip_g 1280); an embedding only works with \
             the model family it was trained for"
        ),
        "{err}"
    );
    assert!(!xl_ws.join("embeddings/astro.safetensors").exists());
    ok(&["import", s(&emb("sdxl.safetensors")), "-w", s(&xl_ws)]);
    assert_blocks(
        &xl_ws.join("embeddings/sdxl.safetensors"),
        &emb("sdxl.safetensors"),
    );

    for (width, family) in [(768, "SD 1.x"), (1024, "SD 2.x")] {
        let ws = workspace(&tmp.path().join(width.to_string()), width);
        let err = fails(&["import", s(&emb("sdxl.safetensors")), "-w", s(&ws)]);
        let want = format!(
            "sdxl.safetensors: an SDXL embedding (clip_l 768 + clip_g 1280) cannot be used \
             with this workspace's {family} model ({width}-wide text encoder)"
        );
        assert!(err.contains(&want), "{err}");
        assert!(!ws.join("embeddings/sdxl.safetensors").exists());
    }
}

#[test]
fn sdxl_export_then_import_is_bit_exact_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let ws_dir = sdxl_workspace(&tmp.path().join("a"));
    let w = s(&ws_dir);
    ok(&[
        "import",
        s(&xl("pair.safetensors")),
        s(&xl("pair-neg.safetensors")),
        "-w",
        w,
    ]);
    for format in ExportFormat::NAMES {
        let out = tmp.path().join("out").join(format);
        let args = [
            "export",
            "pair",
            "--format",
            format,
            "--out",
            s(&out),
            "-w",
            w,
        ];
        if format == "a1111-pt" {
            let err = fails(&args);
            assert!(
                err.contains("<pair> is an SDXL word (clip_l 32 + clip_g 48)")
                    && err.contains("use --format a1111"),
                "{err}"
            );
            assert!(!out.exists(), "nothing is written");
            continue;
        }
        let (stdout, stderr) = ok_both(&args);
        let files: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
        assert_eq!(
            files,
            [
                out.join("pair.safetensors"),
                out.join("pair-neg.safetensors")
            ],
            "{format}"
        );
        assert_blocks(&files[0], &xl("pair.safetensors"));
        assert_blocks(&files[1], &xl("pair-neg.safetensors"));
        if format == "diffusers" {
            for want in [
                "from safetensors.torch import load_file".to_string(),
                format!("state_dict = load_file({:?})", s(&files[1])),
                "pipe.load_textual_inversion(state_dict[\"clip_g\"], token=\"<pair-neg>\", \
                 text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)"
                    .to_string(),
                "pipe.load_textual_inversion(state_dict[\"clip_l\"], token=\"<pair>\", \
                 text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)"
                    .to_string(),
                "<pair-neg> in negative_prompt".to_string(),
            ] {
                assert!(stderr.contains(&want), "missing {want:?} in\n{stderr}");
            }
        } else {
            assert!(!stderr.contains("load_textual_inversion"), "{stderr}");
        }
        // Back into a fresh workspace: the pair is a concept again, bit for bit.
        let ws2 = sdxl_workspace(&tmp.path().join("b").join(format));
        ok(&["import", s(&files[0]), s(&files[1]), "-w", s(&ws2)]);
        let d = ws2.join("concepts/pair");
        assert_blocks(&d.join("pair.safetensors"), &xl("pair.safetensors"));
        assert_blocks(&d.join("pair-neg.safetensors"), &xl("pair-neg.safetensors"));
    }
}

#[test]
fn sdxl_pairs_convert_and_stay_sdxl() {
    let tmp = tempfile::tempdir().unwrap();
    for format in ExportFormat::NAMES {
        let out = tmp.path().join(format);
        let (pos, neg) = (xl("pair.safetensors"), xl("pair-neg.safetensors"));
        let args = [
            "convert",
            s(&pos),
            s(&neg),
            "--format",
            format,
            "--out",
            s(&out),
        ];
        if format == "a1111-pt" {
            let err = fails(&args);
            assert!(err.contains("use --format a1111"), "{err}");
            assert!(!out.exists());
            continue;
        }
        ok(&args);
        for word in ["pair", "pair-neg"] {
            let path = out.join(format!("{word}.safetensors"));
            assert_blocks(&path, &xl(&format!("{word}.safetensors")));
            let back = load_embedding_file(&path).unwrap();
            assert_eq!(
                (back.name.as_str(), &back.widths[..]),
                (word, &[32, 48][..])
            );
        }
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2, "{format}");
    }
    // The real-size fixture and the f16 one too.
    let out = tmp.path().join("single");
    ok(&[
        "convert",
        s(&emb("sdxl.safetensors")),
        s(&xl("pair-fp16.safetensors")),
        "--format",
        "kohya",
        "--out",
        s(&out),
    ]);
    assert_blocks(&out.join("sdxl.safetensors"), &emb("sdxl.safetensors"));
    assert_blocks(
        &out.join("pair-fp16.safetensors"),
        &xl("pair-fp16.safetensors"),
    );
    // A "pair" of two families is refused.
    let sd1 = tmp.path().join("sd1");
    let neg = tiny_word(&sd1, "pair-neg", 2);
    let err = fails(&[
        "convert",
        s(&xl("pair.safetensors")),
        s(&neg),
        "--format",
        "kohya",
        "--out",
        s(&tmp.path().join("mixed")),
    ]);
    assert!(
        err.contains("would be a DreamArtist pair")
            && err.contains("an SDXL embedding (clip_l 32 + clip_g 48)")
            && err.contains("an embedding of 32-wide vectors"),
        "{err}"
    );
    assert!(!tmp.path().join("mixed").exists());
}

#[test]
fn inspect_describes_sdxl_embeddings() {
    let out = ok(&["inspect", s(&emb("sdxl.safetensors"))]);
    for want in [
        "sdxl.safetensors: embedding, SDXL clip_l + clip_g",
        "stored as F32",
        "<sdxl>",
        "2 × 2048 (SDXL: clip_l 768 + clip_g 1280)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let out = ok(&["inspect", s(&xl("pair-fp16.safetensors"))]);
    for want in [
        "stored as F16",
        "<pair-fp16>",
        "3 × 80 (SDXL: clip_l 32 + clip_g 48)",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

/// `--as-negative-of` names a concept folder: one that climbs out of the
/// workspace is refused and nothing is written there.
#[test]
fn as_negative_of_cannot_escape_the_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), 768);
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("concept.toml"),
        "name = \"../../outside\"\npos_vectors = 1\nneg_vectors = 1\ninit_text = \"*\"\nreferences = []\n[train]\n",
    )
    .unwrap();
    let before = std::fs::read(outside.join("concept.toml")).unwrap();
    let err = fails(&[
        "import",
        emb("astro-neg.pt").to_str().unwrap(),
        "--as-negative-of",
        "../../outside",
        "-w",
        ws.to_str().unwrap(),
    ]);
    assert!(err.contains("invalid concept name"), "{err}");
    assert_eq!(std::fs::read(outside.join("concept.toml")).unwrap(), before);
    assert!(!outside.join("outside-neg.safetensors").exists());
}

/// A word with NaN values (a diverged run's file) is named by `inspect` and
/// refused by `import` and `convert`.
#[test]
fn non_finite_embeddings_are_reported_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), 768);
    let file = tmp.path().join("nan.safetensors");
    let mut v = vec![0.01f32; 2 * 768];
    v[5] = f32::NAN;
    v[700] = f32::INFINITY;
    let t = Tensor::from_vec(v, (2, 768), &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("emb_params".to_string(), t)]), &file).unwrap();
    let out = ok(&["inspect", s(&file)]);
    assert!(
        out.contains("2 of 1536 values are NaN or infinite"),
        "{out}"
    );
    let err = fails(&["import", s(&file), "-w", s(&ws)]);
    assert!(
        err.contains("NaN or infinite") && err.contains("nan.safetensors"),
        "{err}"
    );
    assert!(!ws.join("embeddings/nan.safetensors").exists());
    let out_dir = tmp.path().join("out");
    let err = fails(&[
        "convert",
        s(&file),
        "--format",
        "kohya",
        "--out",
        s(&out_dir),
    ]);
    assert!(err.contains("NaN or infinite"), "{err}");
}
