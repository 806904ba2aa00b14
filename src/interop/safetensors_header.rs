//! The header of a safetensors file, read without the data: enough to tell an
//! embedding from a multi-gigabyte checkpoint before loading anything.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::InteropError;

/// Headers larger than this are refused (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

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
        u64::from_le_bytes(n) <= MAX_HEADER
    }
}

/// Reads and checks the header; a file shorter than its header promises is corrupt.
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
    if n > MAX_HEADER || 8 + n > size {
        return Err(corrupt(format!(
            "the safetensors header claims {n} bytes but the file has {size}; it is truncated or not safetensors"
        )));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text)
        .map_err(|e| InteropError::io(path, e))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| corrupt(format!("the safetensors header is not valid JSON ({e})")))?;
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
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no valid shape")))?;
        let end = v
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| o.get(1))
            .and_then(|e| e.as_u64())
            .ok_or_else(|| corrupt(format!("tensor `{name}` has no data offsets")))?;
        data_end = data_end.max(end);
        header.tensors.push(TensorInfo { name, dtype, shape });
    }
    if 8 + n + data_end > size {
        return Err(corrupt(format!(
            "the tensors need {} bytes but the file has {size}; it is truncated",
            8 + n + data_end
        )));
    }
    Ok(header)
}
