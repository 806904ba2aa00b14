//! Watching `prompts/` for saves: which file-system events count, which files
//! are prompt files, and the debouncer that turns bursts of saves into one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// Quiet time after the last change of a file before it is rendered: editors
/// write a file in several steps, and fast typists save in bursts.
pub const DEBOUNCE: Duration = Duration::from_millis(120);

/// Only changes of content count; reads (ours included) and metadata updates
/// must not trigger a render, or reading the file would re-trigger itself.
pub fn is_content_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// True for prompt files, false for editor droppings (swap, backup, temp files).
pub fn is_prompt_file(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
        return false;
    };
    !name.starts_with('.') && !name.ends_with('~') && path.extension().is_some_and(|e| e == "toml")
}

/// Watches a folder (not its files: editors save by rename) and sends the
/// paths of changed prompt files. Keep the returned watcher alive.
pub fn watch_prompts(dir: &Path, tx: Sender<PathBuf>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if is_content_change(&event.kind) {
                for p in event.paths {
                    if is_prompt_file(&p) {
                        let _ = tx.send(p);
                    }
                }
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// How often the folder's identity is checked.
const REARM_POLL: Duration = Duration::from_millis(300);

/// Something about the watched folder worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchNotice {
    /// The folder is gone (deleted or moved away); saves are not seen until it is back.
    Lost(PathBuf),
    /// The folder is back (re-created or moved back): watching it again.
    Rearmed(PathBuf),
    /// The watch could not be set up again.
    Failed(PathBuf, String),
}

impl std::fmt::Display for WatchNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchNotice::Lost(p) => write!(
                f,
                "{} is gone; prompt files are watched again when it is back",
                p.display()
            ),
            WatchNotice::Rearmed(p) => write!(f, "{} is back: watching it again", p.display()),
            WatchNotice::Failed(p, e) => write!(f, "cannot watch {} again: {e}", p.display()),
        }
    }
}

/// Identity of a folder: a deleted-and-recreated folder is a new one, which a
/// watch on the old one never sees.
fn folder_identity(dir: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0))
    }
}

/// [`watch_prompts`] that survives its folder being deleted and re-created
/// (`rm -rf prompts; mkdir prompts`, a `git checkout`, a sync tool): a small
/// thread checks the folder's identity and sets the watch up again, telling
/// `notice` what happened. Dropping it stops the thread and the watch.
pub struct PromptWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PromptWatch {
    pub fn start(
        dir: &Path,
        tx: Sender<PathBuf>,
        notice: impl Fn(WatchNotice) + Send + 'static,
    ) -> notify::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let first = watch_prompts(dir, tx.clone())?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let dir = dir.to_path_buf();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("dreamartist-prompt-watch".into())
                .spawn(move || {
                    let mut watcher = Some(first);
                    let mut identity = folder_identity(&dir);
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(REARM_POLL);
                        let now = folder_identity(&dir);
                        if now == identity {
                            continue;
                        }
                        watcher = None;
                        match now {
                            None => notice(WatchNotice::Lost(dir.clone())),
                            Some(_) => match watch_prompts(&dir, tx.clone()) {
                                Ok(w) => {
                                    watcher = Some(w);
                                    notice(WatchNotice::Rearmed(dir.clone()));
                                }
                                Err(e) => notice(WatchNotice::Failed(dir.clone(), e.to_string())),
                            },
                        }
                        identity = now;
                    }
                    drop(watcher);
                })
                .map_err(|e| notify::Error::generic(&e.to_string()))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PromptWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Coalesces changes per file: a file is due once it has been quiet for
/// [`DEBOUNCE`]. Time is passed in, so callers (and tests) control the clock.
#[derive(Debug, Default)]
pub struct Debouncer {
    pending: HashMap<PathBuf, Instant>,
}

impl Debouncer {
    pub fn record(&mut self, path: PathBuf, now: Instant) {
        self.pending.insert(path, now);
    }

    /// The files quiet since `DEBOUNCE`, removed from the pending set.
    pub fn due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= DEBOUNCE)
            .map(|(p, _)| p.clone())
            .collect();
        due.sort();
        for p in &due {
            self.pending.remove(p);
        }
        due
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_become_one_and_editor_files_are_ignored() {
        let mut d = Debouncer::default();
        let t0 = Instant::now();
        let p = PathBuf::from("prompts/a.toml");
        d.record(p.clone(), t0);
        d.record(p.clone(), t0 + Duration::from_millis(50));
        d.record(p.clone(), t0 + Duration::from_millis(100));
        assert!(d.due(t0 + Duration::from_millis(150)).is_empty());
        assert_eq!(d.due(t0 + Duration::from_millis(230)), vec![p]);
        assert!(d.is_empty());
        assert!(is_prompt_file(Path::new("prompts/a.toml")));
        assert!(!is_prompt_file(Path::new("prompts/.a.toml.swp")));
        assert!(!is_prompt_file(Path::new("prompts/a.toml~")));
        assert!(!is_prompt_file(Path::new("prompts/4913")));
    }
}
