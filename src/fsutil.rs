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
        std::fs::rename(&tmp, path)?;
        sync_parent(path);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename in `path`'s folder durable (the folder's entry, not only
/// the file's bytes): a node that dies right after a checkpoint's rename
/// must not come back without it. Best effort: some file systems refuse.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// `dir/.name.tmp-<host>-<pid>`: hidden, and unique per process even among
/// the nodes of a cluster that share the workspace.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        temp_host(),
        std::process::id()
    ))
}

/// This host's name as a temporary file carries it (no `/`).
fn temp_host() -> String {
    host_name().replace(['/', '\\'], "_")
}

/// The host and process that wrote a temporary file (`.name.tmp-<host>-<pid>`;
/// `.name.tmp-<pid>` from older versions: this host), if it is one.
fn temp_owner(name: &str) -> Option<(Option<String>, u32)> {
    if !name.starts_with('.') {
        return None;
    }
    let owner = name.rsplit_once(".tmp-")?.1;
    match owner.rsplit_once('-') {
        Some((host, pid)) => Some((Some(host.to_string()), pid.parse().ok()?)),
        None => Some((None, owner.parse().ok()?)),
    }
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

/// Removes the temporary files that killed processes of this host left below `dir`
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
        // Another host's writer cannot be checked from here: left alone.
        if let Some((host, pid)) = temp_owner(&name) {
            let here = host.is_none_or(|h| h == temp_host());
            if here
                && pid != std::process::id()
                && !process_alive(pid)
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed
}

/// This machine's host name (`unknown` if it has none).
pub fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).to_string();
            if !name.is_empty() {
                return name;
            }
        }
    }
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
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
        let dead_here = deep.join(format!(".w.json.tmp-{}-4194001", temp_host()));
        // Another node's writer: its pid means nothing here.
        let elsewhere = deep.join(".v.json.tmp-node-elsewhere-4194002");
        let mine = temp_name(&tmp.path().join("y.png"));
        let plain = tmp.path().join("z.tmp-1");
        for p in [&dead, &dead_here, &elsewhere, &mine, &plain] {
            std::fs::write(p, b"partial").unwrap();
        }
        assert!(
            remove_stale_temp_files(tmp.path(), 0).is_empty(),
            "depth 0 stays on top"
        );
        let mut removed = remove_stale_temp_files(tmp.path(), 2);
        removed.sort();
        let mut want = vec![dead.clone(), dead_here.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(!dead.exists() && !dead_here.exists());
        assert!(elsewhere.exists() && mine.exists() && plain.exists());
        assert_eq!(
            temp_owner(".v.json.tmp-node-7.cluster-12"),
            Some((Some("node-7.cluster".into()), 12))
        );
    }
}
