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
