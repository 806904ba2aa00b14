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

/// The process that wrote a temporary file (`.name.tmp-<pid>`), if it is one.
fn temp_owner(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    name.rsplit_once(".tmp-")?.1.parse().ok()
}

/// Whether process `pid` still runs (a temporary file of a live process may
/// be in the middle of its write; a run's lock of a live process holds).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Removes the temporary files that killed processes left below `dir`
/// (`depth` folder levels deep): a write that never reached its rename.
/// Returns what was removed.
pub fn remove_stale_temp_files(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if depth > 0 {
                removed.extend(remove_stale_temp_files(&path, depth - 1));
            }
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = temp_owner(&name) {
            if pid != std::process::id()
                && !process_alive(pid)
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_processes_temp_files_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        // A pid far above any real one: its process is gone.
        let dead = deep.join(".x.safetensors.tmp-4194000");
        let mine = tmp
            .path()
            .join(format!(".y.png.tmp-{}", std::process::id()));
        let plain = tmp.path().join("z.tmp-1");
        for p in [&dead, &mine, &plain] {
            std::fs::write(p, b"partial").unwrap();
        }
        assert!(
            remove_stale_temp_files(tmp.path(), 0).is_empty(),
            "depth 0 stays on top"
        );
        assert_eq!(remove_stale_temp_files(tmp.path(), 2), vec![dead.clone()]);
        assert!(!dead.exists() && mine.exists() && plain.exists());
    }
}
