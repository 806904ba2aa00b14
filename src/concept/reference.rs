//! A reference image's files: the image, its optional `<stem>.txt` caption
//! and `<stem>_mask.png` weight map, and opening an image with an error that
//! names the file and the fix. Shared by `concept add` and the trainer.

use std::path::{Path, PathBuf};

use image::DynamicImage;

/// A reference file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReferenceError {
    pub path: PathBuf,
    pub message: String,
}

impl ReferenceError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The caption and weight-map paths beside a reference image.
pub fn companions(path: &Path) -> (PathBuf, PathBuf) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    (
        dir.join(format!("{stem}.txt")),
        dir.join(format!("{stem}_mask.png")),
    )
}

/// Opens an image, naming the file and the fix on failure.
pub fn open_image(path: &Path) -> Result<DynamicImage, ReferenceError> {
    if !path.is_file() {
        return Err(ReferenceError::new(
            path,
            "file not found; add the image again or fix the path in concept.toml",
        ));
    }
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| ReferenceError::new(path, format!("cannot open: {e}")))?
        .decode()
        .map_err(|e| {
            ReferenceError::new(
                path,
                format!("not a readable image ({e}); replace it with a PNG or JPEG"),
            )
        })
}
