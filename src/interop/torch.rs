//! PyTorch files (`.pt`, `.bin`, `.ckpt`) read without Python and without
//! running code: the zip format of `torch.save` since 1.6 (`<archive>/data.pkl`
//! plus one `<archive>/data/<key>` record per storage; the archive folder name
//! varies) and the legacy format before it (magic number, protocol, system
//! info, the object pickle, the storage key list, then the raw storages).
//!
//! The object pickle is decoded by [`super::pickle`]; storages stay on disk and
//! are read when a tensor is asked for, so a multi-gigabyte checkpoint costs
//! only its pickle up front.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{Device, Tensor};

use super::pickle::{
    self, GlobalPolicy, PickleError, StorageDType, TensorRef, Value, LEGACY_MAGIC,
};
use super::InteropError;

/// Where a storage's bytes are in the file.
#[derive(Debug, Clone, Copy)]
struct Extent {
    offset: u64,
    len: u64,
}

/// An opened PyTorch file: its decoded object and a handle to its storages.
#[derive(Debug)]
pub struct TorchFile {
    path: PathBuf,
    root: Value,
    storages: HashMap<String, Extent>,
    file: Mutex<File>,
    format: TorchFormat,
}

/// Which of torch's two serialisation formats a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    Zip,
    Legacy,
}

impl TorchFormat {
    pub fn describe(&self) -> &'static str {
        match self {
            TorchFormat::Zip => "torch zip pickle",
            TorchFormat::Legacy => "legacy (pre-1.6) torch pickle",
        }
    }
}

/// Files up to this size have their pickle read into memory whole.
const MAX_PICKLE: u64 = 512 << 20;

fn corrupt(path: &Path, message: impl Into<String>) -> InteropError {
    InteropError::Corrupt {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn pickle_err(path: &Path, e: PickleError) -> InteropError {
    match e {
        PickleError::ForbiddenGlobal { .. } => InteropError::Unsafe {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
        PickleError::Truncated { .. } => corrupt(path, e.to_string()),
        PickleError::Invalid { .. } => corrupt(path, format!("unreadable pickle: {e}")),
    }
}

/// Tells a torch zip (`PK\3\4`) from the legacy format (a pickled magic number).
pub fn sniff(head: &[u8]) -> Option<TorchFormat> {
    if head.starts_with(b"PK\x03\x04") {
        Some(TorchFormat::Zip)
    } else if head.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) && head.get(4..14) == Some(&LEGACY_MAGIC)
    {
        Some(TorchFormat::Legacy)
    } else {
        None
    }
}

impl TorchFile {
    /// Opens a torch file; `policy` says what to do with non-tensor classes.
    pub fn open(path: &Path, policy: GlobalPolicy) -> Result<Self, InteropError> {
        let mut file = File::open(path).map_err(|e| InteropError::io(path, e))?;
        let mut head = [0u8; 16];
        let n = read_up_to(&mut file, &mut head).map_err(|e| InteropError::io(path, e))?;
        match sniff(&head[..n]) {
            Some(TorchFormat::Zip) => Self::open_zip(path, file, policy),
            Some(TorchFormat::Legacy) => Self::open_legacy(path, file, policy),
            None => Err(InteropError::Unrecognised {
                path: path.to_path_buf(),
                message:
                    "not a PyTorch file (neither a torch zip archive nor a legacy torch pickle)"
                        .into(),
            }),
        }
    }

    fn open_zip(path: &Path, file: File, policy: GlobalPolicy) -> Result<Self, InteropError> {
        let reader = file.try_clone().map_err(|e| InteropError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
            corrupt(
                path,
                format!("the zip archive is truncated or damaged ({e}); re-download or re-save the file"),
            )
        })?;
        let names: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.to_string()))
            .collect();
        let pkl = names
            .iter()
            .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
            .min_by_key(|n| n.len())
            .cloned()
            .ok_or_else(|| {
                corrupt(
                    path,
                    "a zip archive without `<archive>/data.pkl`: not a torch.save file",
                )
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let byteorder = read_entry(&mut zip, &format!("{prefix}byteorder"), path).ok();
        if byteorder.as_deref() == Some(b"big".as_slice()) {
            return Err(InteropError::Unsupported {
                path: path.to_path_buf(),
                message: "a big-endian torch file; re-save it on a little-endian machine".into(),
            });
        }
        let pickle_bytes = read_entry(&mut zip, &pkl, path)?;
        let (root, _) = pickle::load(&pickle_bytes, policy).map_err(|e| pickle_err(path, e))?;
        let data_prefix = format!("{prefix}data/");
        let mut storages = HashMap::new();
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|e| corrupt(path, format!("zip entry {i}: {e}")))?;
            let name = entry
                .name()
                .map_err(|e| corrupt(path, format!("zip entry {i}: {e}")))?
                .to_string();
            let Some(key) = name.strip_prefix(&data_prefix) else {
                continue;
            };
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(InteropError::Unsupported {
                    path: path.to_path_buf(),
                    message: format!(
                        "storage `{key}` is compressed ({:?}); torch.save never compresses, \
                         so the file was re-packed: unzip and re-zip it without compression",
                        entry.compression()
                    ),
                });
            }
            let offset = entry
                .data_start()
                .ok_or_else(|| corrupt(path, format!("zip entry `{name}` has no data")))?;
            storages.insert(
                key.to_string(),
                Extent {
                    offset,
                    len: entry.size(),
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            root,
            storages,
            file: Mutex::new(file),
            format: TorchFormat::Zip,
        })
    }

    fn open_legacy(
        path: &Path,
        mut file: File,
        policy: GlobalPolicy,
    ) -> Result<Self, InteropError> {
        let size = file
            .metadata()
            .map_err(|e| InteropError::io(path, e))?
            .len();
        // The pickles come first: read a prefix, growing it until they fit.
        let mut want = size.min(1 << 20);
        let (values, pos) = loop {
            let mut buf = vec![0u8; want as usize];
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| InteropError::io(path, e))?;
            match legacy_pickles(&buf, policy) {
                Err((PickleError::Truncated { .. }, _)) if want < size.min(MAX_PICKLE) => {
                    want = (want * 8).min(size).min(MAX_PICKLE);
                }
                Err((PickleError::Truncated { .. }, what)) => {
                    return Err(corrupt(
                        path,
                        format!("the file ends inside its {what}; it is truncated"),
                    ))
                }
                Err((e, _)) => return Err(pickle_err(path, e)),
                Ok(done) => break done,
            }
        };
        let [magic, protocol, sys_info, root, keys] = values;
        if magic != Value::BigInt(LEGACY_MAGIC.to_vec()) {
            return Err(corrupt(path, "wrong legacy torch magic number"));
        }
        if protocol.as_int() != Some(1001) {
            return Err(InteropError::Unsupported {
                path: path.to_path_buf(),
                message: format!("legacy torch protocol {protocol:?} (supported: 1001)"),
            });
        }
        if sys_info.get("little_endian") == Some(&Value::Bool(false)) {
            return Err(InteropError::Unsupported {
                path: path.to_path_buf(),
                message: "a big-endian torch file; re-save it on a little-endian machine".into(),
            });
        }
        let Value::List(keys) = keys else {
            return Err(corrupt(path, "the storage key list is not a list"));
        };
        // Element sizes come from the storages the object pickle references.
        let mut dtypes: HashMap<String, StorageDType> = HashMap::new();
        for t in root.tensors() {
            dtypes.insert(t.storage.key.clone(), t.storage.dtype);
        }
        let mut storages = HashMap::new();
        let mut offset = pos as u64;
        for k in &keys {
            let key = k
                .as_str()
                .ok_or_else(|| corrupt(path, "a storage key is not a string"))?
                .to_string();
            let dtype = dtypes.get(&key).ok_or_else(|| {
                corrupt(
                    path,
                    format!("storage `{key}` is listed but no tensor uses it"),
                )
            })?;
            let mut count = [0u8; 8];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut count))
                .map_err(|_| {
                    corrupt(
                        path,
                        format!("the file ends before storage `{key}`; it is truncated"),
                    )
                })?;
            let numel = u64::from_le_bytes(count);
            let len = numel
                .checked_mul(dtype.size() as u64)
                .filter(|l| offset + 8 + l <= size)
                .ok_or_else(|| {
                    corrupt(
                        path,
                        format!("the file ends inside storage `{key}`; it is truncated"),
                    )
                })?;
            storages.insert(
                key,
                Extent {
                    offset: offset + 8,
                    len,
                },
            );
            offset += 8 + len;
        }
        Ok(Self {
            path: path.to_path_buf(),
            root,
            storages,
            file: Mutex::new(file),
            format: TorchFormat::Legacy,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoded object (a dict for every file this tool reads).
    pub fn root(&self) -> &Value {
        &self.root
    }

    pub fn format(&self) -> TorchFormat {
        self.format
    }

    /// Reads a tensor's elements (honouring storage offset and strides) in its stored dtype.
    pub fn tensor(&self, t: &TensorRef, device: &Device) -> Result<Tensor, InteropError> {
        let key = &t.storage.key;
        let extent = self.storages.get(key).ok_or_else(|| {
            corrupt(
                &self.path,
                format!("storage `{key}` is missing from the file"),
            )
        })?;
        let Some(dtype) = t.dtype.candle() else {
            return Err(InteropError::Unsupported {
                path: self.path.clone(),
                message: format!("{} tensors (candle has no such dtype)", t.dtype.name()),
            });
        };
        let elem = t.dtype.size();
        let numel: usize = t.shape.iter().product();
        if numel == 0 {
            return Tensor::zeros(t.shape.as_slice(), dtype, device)
                .map_err(|e| InteropError::tensor(&self.path, e));
        }
        // The span of elements the view touches.
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .map(|(&n, &s)| (n - 1).checked_mul(s))
            .try_fold(0usize, |acc, x| x.and_then(|x| acc.checked_add(x)));
        let start = t.storage.view_offset.checked_add(t.offset);
        let (Some(last), Some(start)) = (last, start) else {
            return Err(corrupt(
                &self.path,
                format!("tensor on storage `{key}` has an impossible layout"),
            ));
        };
        let span = last + 1;
        let byte_start = (start as u64) * elem as u64;
        let byte_len = (span as u64) * elem as u64;
        if byte_start + byte_len > extent.len {
            return Err(corrupt(
                &self.path,
                format!(
                    "a tensor of shape {:?} reaches past the end of storage `{key}` ({} bytes); the file is damaged",
                    t.shape, extent.len
                ),
            ));
        }
        let mut raw = vec![0u8; byte_len as usize];
        {
            let mut f = self
                .file
                .lock()
                .map_err(|_| corrupt(&self.path, "file handle poisoned by an earlier panic"))?;
            f.seek(SeekFrom::Start(extent.offset + byte_start))
                .and_then(|_| f.read_exact(&mut raw))
                .map_err(|e| InteropError::io(&self.path, e))?;
        }
        let bytes = if is_contiguous(&t.shape, &t.stride) {
            raw
        } else {
            gather(&raw, &t.shape, &t.stride, elem)
        };
        Tensor::from_raw_buffer(&bytes, dtype, &t.shape, device)
            .map_err(|e| InteropError::tensor(&self.path, e))
    }
}

/// The five pickles at the start of a legacy file: magic number, protocol,
/// system info, the object, the storage keys; and the offset after them.
fn legacy_pickles(
    buf: &[u8],
    policy: GlobalPolicy,
) -> Result<([Value; 5], usize), (PickleError, &'static str)> {
    const WHAT: [&str; 5] = [
        "magic number",
        "protocol version",
        "system info",
        "object pickle",
        "storage list",
    ];
    let mut pos = 0usize;
    let mut out: [Value; 5] = Default::default();
    for (slot, what) in out.iter_mut().zip(WHAT) {
        let (v, used) = pickle::load(&buf[pos..], policy).map_err(|e| (e, what))?;
        *slot = v;
        pos += used;
    }
    Ok((out, pos))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

fn read_entry(
    zip: &mut zip::ZipArchive<File>,
    name: &str,
    path: &Path,
) -> Result<Vec<u8>, InteropError> {
    let mut entry = zip
        .by_name(name)
        .map_err(|e| corrupt(path, format!("zip entry `{name}`: {e}")))?;
    if entry.size() > MAX_PICKLE {
        return Err(corrupt(
            path,
            format!("zip entry `{name}` is implausibly large"),
        ));
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut out)
        .map_err(|e| corrupt(path, format!("zip entry `{name}`: {e}")))?;
    Ok(out)
}

/// Row-major strides for `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    shape
        .iter()
        .zip(stride)
        .zip(contiguous_strides(shape))
        .all(|((&n, &s), c)| n == 1 || s == c)
}

/// Copies a strided view into row-major order (`raw` starts at the view's first element).
fn gather(raw: &[u8], shape: &[usize], stride: &[usize], elem: usize) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * elem);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let src: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&raw[src * elem..(src + 1) * elem]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_gather() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        // A transposed 3x2 view of [[0,1,2],[3,4,5]] stored row-major (u8 elements).
        let raw = [0u8, 1, 2, 3, 4, 5];
        assert_eq!(gather(&raw, &[3, 2], &[1, 3], 1), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Some(TorchFormat::Zip));
        let mut legacy = vec![0x80, 0x02, 0x8a, 0x0a];
        legacy.extend(LEGACY_MAGIC);
        assert_eq!(sniff(&legacy), Some(TorchFormat::Legacy));
        assert_eq!(sniff(b"\x10\x00\x00\x00\x00\x00\x00\x00{"), None);
    }
}
