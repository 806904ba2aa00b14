//! The pseudo-words a workspace offers to prompts: every trained concept's
//! `<name>` / `<name-neg>`, and embeddings dropped into `embeddings/`.

use anyhow::Result;

use super::{list, load_embedding};
use crate::generate::WordBank;
use crate::workspace::Workspace;

/// Builds the word bank of a workspace. Concepts without trained vectors are skipped.
pub fn word_bank(ws: &Workspace) -> Result<WordBank> {
    let mut bank = WordBank::new();
    for name in list(ws) {
        let dir = ws.concept_dir(&name);
        for word in [name.clone(), format!("{name}-neg")] {
            let file = dir.join(format!("{word}.safetensors"));
            if file.is_file() {
                let (t, _) = load_embedding(&file)?;
                bank.insert(&word, t, file.display().to_string());
            }
        }
    }
    let emb_dir = ws.root.join("embeddings");
    if let Ok(entries) = std::fs::read_dir(&emb_dir) {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let (t, _) = load_embedding(&file)?;
            bank.insert(&stem, t, file.display().to_string());
        }
    }
    Ok(bank)
}
