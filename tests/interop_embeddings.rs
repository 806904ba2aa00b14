//! Every embedding layout of tests/fixtures/embeddings (written by torch and
//! safetensors as each tool saves them) loads to exactly the expected vectors;
//! every bad file is refused with a message that names it and says why.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dreamartist::interop::export::{export_word, ExportFormat, ExportWord};
use dreamartist::interop::{load_embedding_file, EmbeddingFormat, InteropError};

mod common;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embeddings")
}

fn index() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("index.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("expected.safetensors"), &Device::Cpu).unwrap()
}

/// Bitwise equality with the expected vectors, which must load as f32.
fn assert_same(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dtype(), DType::F32, "{what}: dtype");
    common::assert_bitwise_same(actual, expected, what);
}

fn loadable() -> Vec<String> {
    index()["load"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// An SDXL file's vectors as the tools use them: `clip_l`'s columns, then
/// `clip_g`'s, read here by candle's own loader.
fn sdxl_expected(path: &Path) -> Tensor {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let (l, g) = (&t["clip_l"], &t["clip_g"]);
    Tensor::cat(&[l, g], 1)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

#[test]
fn every_loadable_file_yields_the_expected_vectors() {
    let expected = expected();
    let files = loadable();
    assert_eq!(files.len(), 9);
    for f in &files {
        let e = load_embedding_file(&dir().join(f)).unwrap_or_else(|err| panic!("{f}: {err}"));
        // expected.safetensors predates SDXL support; the SDXL file is its own reference.
        let want = match expected.get(&format!("expected/{f}")) {
            Some(t) => t.clone(),
            None if f == "sdxl.safetensors" => sdxl_expected(&dir().join(f)),
            None => panic!("{f}: no expected vectors"),
        };
        assert_same(&e.vectors, &want, f);
    }
}

#[test]
fn names_steps_and_formats_are_kept() {
    let load = |f: &str| load_embedding_file(&dir().join(f)).unwrap();
    let astro = load("astro.pt");
    assert_eq!(astro.name, "astro");
    assert_eq!(astro.format, EmbeddingFormat::A1111);
    assert_eq!(astro.step, Some(1500));
    assert_eq!(astro.stored_name.as_deref(), Some("astro"));
    assert_eq!(
        astro.checkpoint_name.as_deref(),
        Some("v1-5-pruned-emaonly")
    );
    assert_eq!(astro.checkpoint_hash.as_deref(), Some("e1441589"));
    assert_eq!(load("astro-neg.pt").name, "astro-neg");
    let legacy = load("legacy.pt");
    assert_eq!((legacy.name.as_str(), legacy.step), ("legacy", Some(10)));
    assert!(legacy.container.contains("legacy"), "{}", legacy.container);
    // A1111 calls a word by its file name; the stored name is kept aside.
    let wide = load("wide-sd2.pt");
    assert_eq!(wide.name, "wide-sd2");
    assert_eq!(wide.stored_name.as_deref(), Some("wide"));
    for f in ["learned_embeds.bin", "learned_embeds.safetensors"] {
        let e = load(f);
        assert_eq!(e.name, "cat-toy", "{f}");
        assert_eq!(e.format, EmbeddingFormat::Diffusers, "{f}");
    }
    let kohya = load("kohya.safetensors");
    assert_eq!(kohya.format, EmbeddingFormat::Kohya);
    assert_eq!(kohya.stored_dtype, "F16");
    assert_eq!(
        load("onetrainer.safetensors").format,
        EmbeddingFormat::OneTrainer
    );
}

#[test]
fn refused_files_say_why_and_name_the_file() {
    let refused: Vec<String> = index()["refuse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(refused, ["truncated.pt", "two-keys.safetensors"]);
    let err = |f: &str| -> InteropError {
        match load_embedding_file(&dir().join(f)) {
            Ok(_) => panic!("{f} loaded"),
            Err(e) => e,
        }
    };

    let e = err("truncated.pt");
    let msg = e.to_string();
    assert!(matches!(e, InteropError::Corrupt { .. }), "{e:?}");
    assert!(
        msg.contains("truncated.pt") && msg.contains("truncated"),
        "{msg}"
    );

    let e = err("two-keys.safetensors");
    let msg = e.to_string();
    assert!(matches!(e, InteropError::Ambiguous { .. }), "{e:?}");
    assert!(msg.contains("two-keys.safetensors"), "{msg}");
    assert!(msg.contains("2 tensors"), "{msg}");
    assert!(
        msg.contains("`a` [1, 768] F32") && msg.contains("`b` [1, 768] F32"),
        "{msg}"
    );
}

#[test]
fn width_check_names_both_widths() {
    let wide = load_embedding_file(&dir().join("wide-sd2.pt")).unwrap();
    assert_eq!((wide.width(), wide.widths.as_slice()), (1024, &[1024][..]));
    wide.check_width(&[1024]).unwrap();
    let msg = wide.check_width(&[768]).unwrap_err().to_string();
    assert!(msg.contains("wide-sd2.pt"), "{msg}");
    assert!(
        msg.contains("an SD 2.x embedding (1024-wide vectors)"),
        "{msg}"
    );
    assert!(
        msg.contains("SD 1.x model (768-wide text encoder)"),
        "{msg}"
    );
    let astro = load_embedding_file(&dir().join("astro.pt")).unwrap();
    astro.check_width(&[768]).unwrap();
    assert!(astro.check_width(&[1024]).is_err());
}

#[test]
fn truncated_legacy_and_safetensors_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (f, cut) in [
        ("legacy.pt", 3000),
        ("legacy.pt", 300),
        ("kohya.safetensors", 4000),
    ] {
        let bytes = std::fs::read(dir().join(f)).unwrap();
        let p = tmp.path().join(f);
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_embedding_file(&p).err().unwrap();
        let msg = e.to_string();
        assert!(
            matches!(e, InteropError::Corrupt { .. }),
            "{f}[..{cut}]: {e:?}"
        );
        assert!(msg.contains("truncated"), "{msg}");
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }
}

/// A torch zip file with the given pickle and one f32 storage `0`.
fn torch_zip(path: &Path, pickle: &[u8], storage: &[f32]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(pickle).unwrap();
    w.start_file("archive/byteorder", opts).unwrap();
    w.write_all(b"little").unwrap();
    w.start_file("archive/data/0", opts).unwrap();
    for x in storage {
        w.write_all(&x.to_le_bytes()).unwrap();
    }
    w.finish().unwrap();
}

/// `{"string_to_param": {"*": _rebuild_tensor_v2(storage 0, offset, size, stride)}}`.
fn a1111_pickle(offset: u8, size: (u8, u8), stride: (u8, u8)) -> Vec<u8> {
    let mut p = b"\x80\x02}X\x0f\x00\x00\x00string_to_param}X\x01\x00\x00\x00*".to_vec();
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x10tQ");
    p.extend([b'K', offset, b'K', size.0, b'K', size.1, 0x86]);
    p.extend([b'K', stride.0, b'K', stride.1, 0x86]);
    p.extend(b"\x89ccollections\nOrderedDict\n)RtRss.");
    p
}

#[test]
fn storage_offset_and_strides_are_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Vec<f32> = (0..16).map(|i| i as f32).collect();
    // A transposed view: 3 vectors of width 2 starting at element 4, column-major.
    let p = tmp.path().join("view.pt");
    torch_zip(&p, &a1111_pickle(4, (3, 2), (1, 3)), &storage);
    let e = load_embedding_file(&p).unwrap();
    assert_eq!(
        e.vectors.to_vec2::<f32>().unwrap(),
        vec![vec![4.0, 7.0], vec![5.0, 8.0], vec![6.0, 9.0]]
    );
    // A view reaching past its storage is a damaged file, not a panic.
    let p = tmp.path().join("past.pt");
    torch_zip(&p, &a1111_pickle(10, (4, 2), (2, 1)), &storage);
    let msg = load_embedding_file(&p).unwrap_err().to_string();
    assert!(msg.contains("past the end of storage"), "{msg}");
}

#[test]
fn code_in_a_pickle_is_refused_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("evil.pt");
    let pickle = b"\x80\x02}X\x0f\x00\x00\x00string_to_paramcposix\nsystem\nX\x0b\x00\x00\x00touch /tmp/x\x85Rs.";
    torch_zip(&p, pickle, &[0.0]);
    let e = load_embedding_file(&p).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, InteropError::Unsafe { .. }), "{e:?}");
    assert!(
        msg.contains("evil.pt") && msg.contains("posix.system"),
        "{msg}"
    );
}

#[test]
fn a1111_pt_writer_round_trips_through_the_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let astro = load_embedding_file(&dir().join("astro.pt")).unwrap();
    let written = export_word(
        &ExportWord {
            name: "astro",
            vectors: &astro.vectors,
            widths: &[],
            step: Some(1500),
            checkpoint_name: Some("v1-5-pruned-emaonly"),
            checkpoint_hash: None,
        },
        ExportFormat::A1111Pt,
        tmp.path(),
    )
    .unwrap();
    assert_eq!(written, tmp.path().join("astro.pt"));
    let back = load_embedding_file(&written).unwrap();
    assert_eq!(back.format, EmbeddingFormat::A1111);
    assert_eq!(back.container, "torch zip pickle");
    assert_eq!(back.step, Some(1500));
    assert_eq!(back.stored_name.as_deref(), Some("astro"));
    assert_eq!(back.checkpoint_name.as_deref(), Some("v1-5-pruned-emaonly"));
    assert_same(&back.vectors, &astro.vectors, "astro.pt round trip");
    // torch aligns storage records to 64 bytes; so does the writer.
    let bytes = std::fs::read(&written).unwrap();
    let first = astro
        .vectors
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let at = bytes
        .windows(4)
        .position(|w| w == first.to_le_bytes())
        .unwrap();
    assert_eq!(at % 64, 0, "storage record is not 64-byte aligned");
}

#[test]
fn checkpoints_and_garbage_are_not_embeddings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let msg = load_embedding_file(&root.join("tiny-sd1/single_file.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Stable Diffusion checkpoint") && msg.contains("not an embedding"),
        "{msg}"
    );
    let msg = load_embedding_file(&root.join("references/chelsea.png"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("chelsea.png") && msg.contains("not an embedding"),
        "{msg}"
    );
}

fn tiny_sdxl(file: &str) -> PathBuf {
    dir().join("../tiny-sdxl/embeddings").join(file)
}

/// A safetensors tensor's values as f32, decoded here from the file's bytes
/// (little-endian F32 or F16), independently of candle's loader.
fn raw_f32(path: &Path, key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(key).unwrap();
    let values = match view.dtype() {
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        safetensors::Dtype::F16 => view
            .data()
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        d => panic!("{key}: {d:?}"),
    };
    (view.shape().to_vec(), values)
}

/// Rows of `clip_l` then `clip_g`, side by side: what an SDXL word must load as.
fn sdxl_rows(path: &Path) -> Tensor {
    let (ls, l) = raw_f32(path, "clip_l");
    let (gs, g) = raw_f32(path, "clip_g");
    assert_eq!(ls[0], gs[0]);
    let mut rows = Vec::new();
    for i in 0..ls[0] {
        rows.extend_from_slice(&l[i * ls[1]..(i + 1) * ls[1]]);
        rows.extend_from_slice(&g[i * gs[1]..(i + 1) * gs[1]]);
    }
    Tensor::from_vec(rows, (ls[0], ls[1] + gs[1]), &Device::Cpu).unwrap()
}

#[test]
fn sdxl_words_load_as_clip_l_then_clip_g() {
    for (path, widths, n, dtype) in [
        (tiny_sdxl("pair.safetensors"), [32, 48], 3, "F32"),
        (tiny_sdxl("pair-neg.safetensors"), [32, 48], 6, "F32"),
        (tiny_sdxl("pair-fp16.safetensors"), [32, 48], 3, "F16"),
        (dir().join("sdxl.safetensors"), [768, 1280], 2, "F32"),
    ] {
        let what = path.display().to_string();
        let e = load_embedding_file(&path).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(e.format, EmbeddingFormat::Sdxl, "{what}");
        assert_eq!(e.widths, widths, "{what}");
        assert!(e.is_sdxl());
        assert_eq!((e.count(), e.width()), (n, widths[0] + widths[1]), "{what}");
        assert_eq!(e.stored_dtype, dtype, "{what}");
        assert_eq!(e.name, path.file_stem().unwrap().to_str().unwrap());
        // f16 on disk: exactly the f16 values, widened.
        assert_same(&e.vectors, &sdxl_rows(&path), &what);
    }
    // The fixture's f16 file is the f32 pair rounded, so the two differ (the
    // test above would not notice a loader that ignored the dtype otherwise).
    let full = load_embedding_file(&tiny_sdxl("pair.safetensors")).unwrap();
    let half = load_embedding_file(&tiny_sdxl("pair-fp16.safetensors")).unwrap();
    assert!(common::f32_bits(&full.vectors) != common::f32_bits(&half.vectors));
}

/// Writes `tensors` (name, shape) as an f32 safetensors file of ramp values.
fn st_file(path: &Path, tensors: &[(&str, &[usize])]) {
    let mut all = HashMap::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|k| (i * 1000 + k) as f32).collect();
        all.insert(
            name.to_string(),
            Tensor::from_vec(v, *shape, &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&all, path).unwrap();
}

#[test]
fn half_an_sdxl_word_and_output_embeddings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |name: &str, tensors: &[(&str, &[usize])]| -> (InteropError, String) {
        let p = tmp.path().join(name);
        st_file(&p, tensors);
        let e = load_embedding_file(&p)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"));
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        (e, msg)
    };
    // clip_l without clip_g (a Flux-style clip_l + t5 file, say).
    let (e, msg) = err(
        "flux.safetensors",
        &[("clip_l", &[1, 768]), ("t5", &[1, 4096])],
    );
    assert!(matches!(e, InteropError::Sdxl { .. }), "{e:?}");
    assert!(
        msg.contains("has `clip_l` but no `clip_g`") && msg.contains("`t5` [1, 4096] F32"),
        "{msg}"
    );
    let (e, msg) = err("g-only.safetensors", &[("clip_g", &[2, 1280])]);
    assert!(matches!(e, InteropError::Sdxl { .. }), "{e:?}");
    assert!(msg.contains("has `clip_g` but no `clip_l`"), "{msg}");
    // Vector counts that disagree.
    let (e, msg) = err(
        "counts.safetensors",
        &[("clip_l", &[2, 768]), ("clip_g", &[3, 1280])],
    );
    assert!(matches!(e, InteropError::Sdxl { .. }), "{e:?}");
    assert!(
        msg.contains("`clip_l` has 2 vectors [2, 768] but `clip_g` has 3 [3, 1280]"),
        "{msg}"
    );
    // Anything else beside the two.
    let (e, msg) = err(
        "extra.safetensors",
        &[
            ("clip_l", &[1, 768]),
            ("clip_g", &[1, 1280]),
            ("emb_params", &[1, 768]),
        ],
    );
    assert!(matches!(e, InteropError::Sdxl { .. }), "{e:?}");
    assert!(msg.contains("`emb_params` [1, 768] F32"), "{msg}");
    // OneTrainer output embeddings: never read as input vectors.
    let (e, msg) = err(
        "out.safetensors",
        &[
            ("clip_l", &[1, 768]),
            ("clip_g", &[1, 1280]),
            ("clip_l_out", &[1, 768]),
            ("clip_g_out", &[1, 1280]),
        ],
    );
    assert!(matches!(e, InteropError::OutputEmbedding { .. }), "{e:?}");
    assert!(
        msg.contains("OneTrainer output embedding")
            && msg.contains("`clip_l_out` [1, 768] F32")
            && msg.contains("`clip_g_out` [1, 1280] F32"),
        "{msg}"
    );
    let (e, _) = err(
        "out1.safetensors",
        &[("emp_params", &[1, 768]), ("emp_params_out", &[1, 768])],
    );
    assert!(matches!(e, InteropError::OutputEmbedding { .. }), "{e:?}");
}

#[test]
fn sdxl_width_checks_go_encoder_by_encoder() {
    let sdxl = load_embedding_file(&dir().join("sdxl.safetensors")).unwrap();
    sdxl.check_width(&[768, 1280]).unwrap();
    let msg = sdxl.check_width(&[768]).unwrap_err().to_string();
    assert!(
        msg.contains(
            "sdxl.safetensors: an SDXL embedding (clip_l 768 + clip_g 1280) cannot be used \
             with this workspace's SD 1.x model (768-wide text encoder)"
        ),
        "{msg}"
    );
    // The same total width split otherwise is another model.
    let e = sdxl.check_width(&[1280, 768]).unwrap_err();
    assert!(matches!(e, InteropError::Width { .. }), "{e:?}");
    let astro = load_embedding_file(&dir().join("astro.pt")).unwrap();
    let msg = astro.check_width(&[768, 1280]).unwrap_err().to_string();
    assert!(
        msg.contains(
            "astro.pt: an SD 1.x embedding (768-wide vectors) cannot be used with this \
             workspace's SDXL model (clip_l 768 + clip_g 1280); an embedding only works with the \
             model family it was trained for"
        ),
        "{msg}"
    );
    let tiny = load_embedding_file(&tiny_sdxl("pair.safetensors")).unwrap();
    let msg = tiny.check_width(&[768, 1280]).unwrap_err().to_string();
    assert!(
        msg.contains("an SDXL embedding (clip_l 32 + clip_g 48)")
            && msg.contains("SDXL model (clip_l 768 + clip_g 1280)"),
        "{msg}"
    );
}

/// `{"clip_l": tensor, "clip_g": tensor}` as `torch.save` pickles it, both
/// views into storage `0` (`clip_l` [2, 3] at 0, `clip_g` [2, 4] at 6).
fn sdxl_pickle() -> Vec<u8> {
    let tensor = |offset: u8, size: (u8, u8), stride: (u8, u8)| {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x10tQ".to_vec();
        p.extend([b'K', offset, b'K', size.0, b'K', size.1, 0x86]);
        p.extend([b'K', stride.0, b'K', stride.1, 0x86]);
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        p
    };
    let mut p = b"\x80\x02}(X\x06\x00\x00\x00clip_l".to_vec();
    p.extend(tensor(0, (2, 3), (3, 1)));
    p.extend(b"X\x06\x00\x00\x00clip_g");
    p.extend(tensor(6, (2, 4), (4, 1)));
    p.extend(b"u.");
    p
}

#[test]
fn a_pickled_sdxl_dict_loads_too() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let p = tmp.path().join("xl.pt");
    torch_zip(&p, &sdxl_pickle(), &storage);
    let e = load_embedding_file(&p).unwrap();
    assert_eq!(e.format, EmbeddingFormat::Sdxl);
    assert_eq!(e.widths, [3, 4]);
    assert_eq!(
        e.vectors.to_vec2::<f32>().unwrap(),
        vec![
            vec![0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0],
            vec![3.0, 4.0, 5.0, 10.0, 11.0, 12.0, 13.0]
        ]
    );
}

/// An empty tensor is no word: `[0]` (and `[0, d]`, `[n, 0]`) is refused by
/// shape on import, naming the file, instead of becoming a `[1, 0]` word
/// that only the width check would catch later.
#[test]
fn empty_tensors_are_refused_by_shape() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, shape) in [
        ("flat", vec![0usize]),
        ("rows", vec![0, 768]),
        ("cols", vec![2, 0]),
    ] {
        let p = tmp.path().join(format!("{name}.safetensors"));
        let t = candle_core::Tensor::zeros(
            shape.as_slice(),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("<x>".to_string(), t)]),
            &p,
        )
        .unwrap();
        let e = load_embedding_file(&p).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, InteropError::BadShape { .. })
                && msg.contains(&format!("{name}.safetensors")),
            "{name}: {msg}"
        );
    }
}
