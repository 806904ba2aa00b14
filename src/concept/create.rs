//! Creating a concept from reference images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::reference::{companions, open_image};
use super::{validate_name, Concept, ConceptError, Preset, CONCEPT_FILE};
use crate::workspace::Workspace;

/// What `concept add` asks for.
#[derive(Debug, Clone)]
pub struct NewConcept {
    pub name: String,
    pub references: Vec<PathBuf>,
    pub preset: String,
    pub pos_vectors: Option<usize>,
    pub neg_vectors: Option<usize>,
    pub init_text: String,
    pub class: Option<String>,
    /// `dreamartist` (default), `dreamartist++` or `ti`.
    pub method: Option<String>,
}

/// Creates a concept: validates everything first (name, preset, images, masks),
/// then copies the references into the workspace and writes `concept.toml`.
pub fn add(ws: &Workspace, new: &NewConcept) -> Result<Concept> {
    add_configured(ws, new, |_| Ok(()))
}

/// [`add`] with a last say on the concept before anything is written (e.g.
/// `--init-mode mean`): an error from `configure` leaves the workspace untouched.
pub fn add_configured(
    ws: &Workspace,
    new: &NewConcept,
    configure: impl FnOnce(&mut Concept) -> Result<()>,
) -> Result<Concept> {
    let name = new.name.as_str();
    let references = &new.references;
    validate_name(name)?;
    if new.init_text.trim().is_empty() {
        bail!("the init text is empty; use a word such as `*` or the concept's class");
    }
    let preset = Preset::parse(&new.preset).map_err(anyhow::Error::msg)?;
    if ws.concept_dir(name).join(CONCEPT_FILE).exists() {
        return Err(ConceptError::Exists(name.to_string()).into());
    }
    let (p, n) = preset.vectors();
    let (pos_vectors, neg_vectors) = (new.pos_vectors.unwrap_or(p), new.neg_vectors.unwrap_or(n));
    if pos_vectors == 0 || neg_vectors == 0 || pos_vectors + neg_vectors > 75 {
        bail!("vector counts must be at least 1 and fit a 75-token prompt (got {pos_vectors} + {neg_vectors})");
    }
    let mut c = Concept {
        name: name.to_string(),
        references: Vec::new(),
        preset: preset.name().to_string(),
        pos_vectors,
        neg_vectors,
        init_text: new.init_text.clone(),
        neg_init_text: None,
        class: new.class.clone(),
        train: preset.train_config(),
    };
    if let Some(m) = &new.method {
        let m: super::Method = m.parse().map_err(anyhow::Error::msg)?;
        c.train.method = m.name().to_string();
    }
    configure(&mut c)?;
    // Validate before writing anything.
    for r in references {
        let img = open_image(r)?;
        let (_, mask) = companions(r);
        if mask.is_file() {
            let m = open_image(&mask)?;
            if image::GenericImageView::dimensions(&m) != image::GenericImageView::dimensions(&img)
            {
                bail!(
                    "{}: the mask's size differs from its reference {}; save it at the image's size",
                    mask.display(),
                    r.display()
                );
            }
        }
    }
    let mut stored = Vec::new();
    for r in references {
        stored.push(import_reference(ws, r)?);
    }
    c.references = stored;
    c.save(ws)?;
    Ok(c)
}

/// Copies a reference (and its caption/mask companions) into `references/`
/// unless it already lives in the workspace; returns its workspace-relative path.
/// The same image with the same companions is stored once; anything else that
/// would land on a taken name gets `<stem>-2`, `<stem>-3`, … instead.
pub fn import_reference(ws: &Workspace, src: &Path) -> Result<String> {
    let abs_src = src
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", src.display()))?;
    let root = ws
        .root
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", ws.root.display()))?;
    if let Ok(rel) = abs_src.strip_prefix(&root) {
        return Ok(rel.to_string_lossy().to_string());
    }
    let dir = ws.references_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let file_name = src
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "reference.png".into());
    let (stem, ext) = match file_name.rsplit_once('.') {
        Some((s, e)) => (s.to_string(), format!(".{e}")),
        None => (file_name.clone(), String::new()),
    };
    let bytes = std::fs::read(src).with_context(|| format!("{}: cannot read", src.display()))?;
    // The caption and weight map travel with the image: a stored reference is
    // the same only if all three are, and an existing file is never replaced
    // (another concept trains on it).
    let (caption, mask) = companions(src);
    // `_mask.png` or the extension's `_att.<ext>`: the copy keeps the suffix.
    let src_stem = src
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mask_suffix = mask
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .and_then(|n| n.strip_prefix(&src_stem).map(String::from))
        .unwrap_or_else(|| "_mask.png".into());
    let mut files: Vec<(String, Option<Vec<u8>>)> = vec![(ext.clone(), Some(bytes))];
    for (from, suffix) in [(caption, ".txt".to_string()), (mask, mask_suffix)] {
        let data = if from.is_file() {
            Some(std::fs::read(&from).with_context(|| format!("{}: cannot read", from.display()))?)
        } else {
            None
        };
        files.push((suffix.to_string(), data));
    }
    let mut dest_stem = stem.clone();
    let mut n = 2;
    loop {
        let stored: Vec<Option<Vec<u8>>> = files
            .iter()
            .map(|(suffix, _)| std::fs::read(dir.join(format!("{dest_stem}{suffix}"))).ok())
            .collect();
        if stored.iter().all(Option::is_none) {
            for (suffix, data) in &files {
                if let Some(data) = data {
                    let to = dir.join(format!("{dest_stem}{suffix}"));
                    crate::workspace::write_atomic(&to, data)
                        .with_context(|| format!("{}: cannot write", to.display()))?;
                }
            }
            break;
        }
        if stored.iter().zip(&files).all(|(s, (_, d))| s == d) {
            break;
        }
        dest_stem = format!("{stem}-{n}");
        n += 1;
    }
    Ok(format!("references/{dest_stem}{ext}"))
}
