//! PyTorch files (`.pt`, `.bin`, `.ckpt`) read without Python and without
//! running code: the zip format of `torch.save` since 1.6 (`<archive>/data.pkl`
//! plus one `<archive>/data/<key>` record per storage; the archive folder name
//! varies) and the legacy format before it (magic number, protocol, system
//! info, the object pickle, the storage key list, then the raw storages).
//!
//! The object pickle is decoded by [`super::pickle`]; storages stay on disk and
//! are read when a tensor is asked for, so a multi-gigabyte checkpoint costs
//! only its pickle up front.
//!
//! Nothing a file declares is trusted before it is checked against the file:
//! zip entries' sizes and offsets against the file's real size (before any
//! buffer is allocated for them), and every tensor's shape, strides and offset
//! against its storage when the file is opened, so that `inspect` refuses what
//! loading would refuse. A view that repeats elements (stride 0) is expanded
//! only up to [`MAX_EXPANDED`] bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{Device, Tensor};

use super::pickle::{
    self, GlobalPolicy, Limits, PickleError, StorageDType, TensorRef, Value, LEGACY_MAGIC,
};
use super::{TorchFileError, NOT_A_TORCH_FILE};

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

/// Pickles larger than this are refused (a real checkpoint's is a few MiB).
const MAX_PICKLE: u64 = 512 << 20;

/// A view that repeats storage elements (stride 0, overlapping strides) is
/// expanded into a buffer of at most this many bytes. Why: such a view costs
/// nothing in the file (a 512-byte storage can be declared as a 25 GB
/// tensor) and real checkpoints and embeddings hold none of any size.
pub const MAX_EXPANDED: u64 = 16 << 20;

/// Tensors of more dimensions than this are refused (torch's own kernels stop
/// at 25; an unbounded rank would only cost time).
pub const MAX_RANK: usize = 64;

/// A tensor's bytes, checked against its storage.
#[derive(Debug, Clone, Copy)]
struct View {
    extent: Extent,
    /// Bytes from the storage's start to the view's first element.
    byte_start: u64,
    /// Bytes from the first to one past the last element the view touches.
    span_bytes: u64,
    /// Bytes of the tensor once laid out row-major.
    out_bytes: u64,
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

/// `25.6 GB`, `512 bytes`: sizes in messages.
fn human(bytes: u64) -> String {
    const UNITS: [(&str, f64); 3] = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in UNITS {
        if bytes as f64 >= size {
            return format!("{:.1} {unit}", bytes as f64 / size);
        }
    }
    format!("{bytes} bytes")
}

impl TorchFile {
    /// Opens a torch file; `policy` says what to do with non-tensor classes.
    pub fn open(path: &Path, policy: GlobalPolicy) -> Result<Self, TorchFileError> {
        Self::open_with(path, policy, &Limits::DEFAULT)
    }

    /// [`TorchFile::open`] with the pickle held to `limits` (tests and the fuzz
    /// target use small ones, so that a bomb is refused in microseconds).
    pub fn open_with(
        path: &Path,
        policy: GlobalPolicy,
        limits: &Limits,
    ) -> Result<Self, TorchFileError> {
        let mut file = File::open(path).map_err(|e| TorchFileError::io(path, e))?;
        let mut head = [0u8; 16];
        let n = read_up_to(&mut file, &mut head).map_err(|e| TorchFileError::io(path, e))?;
        let opened = match sniff(&head[..n]) {
            Some(TorchFormat::Zip) => Self::open_zip(path, file, policy, limits)?,
            Some(TorchFormat::Legacy) => Self::open_legacy(path, file, policy, limits)?,
            None => {
                return Err(TorchFileError::Unrecognised {
                    path: path.to_path_buf(),
                    message: NOT_A_TORCH_FILE.into(),
                })
            }
        };
        opened.check_tensors()?;
        Ok(opened)
    }

    fn open_zip(
        path: &Path,
        file: File,
        policy: GlobalPolicy,
        limits: &Limits,
    ) -> Result<Self, TorchFileError> {
        let size = file
            .metadata()
            .map_err(|e| TorchFileError::io(path, e))?
            .len();
        let reader = file.try_clone().map_err(|e| TorchFileError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
            TorchFileError::corrupt(
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
                TorchFileError::corrupt(
                    path,
                    "a zip archive without `<archive>/data.pkl`: not a torch.save file",
                )
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let byteorder = read_entry(&mut zip, &format!("{prefix}byteorder"), path, size).ok();
        if byteorder.as_deref() == Some(b"big".as_slice()) {
            return Err(TorchFileError::unsupported(
                path,
                "a big-endian torch file; re-save it on a little-endian machine",
            ));
        }
        let pickle_bytes = read_entry(&mut zip, &pkl, path, size)?;
        let (root, _) = pickle::load_with(&pickle_bytes, policy, limits)
            .map_err(|e| TorchFileError::pickle(path, e))?;
        drop(pickle_bytes);
        let data_prefix = format!("{prefix}data/");
        let mut storages = HashMap::new();
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|e| TorchFileError::corrupt(path, format!("zip entry {i}: {e}")))?;
            let name = entry
                .name()
                .map_err(|e| TorchFileError::corrupt(path, format!("zip entry {i}: {e}")))?
                .to_string();
            let Some(key) = name.strip_prefix(&data_prefix) else {
                continue;
            };
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(TorchFileError::unsupported(
                    path,
                    format!(
                        "storage `{key}` is compressed ({:?}); torch.save never compresses, \
                         so the file was re-packed: unzip and re-zip it without compression",
                        entry.compression()
                    ),
                ));
            }
            let offset = entry.data_start().ok_or_else(|| {
                TorchFileError::corrupt(path, format!("zip entry `{name}` has no data"))
            })?;
            let len = entry.size();
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(TorchFileError::corrupt(
                    path,
                    format!(
                        "zip entry `{name}` declares {len} bytes at offset {offset}, past the end \
                         of the file ({size} bytes); the file is truncated or its sizes were altered"
                    ),
                ));
            }
            storages.insert(key.to_string(), Extent { offset, len });
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
        limits: &Limits,
    ) -> Result<Self, TorchFileError> {
        let size = file
            .metadata()
            .map_err(|e| TorchFileError::io(path, e))?
            .len();
        // The pickles come first: read a prefix, growing it until they fit.
        let mut want = size.min(1 << 20);
        let (values, pos) = loop {
            let mut buf = vec![0u8; want as usize];
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| TorchFileError::io(path, e))?;
            match legacy_pickles(&buf, policy, limits) {
                Err((PickleError::Truncated { .. }, _)) if want < size.min(MAX_PICKLE) => {
                    want = want.saturating_mul(8).min(size).min(MAX_PICKLE);
                }
                Err((PickleError::Truncated { .. }, what)) => {
                    return Err(TorchFileError::corrupt(
                        path,
                        format!("the file ends inside its {what}; it is truncated"),
                    ))
                }
                Err((e, _)) => return Err(TorchFileError::pickle(path, e)),
                Ok(done) => break done,
            }
        };
        let [magic, protocol, sys_info, root, keys] = values;
        if magic != Value::BigInt(LEGACY_MAGIC.to_vec()) {
            return Err(TorchFileError::corrupt(
                path,
                "wrong legacy torch magic number",
            ));
        }
        if protocol.as_int() != Some(1001) {
            return Err(TorchFileError::unsupported(
                path,
                format!("legacy torch protocol {protocol:?} (supported: 1001)"),
            ));
        }
        if sys_info.get("little_endian") == Some(&Value::Bool(false)) {
            return Err(TorchFileError::unsupported(
                path,
                "a big-endian torch file; re-save it on a little-endian machine",
            ));
        }
        let Value::List(keys) = keys else {
            return Err(TorchFileError::corrupt(
                path,
                "the storage key list is not a list",
            ));
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
                .ok_or_else(|| TorchFileError::corrupt(path, "a storage key is not a string"))?
                .to_string();
            let dtype = dtypes.get(&key).ok_or_else(|| {
                TorchFileError::corrupt(
                    path,
                    format!("storage `{key}` is listed but no tensor uses it"),
                )
            })?;
            let mut count = [0u8; 8];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut count))
                .map_err(|_| {
                    TorchFileError::corrupt(
                        path,
                        format!("the file ends before storage `{key}`; it is truncated"),
                    )
                })?;
            let numel = u64::from_le_bytes(count);
            let start = offset.saturating_add(8);
            let len = numel
                .checked_mul(dtype.size() as u64)
                .filter(|l| start.checked_add(*l).is_some_and(|end| end <= size))
                .ok_or_else(|| {
                    TorchFileError::corrupt(
                        path,
                        format!(
                            "storage `{key}` declares {numel} elements, past the end of the \
                             file ({size} bytes); it is truncated or its sizes were altered"
                        ),
                    )
                })?;
            storages.insert(key, Extent { offset: start, len });
            offset = start + len;
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

    /// Checks every tensor the pickle declares against its storage, so that a
    /// file is refused when it is opened (and by `inspect`), not half-way
    /// through loading a model.
    fn check_tensors(&self) -> Result<(), TorchFileError> {
        let mut named = Vec::new();
        named_tensors(&self.root, String::new(), &mut named);
        for (name, t) in named {
            self.view(t).map_err(|e| match e {
                TorchFileError::Corrupt { path, message } => TorchFileError::Corrupt {
                    path,
                    message: format!("tensor `{name}`: {message}"),
                },
                TorchFileError::LimitExceeded { path, message } => TorchFileError::LimitExceeded {
                    path,
                    message: format!("tensor `{name}`: {message}"),
                },
                TorchFileError::Unsupported { path, message } => TorchFileError::Unsupported {
                    path,
                    message: format!("tensor `{name}`: {message}"),
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Where a tensor's bytes are and how many it needs, every figure checked:
    /// no overflow, inside its storage, no absurd expansion.
    fn view(&self, t: &TensorRef) -> Result<View, TorchFileError> {
        let path = &self.path;
        let key = &t.storage.key;
        if t.shape.len() > MAX_RANK {
            return Err(TorchFileError::unsupported(
                path,
                format!(
                    "a tensor of {} dimensions (at most {MAX_RANK} are read)",
                    t.shape.len()
                ),
            ));
        }
        let extent = *self.storages.get(key).ok_or_else(|| {
            TorchFileError::corrupt(path, format!("storage `{key}` is missing from the file"))
        })?;
        let impossible = || {
            TorchFileError::corrupt(
                path,
                format!(
                    "shape {:?} with strides {:?} and offset {} on storage `{key}` is an impossible \
                     layout (its sizes overflow); the file is damaged",
                    t.shape,
                    t.stride,
                    t.offset
                ),
            )
        };
        let elem = t.dtype.size() as u64;
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
            .ok_or_else(impossible)?;
        if numel == 0 {
            return Ok(View {
                extent,
                byte_start: 0,
                span_bytes: 0,
                out_bytes: 0,
            });
        }
        let out_bytes = numel.checked_mul(elem).ok_or_else(impossible)?;
        // The span of elements the view touches.
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(0u64, |acc, (&n, &s)| {
                (n as u64 - 1)
                    .checked_mul(s as u64)
                    .and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(impossible)?;
        let span = last.checked_add(1).ok_or_else(impossible)?;
        let start = (t.storage.view_offset as u64)
            .checked_add(t.offset as u64)
            .ok_or_else(impossible)?;
        let byte_start = start.checked_mul(elem).ok_or_else(impossible)?;
        let span_bytes = span.checked_mul(elem).ok_or_else(impossible)?;
        if byte_start
            .checked_add(span_bytes)
            .is_none_or(|end| end > extent.len)
        {
            return Err(TorchFileError::corrupt(
                path,
                format!(
                    "a tensor of shape {:?} reaches past the end of storage `{key}` ({} bytes); the file is damaged",
                    t.shape, extent.len
                ),
            ));
        }
        if numel > span && out_bytes > MAX_EXPANDED {
            return Err(TorchFileError::limit(
                path,
                format!(
                    "shape {:?} with strides {:?} repeats {} of storage `{key}` into {}; a view \
                     that repeats elements (stride 0) is expanded up to {} MiB only. Re-save the \
                     tensor after `.contiguous()`",
                    t.shape,
                    t.stride,
                    human(span_bytes),
                    human(out_bytes),
                    MAX_EXPANDED >> 20
                ),
            ));
        }
        Ok(View {
            extent,
            byte_start,
            span_bytes,
            out_bytes,
        })
    }

    /// Reads a tensor's elements (honouring storage offset and strides) in its stored dtype.
    pub fn tensor(&self, t: &TensorRef, device: &Device) -> Result<Tensor, TorchFileError> {
        let path = &self.path;
        let Some(dtype) = t.dtype.candle() else {
            return Err(TorchFileError::unsupported(
                path,
                format!("{} tensors (candle has no such dtype)", t.dtype.name()),
            ));
        };
        let view = self.view(t)?;
        if view.out_bytes == 0 {
            return Tensor::zeros(t.shape.as_slice(), dtype, device)
                .map_err(|e| TorchFileError::tensor(path, e));
        }
        let elem = t.dtype.size();
        let bytes = if view.span_bytes <= view.out_bytes.saturating_mul(4).max(1 << 20) {
            // Dense enough: read the span at once and lay it out.
            let raw = self.read_at(view.extent.offset + view.byte_start, view.span_bytes)?;
            if is_contiguous(&t.shape, &t.stride) {
                raw
            } else {
                gather(&raw, &t.shape, &t.stride, elem)
            }
        } else {
            // A sparse view (a few rows of a large storage): read only its rows.
            self.read_runs(t, &view, elem)?
        };
        Tensor::from_raw_buffer(&bytes, dtype, &t.shape, device)
            .map_err(|e| TorchFileError::tensor(path, e))
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, TorchFileError> {
        let len = usize::try_from(len)
            .map_err(|_| TorchFileError::limit(&self.path, "a tensor larger than memory"))?;
        let mut raw = vec![0u8; len];
        let mut f = self.file.lock().map_err(|_| {
            TorchFileError::corrupt(&self.path, "file handle poisoned by an earlier panic")
        })?;
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut raw))
            .map_err(|e| TorchFileError::io(&self.path, e))?;
        Ok(raw)
    }

    /// Reads a view run by run: the innermost dimensions that are contiguous
    /// form one read each.
    fn read_runs(
        &self,
        t: &TensorRef,
        view: &View,
        elem: usize,
    ) -> Result<Vec<u8>, TorchFileError> {
        let (shape, stride) = (&t.shape, &t.stride);
        let mut run = 1usize;
        let mut k = shape.len();
        while k > 0 && (shape[k - 1] == 1 || stride[k - 1] == run) {
            run *= shape[k - 1];
            k -= 1;
        }
        let outer: usize = shape[..k].iter().product();
        let mut out = Vec::with_capacity(view.out_bytes as usize);
        let mut idx = vec![0usize; k];
        for _ in 0..outer {
            // In range: `view` checked the last element against the storage.
            let at: u64 = idx.iter().zip(stride).map(|(&i, &s)| (i * s) as u64).sum();
            out.extend(self.read_at(
                view.extent.offset + view.byte_start + at * elem as u64,
                (run * elem) as u64,
            )?);
            for d in (0..k).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

/// Every tensor under `v` with a name for messages (`string_to_param.*`, `state_dict.x`).
fn named_tensors<'a>(v: &'a Value, name: String, out: &mut Vec<(String, &'a TensorRef)>) {
    let join = |part: &str| {
        if name.is_empty() {
            part.to_string()
        } else {
            format!("{name}.{part}")
        }
    };
    match v {
        Value::Tensor(t) => out.push((
            if name.is_empty() {
                "tensor".into()
            } else {
                name
            },
            &**t,
        )),
        Value::List(items) | Value::Tuple(items) => {
            for (i, item) in items.iter().enumerate() {
                named_tensors(item, join(&i.to_string()), out);
            }
        }
        Value::Dict(pairs) => {
            for (k, item) in pairs {
                let part = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => other.kind(),
                };
                named_tensors(item, join(&part), out);
            }
        }
        _ => {}
    }
}

/// The five pickles at the start of a legacy file: magic number, protocol,
/// system info, the object, the storage keys; and the offset after them.
fn legacy_pickles(
    buf: &[u8],
    policy: GlobalPolicy,
    limits: &Limits,
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
        let (v, used) = pickle::load_with(&buf[pos..], policy, limits).map_err(|e| (e, what))?;
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

/// Reads a (small) zip entry whole, its declared size checked against the
/// file first: a patched size must not become an allocation.
fn read_entry(
    zip: &mut zip::ZipArchive<File>,
    name: &str,
    path: &Path,
    file_size: u64,
) -> Result<Vec<u8>, TorchFileError> {
    let entry = zip
        .by_name(name)
        .map_err(|e| TorchFileError::corrupt(path, format!("zip entry `{name}`: {e}")))?;
    let (size, stored) = (entry.size(), entry.compressed_size());
    if size > MAX_PICKLE {
        return Err(TorchFileError::limit(
            path,
            format!(
                "zip entry `{name}` declares {}, over the {} MiB this reader accepts for a pickle",
                human(size),
                MAX_PICKLE >> 20
            ),
        ));
    }
    if stored > file_size
        || (entry.compression() == zip::CompressionMethod::Stored && size > file_size)
    {
        return Err(TorchFileError::corrupt(
            path,
            format!(
                "zip entry `{name}` declares {} but the whole file has {}; the file is truncated \
                 or its sizes were altered",
                human(size.max(stored)),
                human(file_size)
            ),
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    // `take`: never more than declared, whatever the entry's data really holds.
    entry
        .take(size)
        .read_to_end(&mut out)
        .map_err(|e| TorchFileError::corrupt(path, format!("zip entry `{name}`: {e}")))?;
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
