//! Hostile and damaged files (issue #18): pickle bombs, tensors whose declared
//! layout would expand a tiny storage into gigabytes, zip entries with patched
//! sizes, safetensors headers with absurd shapes. Each must be refused quickly
//! with a message naming the file and the limit or damage, by the library and
//! by the binary — the latter under a 1 GiB address-space limit, so that a
//! refusal that came only after a large allocation would show up as an abort
//! (exit 134) instead of our error path's exit 2.
#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bin, fixtures, ok};
use dreamartist::interop::{load_embedding_file, InteropError};
use dreamartist::sd::single_file::SingleFileSpec;
use dreamartist::sd::{LoadError, LoadOptions, StableDiffusion};
use dreamartist::torchfile::TorchFileError;

/// The address-space limit the binary runs under.
const LIMIT_BYTES: u64 = 1 << 30;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A torch zip file: `archive/data.pkl` = `pickle`, then the storages.
fn torch_zip(path: &Path, pickle: &[u8], storages: &[(&str, Vec<u8>)]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(pickle).unwrap();
    w.start_file("archive/byteorder", opts).unwrap();
    w.write_all(b"little").unwrap();
    for (key, data) in storages {
        w.start_file(format!("archive/data/{key}"), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
}

/// The issue's bomb: DUP + TUPLE2, 32 times: 2³² objects from 70 bytes.
fn dup_bomb() -> Vec<u8> {
    let mut p = b"\x80\x02]".to_vec();
    for _ in 0..32 {
        p.extend(b"2\x86");
    }
    p.push(b'.');
    p
}

/// The same doubling through the memo: GET 0 twice, TUPLE2, PUT 0, POP.
fn memo_bomb() -> Vec<u8> {
    let mut p = b"\x80\x02]q\x00".to_vec();
    for _ in 0..32 {
        p.extend(b"h\x00h\x00\x86q\x000");
    }
    p.extend(b"h\x00.");
    p
}

/// A pickle int: BININT for what fits 31 bits, else LONG1 (8 bytes, so below 2⁶³).
fn int(p: &mut Vec<u8>, v: u64) {
    if v < (1 << 31) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    } else {
        assert!(v < 1 << 63);
        p.extend([0x8a, 8]);
        p.extend(v.to_le_bytes());
    }
}

/// `{"string_to_param": {"*": tensor}}` (an A1111 embedding) with a tensor of
/// `shape`/`stride` on f32 storage `0` of `numel` elements.
fn a1111_pickle(shape: &[u64], stride: &[u64], numel: u64) -> Vec<u8> {
    let mut p = b"\x80\x02}X\x0f\x00\x00\x00string_to_param}X\x01\x00\x00\x00*".to_vec();
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu");
    int(&mut p, numel);
    p.extend(b"tQK\x00(");
    shape.iter().for_each(|&d| int(&mut p, d));
    p.extend(b"t(");
    stride.iter().for_each(|&d| int(&mut p, d));
    p.extend(b"t\x89ccollections\nOrderedDict\n)RtRss.");
    p
}

/// The embedding reader's error for `p`, which must not load.
fn refusal(p: &Path) -> InteropError {
    match load_embedding_file(p) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e,
    }
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// An embedding file with the given tensor layout over `numel` f32 elements.
fn strided_pt(dir: &Path, file: &str, shape: &[u64], stride: &[u64], numel: u64) -> PathBuf {
    let p = dir.join(file);
    let storage = f32_bytes((0..numel).map(|i| i as f32));
    torch_zip(&p, &a1111_pickle(shape, stride, numel), &[("0", storage)]);
    p
}

/// Runs the binary under the address-space limit: (exit code, stderr, time).
/// A signal (an abort) reads as exit code -1.
fn limited<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, Duration) {
    let mut cmd = bin();
    cmd.args(args);
    // Two compute threads whatever the machine: every thread's stack and malloc
    // arena is address space too, and the limit is about our buffers.
    cmd.env("RAYON_NUM_THREADS", "2");
    // SAFETY: only async-signal-safe work between fork and exec (one setrlimit call).
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT_BYTES as libc::rlim_t,
                rlim_max: LIMIT_BYTES as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
        start.elapsed(),
    )
}

/// The binary refuses cleanly: exit 2 (our error path, not an abort), in
/// reasonable time, with a message that contains every one of `says`.
fn refused_cleanly<S: AsRef<OsStr>>(args: &[S], says: &[&str]) {
    let (code, err, took) = limited(args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert_eq!(code, 2, "{shown:?}: exit {code} (134 is an abort)\n{err}");
    for s in says {
        assert!(err.contains(s), "{shown:?}: no `{s}` in\n{err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "{shown:?} took {took:?}");
}

#[test]
fn the_limit_leaves_room_for_normal_work() {
    // Otherwise a refusal below would prove nothing.
    let astro = fixtures().join("embeddings/astro.pt");
    let (code, err, _) = limited(&[OsStr::new("inspect"), astro.as_os_str()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn pickle_bombs_are_refused_by_the_reader() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, pickle) in [("dup.pt", dup_bomb()), ("memo.pt", memo_bomb())] {
        let p = tmp.path().join(name);
        torch_zip(&p, &pickle, &[]);
        assert!(std::fs::metadata(&p).unwrap().len() < 1024);
        let start = Instant::now();
        let e = refusal(&p);
        assert!(start.elapsed() < Duration::from_secs(20), "{name}");
        let msg = e.to_string();
        assert!(
            matches!(e, InteropError::LimitExceeded { .. }),
            "{name}: {e:?}"
        );
        assert!(
            msg.contains(name) && msg.contains("safety limit") && msg.contains("objects"),
            "{msg}"
        );
    }
}

#[test]
fn pickle_bombs_are_refused_by_inspect_convert_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // import reads the workspace model's text encoder config only.
    let model = tmp.path().join("model/text_encoder");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
            "num_hidden_layers": 12, "vocab_size": 49408}"#,
    )
    .unwrap();
    let ws = tmp.path().join("ws");
    ok(&["init", s(&ws), "--model", s(&tmp.path().join("model"))]);
    for (name, pickle) in [("l.pt", dup_bomb()), ("m.pt", memo_bomb())] {
        let p = tmp.path().join(name);
        torch_zip(&p, &pickle, &[]);
        let says = [name, "safety limit", "5000000 objects"];
        refused_cleanly(&["inspect", s(&p)], &says);
        refused_cleanly(
            &["convert", s(&p), "--format", "kohya", "--out", s(&out)],
            &says,
        );
        refused_cleanly(&["import", s(&p), "-w", s(&ws)], &says);
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn pickle_bombs_as_ckpt_models_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, pickle) in [("l.ckpt", dup_bomb()), ("m.ckpt", memo_bomb())] {
        let p = tmp.path().join(name);
        torch_zip(&p, &pickle, &[]);
        let start = Instant::now();
        let e = match StableDiffusion::load_single_file(
            &SingleFileSpec::new(&p),
            &LoadOptions::default(),
        ) {
            Ok(_) => panic!("{name} loaded"),
            Err(e) => e,
        };
        assert!(start.elapsed() < Duration::from_secs(20), "{name}");
        assert!(
            matches!(
                e,
                LoadError::TorchFile(TorchFileError::LimitExceeded { .. })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(name), "{e}");
        refused_cleanly(&["inspect", s(&p)], &[name, "safety limit"]);
        // A workspace on the checkpoint: the first command that reads the model refuses.
        let ws = tmp.path().join(format!("ws-{name}"));
        let _ = bin()
            .args(["init", s(&ws), "--model", s(&p)])
            .output()
            .unwrap();
        if ws.join("workspace.toml").is_file() {
            refused_cleanly(
                &[
                    "import",
                    s(&fixtures().join("embeddings/astro.pt")),
                    "-w",
                    s(&ws),
                ],
                &[name, "safety limit"],
            );
        }
    }
}

#[test]
fn a_stride_zero_view_over_a_tiny_storage_is_not_expanded() {
    let tmp = tempfile::tempdir().unwrap();
    // The issue's file: shape (1e8, 64), strides (0, 0), over 512 bytes.
    let p = strided_pt(tmp.path(), "s.pt", &[100_000_000, 64], &[0, 0], 128);
    assert!(std::fs::metadata(&p).unwrap().len() < 2048);
    let e = refusal(&p);
    assert!(matches!(e, InteropError::LimitExceeded { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("s.pt") && msg.contains("25.6 GB") && msg.contains("16 MiB"),
        "{msg}"
    );
    refused_cleanly(&["inspect", s(&p)], &["s.pt", "25.6 GB", "contiguous"]);
    // Small broadcasts still read (and are expanded).
    let p = strided_pt(tmp.path(), "b.pt", &[3, 4], &[0, 1], 16);
    let e = load_embedding_file(&p).unwrap();
    assert_eq!(
        e.vectors.to_vec2::<f32>().unwrap(),
        vec![vec![0., 1., 2., 3.]; 3]
    );
}

#[test]
fn absurd_element_counts_are_refused_by_inspect_too() {
    let tmp = tempfile::tempdir().unwrap();
    let big = 1u64 << 32;
    for (file, stride) in [("c.pt", [big, 1]), ("z.pt", [0, 0]), ("o.pt", [1, 1])] {
        let p = strided_pt(tmp.path(), file, &[big, big], &stride, 16);
        let msg = refusal(&p).to_string();
        assert!(msg.contains(file) && msg.contains("4294967296"), "{msg}");
        refused_cleanly(&["inspect", s(&p)], &[file, "damaged"]);
    }
    // Declared sizes that only overflow once multiplied by the element size.
    let p = strided_pt(tmp.path(), "e.pt", &[1 << 62], &[0], 16);
    refused_cleanly(&["inspect", s(&p)], &["e.pt"]);
    // The last element's offset is u64::MAX, so one past it overflows (found
    // by fuzzing: `(2³² + 1) × (2³² − 1)`).
    let p = strided_pt(tmp.path(), "w.pt", &[(1 << 32) + 2], &[(1 << 32) - 1], 16);
    let msg = refusal(&p).to_string();
    assert!(msg.contains("impossible layout"), "{msg}");
    refused_cleanly(&["inspect", s(&p)], &["w.pt", "damaged"]);
}

#[test]
fn sparse_views_of_a_large_storage_read_only_their_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 1u64 << 19; // 2 MiB of f32
                        // 3 rows of 2, 200000 elements apart: the span is 1.6 MB, the tensor 24 bytes.
    let p = strided_pt(tmp.path(), "rows.pt", &[3, 2], &[200_000, 1], n);
    let e = load_embedding_file(&p).unwrap();
    assert_eq!(
        e.vectors.to_vec2::<f32>().unwrap(),
        vec![
            vec![0., 1.],
            vec![200_000., 200_001.],
            vec![400_000., 400_001.]
        ]
    );
    // The transpose: runs of one element.
    let p = strided_pt(tmp.path(), "cols.pt", &[2, 3], &[1, 200_000], n);
    let e = load_embedding_file(&p).unwrap();
    assert_eq!(
        e.vectors.to_vec2::<f32>().unwrap(),
        vec![vec![0., 200_000., 400_000.], vec![1., 200_001., 400_001.]]
    );
}

/// Sets the declared (compressed and uncompressed) size of zip entry `name`
/// in its local and central headers.
fn patch_declared_size(bytes: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for i in 0..bytes.len().saturating_sub(46) {
        let (sig, name_at, sizes_at) = match &bytes[i..i + 4] {
            b"PK\x03\x04" => ("local", 30, 18),
            b"PK\x01\x02" => ("central", 46, 20),
            _ => continue,
        };
        let _ = sig;
        if bytes.get(i + name_at..i + name_at + name.len()) == Some(name.as_bytes()) {
            bytes[i + sizes_at..i + sizes_at + 4].copy_from_slice(&size.to_le_bytes());
            bytes[i + sizes_at + 4..i + sizes_at + 8].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "{name}");
}

#[test]
fn patched_zip_entry_sizes_are_checked_against_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let good = strided_pt(tmp.path(), "good.pt", &[2, 4], &[4, 1], 8);
    let bytes = std::fs::read(&good).unwrap();
    for (file, entry, size) in [
        ("storage4g.pt", "archive/data/0", 0xFFFF_FFF0u32),
        ("pickle4g.pt", "archive/data.pkl", 0xFFFF_FFF0),
        ("pickle100m.pt", "archive/data.pkl", 100 << 20),
    ] {
        let mut b = bytes.clone();
        patch_declared_size(&mut b, entry, size);
        let p = tmp.path().join(file);
        std::fs::write(&p, &b).unwrap();
        let msg = refusal(&p).to_string();
        assert!(msg.contains(file), "{msg}");
        refused_cleanly(&["inspect", s(&p)], &[file]);
    }
}

/// A safetensors file with a hand-written header and `data` after it.
fn st_raw(path: &Path, header: &str, data: &[u8]) {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    std::fs::write(path, b).unwrap();
}

#[test]
fn safetensors_headers_are_bounded_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "absurd.safetensors",
            r#"{"emb_params":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
            "more bytes than any file holds",
        ),
        (
            "short.safetensors",
            r#"{"emb_params":{"dtype":"F32","shape":[2,768],"data_offsets":[0,16]}}"#,
            "needs 6144 bytes",
        ),
        (
            "past.safetensors",
            r#"{"emb_params":{"dtype":"F32","shape":[2,2],"data_offsets":[18446744073709551600,18446744073709551615]}}"#,
            "outside the 16 bytes",
        ),
    ];
    for (file, header, says) in cases {
        let p = tmp.path().join(file);
        st_raw(&p, header, &[0u8; 16]);
        let e = refusal(&p);
        let msg = e.to_string();
        assert!(matches!(e, InteropError::Corrupt { .. }), "{e:?}");
        assert!(msg.contains(file) && msg.contains(says), "{msg}");
        refused_cleanly(&["inspect", s(&p)], &[file, says]);
    }
    // A header length past the end of the file.
    let p = tmp.path().join("len.safetensors");
    let mut b = (u64::MAX - 4).to_le_bytes().to_vec();
    b.extend(b"{}");
    std::fs::write(&p, b).unwrap();
    refused_cleanly(&["inspect", s(&p)], &["len.safetensors"]);
    // A (real) header over the reader's limit.
    let p = tmp.path().join("huge.safetensors");
    let pad = " ".repeat(17 << 20);
    st_raw(&p, &format!("{{{pad}}}"), &[]);
    let e = refusal(&p);
    assert!(matches!(e, InteropError::LimitExceeded { .. }), "{e:?}");
    assert!(e.to_string().contains("16 MiB"), "{e}");
}
