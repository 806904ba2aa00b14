//! What the workbench lists from the workspace's folders: reference images,
//! concepts (with their last run) and prompt files. Read on the worker thread
//! ([`super::tasks`]) and once when the app starts.

use std::path::{Path, PathBuf};

use super::state::ConceptRow;
use crate::concept::{self, Concept};
use crate::train::RunDir;
use crate::workspace::Workspace;

/// One reading of the workspace's folders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub references: Vec<PathBuf>,
    pub concepts: Vec<ConceptRow>,
    pub prompts: Vec<PathBuf>,
}

impl Scan {
    /// Reads `references/`, `concepts/` and `prompts/` (a few directory
    /// listings and one small TOML file per concept).
    pub fn read(ws: &Workspace) -> Self {
        let mut concepts = Vec::new();
        for name in concept::list(ws) {
            if let Ok(c) = Concept::load(ws, &name) {
                let dir = ws.concept_dir(&name);
                concepts.push(ConceptRow {
                    status: concept::concept_status(&dir, &name),
                    last_run: RunDir::ids(&dir).pop(),
                    references: c.reference_paths(ws),
                    name,
                    pos: c.pos_vectors,
                    neg: c.neg_vectors,
                    preset: c.preset,
                    method: c.train.method.clone(),
                    steps: c.train.steps,
                });
            }
        }
        Self {
            references: sorted_files(&ws.references_dir(), is_image),
            concepts,
            prompts: sorted_files(&ws.prompts_dir(), |p| {
                p.extension().is_some_and(|e| e == "toml")
            }),
        }
    }
}

/// A reference image (its caption and `_mask` companions are not listed).
fn is_image(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    !name.starts_with('.')
        && !name.contains("_mask.")
        && [".png", ".jpg", ".jpeg", ".webp"]
            .iter()
            .any(|e| name.ends_with(e))
}

fn sorted_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .collect();
    v.sort();
    v
}
