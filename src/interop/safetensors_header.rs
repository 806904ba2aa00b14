//! The header of a safetensors file, read without the data: enough to tell an
//! embedding from a multi-gigabyte checkpoint before loading anything.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::InteropError;

/// Whether a file can be safetensors at all: the format's own header limit (100 MB).
const FORMAT_MAX_HEADER: u64 = 100 << 20;

/// Headers larger than this are refused by [`read`]. Why: the header is JSON,
/// parsed whole, and JSON values take ~16× their text in memory (`0,` becomes a
/// 32-byte value), so a file at the format's limit could cost 1.6 GB before a
/// single check. An embedding's header is under 1 KiB, an SDXL checkpoint's
/// ~300 KiB.
pub const MAX_HEADER: u64 = 16 << 20;

/// Bytes per element of safetensors' dtypes (`None`: a dtype this reader does
/// not size; its data offsets are still checked against the file).
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// One tensor entry of the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// safetensors' dtype name (`F32`, `F16`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// `name [3, 768] F32`, for messages.
    pub fn describe(&self) -> String {
        format!("`{}` {:?} {}", self.name, self.shape, self.dtype)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
}

impl Header {
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Whether the first bytes look like a safetensors file (u64 header length, then `{`).
pub fn sniff(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && {
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[..8]);
        u64::from_le_bytes(n) <= FORMAT_MAX_HEADER
    }
}

/// Reads and checks the header; a file shorter than its header promises is
/// corrupt, and every tensor's shape × dtype must match the bytes its data
/// offsets give it, inside the file (all arithmetic overflow-checked), so that
/// no figure read here can later become an absurd allocation.
pub fn read(path: &Path) -> Result<Header, InteropError> {
    let corrupt = |message: String| InteropError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| InteropError::io(path, e))?;
    let size = f.metadata().map_err(|e| InteropError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| corrupt("shorter than a safetensors header; the file is truncated".into()))?;
    let n = u64::from_le_bytes(n);
    if n > size.saturating_sub(8) {
        return Err(corrupt(format!(
            "the safetensors header claims {n} bytes but the file has {size}; it is truncated or not safetensors"
        )));
    }
    if n > MAX_HEADER {
        return Err(InteropError::LimitExceeded {
            path: path.to_path_buf(),
            message: format!(
                "a safetensors header of {} MiB; this reader reads headers up to {} MiB (a \
                 checkpoint's is under 1 MiB)",
                n >> 20,
                MAX_HEADER >> 20
            ),
        });
    }
    let data_len = size - 8 - n;
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text)
        .map_err(|e| InteropError::io(path, e))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| corrupt(format!("the safetensors header is not valid JSON ({e})")))?;
    drop(text);
    let mut header = Header::default();
    let mut data_end = 0u64;
    for (name, v) in json {
        if name == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (k, v) in m {
                    if let Some(s) = v.as_str() {
                        header.metadata.insert(k.clone(), s.to_string());
                    }
                }
            }
            continue;
        }
        let dtype = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no dtype")))?
            .to_string();
        let shape = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no valid shape")))?;
        let offsets = v
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| match o.as_slice() {
                [b, e] => Some((b.as_u64()?, e.as_u64()?)),
                _ => None,
            })
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no data offsets")))?;
        let (begin, end) = offsets;
        if begin > end || end > data_len {
            return Err(corrupt(format!(
                "tensor `{name}` has data offsets [{begin}, {end}] outside the {data_len} bytes \
                 of data the file holds; it is truncated or damaged"
            )));
        }
        if let Some(elem) = dtype_size(&dtype) {
            let bytes = shape
                .iter()
                .try_fold(elem, |acc, &d| acc.checked_mul(d as u64));
            if bytes != Some(end - begin) {
                return Err(corrupt(format!(
                    "tensor `{name}` {shape:?} {dtype} needs {} but its data offsets give it \
                     {} bytes; the file is damaged",
                    match bytes {
                        Some(b) => format!("{b} bytes"),
                        None => "more bytes than any file holds".into(),
                    },
                    end - begin
                )));
            }
        }
        data_end = data_end.max(end);
        header.tensors.push(TensorInfo { name, dtype, shape });
    }
    if data_end > data_len {
        return Err(corrupt(format!(
            "the tensors need {} bytes but the file has {size}; it is truncated",
            8 + n + data_end
        )));
    }
    Ok(header)
}
