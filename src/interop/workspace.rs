//! Bringing foreign embeddings into a workspace, and taking a workspace's
//! words out again.
//!
//! Import: a DreamArtist pair (`X` + `X-neg`) becomes concept `X`
//! (`concepts/X/concept.toml` with the vector counts and no references, plus
//! `X.safetensors` / `X-neg.safetensors` in our format), so `<X>` and `<X-neg>`
//! work in prompts; a single word goes to `embeddings/<name>.safetensors`, which
//! the word bank offers as `<name>`; `--as-negative-of C` stores a word as C's
//! negative. Widths are checked per text encoder against the workspace model's
//! (read from its configs or the checkpoint's shapes; the model is not loaded),
//! so an SD 1.x word is refused by an SDXL model even though SDXL's first
//! encoder is as wide: it has no columns for the second one. SDXL words are
//! stored as `clip_l` + `clip_g`, the layout the other tools read.
//! Everything is validated before the first file is written.

use std::path::{Path, PathBuf};

use super::embeddings::{load_embedding_file, pair_up, Embedding, Group};
use super::export::{export_words, ExportFormat, ExportWord, Exported};
use super::{describe_embedding_widths, InteropError};
use crate::concept::{
    list, load_embedding, save_embedding, validate_name, Concept, ConceptError, EmbeddingMeta,
    Preset, WordName, CONCEPT_FILE,
};
use crate::sd::model::{text_encoder_widths, ModelSpec};
use crate::workspace::Workspace;

/// What `import` asks for.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Rename the (single) word or pair.
    pub name: Option<String>,
    /// Store the (single) word as this concept's negative.
    pub as_negative_of: Option<String>,
}

/// What one import produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    Concept {
        name: String,
        pos_vectors: usize,
        neg_vectors: usize,
        files: Vec<PathBuf>,
    },
    Embedding {
        name: String,
        vectors: usize,
        file: PathBuf,
    },
    Negative {
        concept: String,
        vectors: usize,
        file: PathBuf,
    },
}

impl Imported {
    /// One line for the CLI.
    pub fn describe(&self) -> String {
        match self {
            Imported::Concept {
                name,
                pos_vectors,
                neg_vectors,
                ..
            } => format!(
                "concept <{name}> / <{name}-neg> ({pos_vectors} + {neg_vectors} vectors) in concepts/{name}/"
            ),
            Imported::Embedding {
                name,
                vectors,
                file,
            } => format!("<{name}> ({vectors} vectors) in {}", file.display()),
            Imported::Negative {
                concept,
                vectors,
                file,
            } => format!(
                "<{concept}-neg> ({vectors} vectors), the negative of concept {concept}, in {}",
                file.display()
            ),
        }
    }
}

/// The widths of the workspace model's text encoders (`[768]`, `[768, 1280]`).
pub fn workspace_text_widths(ws: &Workspace) -> Result<Vec<usize>, InteropError> {
    Ok(text_encoder_widths(&ModelSpec::parse(&ws.model_spec()))?)
}

/// Names usable as a `<word>` in prompts and as a file name ([`WordName`]).
fn validate_word(name: &str) -> Result<(), InteropError> {
    WordName::parse(name)
        .map(|_| ())
        .map_err(|e| InteropError::Invalid(format!("{e} (give one with --name)")))
}

fn meta_of(e: &Embedding, name: &str, pos: usize, neg: usize) -> EmbeddingMeta {
    EmbeddingMeta {
        name: name.to_string(),
        step: e.step.unwrap_or(0),
        base_model: e.checkpoint_name.clone().unwrap_or_default(),
        base_model_hash: e.checkpoint_hash.clone().unwrap_or_default(),
        pos_vectors: pos,
        neg_vectors: neg,
        widths: e.widths.clone(),
        run: String::new(),
    }
}

fn save(path: &Path, e: &Embedding, meta: &EmbeddingMeta) -> Result<(), InteropError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| InteropError::write(dir, err))?;
    }
    save_embedding(path, &e.vectors, meta)
        .map_err(|err| InteropError::write(path, format!("{err:#}")))
}

/// Is `word` already offered to prompts by this workspace (a concept's word or an embedding)?
fn word_taken(ws: &Workspace, word: &str) -> Option<PathBuf> {
    let emb = ws
        .root
        .join("embeddings")
        .join(format!("{word}.safetensors"));
    if emb.exists() {
        return Some(emb);
    }
    let base = word.strip_suffix("-neg").unwrap_or(word);
    let concept = ws.concept_dir(base).join(CONCEPT_FILE);
    concept.exists().then_some(concept)
}

fn taken_error(word: &str, by: &Path) -> InteropError {
    InteropError::Invalid(format!(
        "the workspace already has <{word}> ({}); pick another name with --name or delete that file",
        by.display()
    ))
}

/// Imports embedding files into a workspace.
pub fn import(
    ws: &Workspace,
    files: &[PathBuf],
    opts: &ImportOptions,
) -> Result<Vec<Imported>, InteropError> {
    if files.is_empty() {
        return Err(InteropError::Invalid("no files to import".into()));
    }
    let words = files
        .iter()
        .map(|f| load_embedding_file(f))
        .collect::<Result<Vec<_>, _>>()?;
    let widths = workspace_text_widths(ws)?;
    for w in &words {
        w.check_width(&widths)?;
        w.check_finite()?;
    }
    if let Some(concept) = &opts.as_negative_of {
        let [word] = words.as_slice() else {
            return Err(InteropError::Invalid(format!(
                "--as-negative-of takes exactly one file, got {}",
                words.len()
            )));
        };
        return import_negative(ws, concept, word).map(|i| vec![i]);
    }
    let mut groups = pair_up(words);
    if let Some(name) = &opts.name {
        if groups.len() != 1 {
            return Err(InteropError::Invalid(format!(
                "--name renames one word or one pair, but the files hold {} ({}); import them separately",
                groups.len(),
                groups.iter().map(Group::name).collect::<Vec<_>>().join(", ")
            )));
        }
        groups[0].rename(name);
    }
    // Validate everything before writing anything.
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].iter().any(|o| o.name() == g.name()) {
            return Err(InteropError::Invalid(format!(
                "two of the files are both named `{}`; import them separately with --name",
                g.name()
            )));
        }
        match g {
            Group::Pair { pos, .. } => {
                validate_name(&pos.name)?;
                if ws.concept_dir(&pos.name).join(CONCEPT_FILE).exists() {
                    return Err(ConceptError::Exists(pos.name.clone()).into());
                }
                for w in [pos.name.clone(), format!("{}-neg", pos.name)] {
                    if let Some(by) = word_taken(ws, &w) {
                        return Err(taken_error(&w, &by));
                    }
                }
            }
            Group::Single(e) => {
                validate_word(&e.name)?;
                if let Some(by) = word_taken(ws, &e.name) {
                    return Err(taken_error(&e.name, &by));
                }
            }
        }
    }
    groups
        .iter()
        .map(|g| match g {
            Group::Pair { pos, neg } => import_pair(ws, pos, neg),
            Group::Single(e) => {
                let file = ws
                    .root
                    .join("embeddings")
                    .join(format!("{}.safetensors", e.name));
                save(&file, e, &meta_of(e, &e.name, e.count(), 0))?;
                Ok(Imported::Embedding {
                    name: e.name.clone(),
                    vectors: e.count(),
                    file,
                })
            }
        })
        .collect()
}

fn import_pair(ws: &Workspace, pos: &Embedding, neg: &Embedding) -> Result<Imported, InteropError> {
    let name = pos.name.clone();
    let (p, n) = (pos.count(), neg.count());
    let dir = ws.concept_dir(&name);
    let pos_file = dir.join(format!("{name}.safetensors"));
    let neg_file = dir.join(format!("{name}-neg.safetensors"));
    save(&pos_file, pos, &meta_of(pos, &name, p, n))?;
    save(&neg_file, neg, &meta_of(neg, &format!("{name}-neg"), p, n))?;
    // The imported pair is the trained result; training it further needs references.
    let concept = Concept {
        name: name.clone(),
        references: Vec::new(),
        preset: Preset::Photo.name().to_string(),
        pos_vectors: p,
        neg_vectors: n,
        init_text: "*".into(),
        neg_init_text: None,
        class: None,
        train: Preset::Photo.train_config(),
    };
    concept.save(ws)?;
    Ok(Imported::Concept {
        name,
        pos_vectors: p,
        neg_vectors: n,
        files: vec![pos_file, neg_file],
    })
}

fn import_negative(
    ws: &Workspace,
    concept: &str,
    word: &Embedding,
) -> Result<Imported, InteropError> {
    let mut c = Concept::load(ws, concept)?;
    let file = ws
        .concept_dir(concept)
        .join(format!("{concept}-neg.safetensors"));
    if file.exists() {
        return Err(InteropError::Invalid(format!(
            "concept {concept} already has a negative word ({}); delete it first to replace it",
            file.display()
        )));
    }
    let n = word.count();
    save(
        &file,
        word,
        &meta_of(word, &format!("{concept}-neg"), c.pos_vectors, n),
    )?;
    c.neg_vectors = n;
    c.save(ws)?;
    Ok(Imported::Negative {
        concept: concept.to_string(),
        vectors: n,
        file,
    })
}

/// One word read from the workspace, for export.
struct Stored {
    name: String,
    vectors: candle_core::Tensor,
    meta: EmbeddingMeta,
}

fn read_stored(path: &Path, name: &str) -> Result<Stored, InteropError> {
    let (vectors, meta) = load_embedding(path).map_err(|e| InteropError::Corrupt {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    Ok(Stored {
        name: name.to_string(),
        vectors,
        meta,
    })
}

/// Exports a concept's pair (or an `embeddings/` word) of a workspace; the files written.
pub fn export(
    ws: &Workspace,
    name: &str,
    format: ExportFormat,
    out: &Path,
) -> Result<Vec<PathBuf>, InteropError> {
    export_with_note(ws, name, format, out).map(|e| e.files)
}

/// [`export`], with how to load the files where the target tool needs to be told.
pub fn export_with_note(
    ws: &Workspace,
    name: &str,
    format: ExportFormat,
    out: &Path,
) -> Result<Exported, InteropError> {
    let concept_dir = ws.concept_dir(name);
    let mut stored = Vec::new();
    if concept_dir.join(CONCEPT_FILE).is_file() {
        let pos = concept_dir.join(format!("{name}.safetensors"));
        if !pos.is_file() {
            return Err(InteropError::Invalid(format!(
                "concept {name} has no trained vectors yet ({} is missing); train it first with `dreamartist train {name}`",
                pos.display()
            )));
        }
        stored.push(read_stored(&pos, name)?);
        let neg_name = format!("{name}-neg");
        let neg = concept_dir.join(format!("{neg_name}.safetensors"));
        if neg.is_file() {
            stored.push(read_stored(&neg, &neg_name)?);
        }
    } else {
        let emb = ws
            .root
            .join("embeddings")
            .join(format!("{name}.safetensors"));
        if !emb.is_file() {
            let mut known = list(ws);
            if let Ok(entries) = std::fs::read_dir(ws.root.join("embeddings")) {
                known.extend(entries.flatten().filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "safetensors")
                        .then(|| p.file_stem().map(|s| s.to_string_lossy().to_string()))
                        .flatten()
                }));
            }
            return Err(InteropError::Invalid(format!(
                "`{name}` is neither a concept nor an embedding of the workspace {}; known: {}",
                ws.root.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        stored.push(read_stored(&emb, name)?);
    }
    let words: Vec<ExportWord> = stored
        .iter()
        .map(|s| ExportWord {
            name: &s.name,
            vectors: &s.vectors,
            widths: &s.meta.widths,
            step: (s.meta.step > 0).then_some(s.meta.step),
            checkpoint_name: Some(s.meta.base_model.as_str()).filter(|v| !v.is_empty()),
            checkpoint_hash: Some(s.meta.base_model_hash.as_str()).filter(|v| !v.is_empty()),
        })
        .collect();
    let mut exported = export_words(&words, format, out)?;
    // DreamArtist++: the adapters travel with the words, in the kohya LoRA
    // layout every target tool reads.
    let adapters = match stored.first() {
        Some(pos) if concept_dir.join(CONCEPT_FILE).is_file() => {
            super::lora::export_adapters(ws, name, &pos.meta.run, out)?
        }
        _ => Vec::new(),
    };
    if !adapters.is_empty() {
        let note = format!(
            "The concept's DreamArtist++ adapters are kohya LoRA files: load {} as a LoRA \
             (A1111 `<lora:{name}.lora:0.8>`, ComfyUI LoraLoader, diffusers \
             `pipe.load_lora_weights(dir, weight_name=...)`) at ~0.8 with the words. Other tools \
             apply a LoRA to both CFG halves; the negative adapter {} acts only on the \
             unconditional half in dreamartist.\n",
            adapters[0].display(),
            adapters
                .get(1)
                .map(|p| format!("({})", p.display()))
                .unwrap_or_else(|| "(none here)".into()),
        );
        exported.note = Some(exported.note.unwrap_or_default() + &note);
        exported.files.extend(adapters);
    }
    Ok(exported)
}

/// Converts files to another layout without a workspace (no check against a
/// model; a pair's two words must be of one family).
pub fn convert(
    files: &[PathBuf],
    format: ExportFormat,
    out: &Path,
    name: Option<&str>,
) -> Result<Exported, InteropError> {
    if files.is_empty() {
        return Err(InteropError::Invalid("no files to convert".into()));
    }
    let words = files
        .iter()
        .map(|f| load_embedding_file(f))
        .collect::<Result<Vec<_>, _>>()?;
    for w in &words {
        w.check_finite()?;
    }
    let mut groups = pair_up(words);
    if let Some(n) = name {
        if groups.len() != 1 {
            return Err(InteropError::Invalid(format!(
                "--name renames one word or one pair, but the files hold {}; convert them separately",
                groups.len()
            )));
        }
        groups[0].rename(n);
    }
    for g in &groups {
        if let Group::Pair { pos, neg } = g {
            if pos.widths != neg.widths {
                return Err(InteropError::Invalid(format!(
                    "{} and {} would be a DreamArtist pair, but one is {} and the other {}; \
                     a pair's words are trained together for one model",
                    pos.source.display(),
                    neg.source.display(),
                    describe_embedding_widths(&pos.widths),
                    describe_embedding_widths(&neg.widths)
                )));
            }
        }
    }
    let all: Vec<&Embedding> = groups.iter().flat_map(Group::words).collect();
    let words: Vec<ExportWord> = all
        .iter()
        .map(|e| ExportWord {
            name: &e.name,
            vectors: &e.vectors,
            widths: &e.widths,
            step: e.step,
            checkpoint_name: e.checkpoint_name.as_deref(),
            checkpoint_hash: e.checkpoint_hash.as_deref(),
        })
        .collect();
    export_words(&words, format, out)
}
