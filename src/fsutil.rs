//! Crash-safe file writes (temporary file + rename).
//!
//! A leaf module: it depends on nothing else in the crate, so every layer —
//! `sd` (the shipped vocabulary), `workspace`, `concept`, `train`, `interop` —
//! can write files the same way without depending on each other.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary file next to `path`, syncs it, then renames it
/// over `path`: readers see the old file or the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp-<pid>`: hidden, and unique per process.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Saves tensors as safetensors atomically (temp file + rename).
pub fn save_safetensors_atomic(
    path: &Path,
    tensors: &[(&str, &candle_core::Tensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> anyhow::Result<()> {
    let views: Vec<(String, candle_core::Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                (*n).to_string(),
                t.to_device(&candle_core::Device::Cpu)?.contiguous()?,
            ))
        })
        .collect::<candle_core::Result<_>>()?;
    let bytes = safetensors::serialize(views.iter().map(|(n, t)| (n.as_str(), t)), metadata)?;
    write_atomic(path, &bytes)?;
    Ok(())
}
