//! Writes an AUTOMATIC1111 / DreamArtist-extension embedding `.pt` the way
//! `torch.save` does (zip format, protocol-2 pickle, 64-byte aligned storage
//! record), for users of tools that only pick up `.pt` files.

use std::io::{Cursor, Write};
use std::path::Path;

use candle_core::{DType, Tensor};

use super::InteropError;
use crate::fsutil::write_atomic;
use crate::torchfile::contiguous_strides;

/// What goes into the pickle next to the vectors.
#[derive(Debug, Clone, Default)]
pub struct PtMeta {
    pub name: String,
    pub step: Option<u64>,
    pub checkpoint_name: Option<String>,
    pub checkpoint_hash: Option<String>,
}

/// A minimal pickle emitter for the opcodes the file needs.
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }

    fn int(&mut self, v: u64) -> &mut Self {
        if v <= 0xff {
            self.0.extend([b'K', v as u8]);
        } else if v <= 0xffff {
            self.0.push(b'M');
            self.0.extend((v as u16).to_le_bytes());
        } else if v <= i32::MAX as u64 {
            self.0.push(b'J');
            self.0.extend((v as u32).to_le_bytes());
        } else {
            // LONG1 with 9 bytes keeps the sign bit clear.
            self.0.extend([0x8a, 9]);
            self.0.extend(v.to_le_bytes());
            self.0.push(0);
        }
        self
    }

    fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.str(s),
            None => self.op(b'N'),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }

    fn int_tuple(&mut self, v: &[usize]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x as u64);
        }
        self.op(b't')
    }
}

/// The pickle of an A1111 embedding whose vectors are storage `0` (f32 `[n, d]`).
fn embedding_pickle(shape: &[usize], meta: &PtMeta) -> Vec<u8> {
    let mut p = Pickle(Vec::new());
    let numel: usize = shape.iter().product();
    p.op(0x80).op(2).op(b'}').op(b'(');
    p.str("string_to_token").op(b'}').str("*").int(265).op(b's');
    p.str("string_to_param").op(b'}').str("*");
    p.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
    p.op(b'(')
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(numel as u64)
        .op(b't')
        .op(b'Q');
    p.int(0)
        .int_tuple(shape)
        .int_tuple(&contiguous_strides(shape))
        .op(0x89)
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .op(b't')
        .op(b'R')
        .op(b's');
    p.str("name").str(&meta.name);
    p.str("step");
    match meta.step {
        Some(s) => p.int(s),
        None => p.op(b'N'),
    };
    p.str("sd_checkpoint")
        .opt_str(meta.checkpoint_hash.as_deref());
    p.str("sd_checkpoint_name")
        .opt_str(meta.checkpoint_name.as_deref());
    p.op(b'u').op(b'.');
    p.0
}

/// Writes `vectors` (`[n, d]`) as an A1111 `.pt` at `path` (atomically).
pub fn write_a1111_pt(path: &Path, vectors: &Tensor, meta: &PtMeta) -> Result<(), InteropError> {
    let v = vectors
        .to_dtype(DType::F32)
        .and_then(|v| v.to_device(&candle_core::Device::Cpu))
        .and_then(|v| v.contiguous())
        .map_err(|e| InteropError::tensor(path, e))?;
    let shape = v.dims().to_vec();
    let data: Vec<f32> = v
        .flatten_all()
        .and_then(|v| v.to_vec1())
        .map_err(|e| InteropError::tensor(path, e))?;
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    // torch names the archive folder after the file.
    let archive: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "archive".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let zip_bytes = (|| -> zip::result::ZipResult<Vec<u8>> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .with_alignment(64);
        let pickle = embedding_pickle(&shape, meta);
        let records: [(&str, &[u8]); 7] = [
            ("data.pkl", &pickle),
            (".format_version", b"1"),
            (".storage_alignment", b"64"),
            ("byteorder", b"little"),
            ("data/0", &bytes),
            ("version", b"3\n"),
            (
                ".data/serialization_id",
                b"0000000000000000000000000000000000000000",
            ),
        ];
        for (name, data) in records {
            w.start_file(format!("{archive}/{name}"), stored)?;
            w.write_all(data)?;
        }
        Ok(w.finish()?.into_inner())
    })()
    .map_err(|e| InteropError::write(path, e))?;
    write_atomic(path, &zip_bytes).map_err(|e| InteropError::write(path, e))
}
