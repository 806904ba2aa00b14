//! Concepts: a DreamArtist pseudo-word pair (`<name>` and `<name-neg>`), its
//! references and training settings (`concepts/<name>/concept.toml`), and the
//! embedding files it produces.

pub mod create;
pub mod embedding;
pub mod name;
pub mod pairlock;
pub mod preset;
pub mod reference;
pub mod rundir;
pub mod runlock;
pub mod runnotes;
pub mod runstate;
pub mod train_config;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::workspace::{write_atomic, Workspace};

pub use create::{add, add_configured, NewConcept};
pub use embedding::{load_embedding, save_embedding, EmbeddingMeta};
pub use name::{NameError, WordName};
pub use preset::Preset;
pub use rundir::{
    adapter_files, compare_run_ids, lora_paths, MetricsTail, RunDir, RunLookupError, StepMetrics,
};
pub use runlock::{RunLock, RunLockError};
pub use runstate::{concept_status, ConceptStatus, EndKind, EndRecord, RunState};
pub use train_config::{Method, TrainConfig, TrainSize};

pub const CONCEPT_FILE: &str = "concept.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    /// The reason, from [`WordName`].
    #[error("invalid concept name: {0}")]
    BadName(String),
    #[error("concept `{name}` does not exist in {dir}; known concepts: {known}")]
    Unknown {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("concept `{0}` already exists; pick another name or delete concepts/{0}/")]
    Exists(String),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `concepts/<name>/concept.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Concept {
    pub name: String,
    /// Reference images, relative to the workspace.
    pub references: Vec<String>,
    pub preset: String,
    pub pos_vectors: usize,
    pub neg_vectors: usize,
    pub init_text: String,
    /// The negative word's own init text (the DreamArtist extension's
    /// separate one); `init_text` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neg_init_text: Option<String>,
    /// The class word ("cat") used by evaluation prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub train: TrainConfig,
}

/// Checks a concept name ([`WordName::concept`]).
pub fn validate_name(name: &str) -> Result<(), ConceptError> {
    WordName::concept(name)
        .map(|_| ())
        .map_err(|e| ConceptError::BadName(e.to_string()))
}

impl Concept {
    /// The positive pseudo-word as written in prompts: `<name>`.
    pub fn positive_word(&self) -> String {
        format!("<{}>", self.name)
    }

    /// The negative pseudo-word: `<name-neg>`.
    pub fn negative_word(&self) -> String {
        format!("<{}-neg>", self.name)
    }

    pub fn dir(&self, ws: &Workspace) -> PathBuf {
        ws.concept_dir(&self.name)
    }

    /// Reference image paths resolved against the workspace.
    pub fn reference_paths(&self, ws: &Workspace) -> Vec<PathBuf> {
        self.references
            .iter()
            .map(|r| {
                let p = Path::new(r);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    ws.root.join(p)
                }
            })
            .collect()
    }

    pub fn load(ws: &Workspace, name: &str) -> Result<Self, ConceptError> {
        // A name is a folder under concepts/: `../x` would read (and training
        // would write) outside the workspace.
        validate_name(name)?;
        let path = ws.concept_dir(name).join(CONCEPT_FILE);
        if !path.is_file() {
            return Err(ConceptError::Unknown {
                name: name.to_string(),
                dir: ws.concepts_dir(),
                known: {
                    let k = list(ws);
                    if k.is_empty() {
                        "none (create one with `dreamartist concept add`)".into()
                    } else {
                        k.join(", ")
                    }
                },
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConceptError::Io {
            path: path.clone(),
            source,
        })?;
        let c: Concept = toml::from_str(&text).map_err(|e| ConceptError::Invalid {
            path: path.clone(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if c.name != name {
            return Err(ConceptError::Invalid {
                path,
                message: format!("name is `{}` but the folder is `{name}`", c.name),
            });
        }
        // The preset only records where the options came from, but an unknown
        // one is a typo the user should hear about.
        if let Err(message) = Preset::parse(&c.preset) {
            return Err(ConceptError::Invalid { path, message });
        }
        Ok(c)
    }

    pub fn save(&self, ws: &Workspace) -> Result<(), ConceptError> {
        let dir = self.dir(ws);
        std::fs::create_dir_all(&dir).map_err(|source| ConceptError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(CONCEPT_FILE);
        let text = toml::to_string_pretty(self).map_err(|e| ConceptError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes()).map_err(|source| ConceptError::Io { path, source })
    }
}

/// Names of the concepts in a workspace, sorted.
pub fn list(ws: &Workspace) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ws.concepts_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(CONCEPT_FILE).is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}
