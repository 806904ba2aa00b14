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

/// Extensions of the DreamArtist extension's attention maps (`<stem>_att.<ext>`).
const ATT_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "bmp"];

/// The caption and weight-map paths beside a reference image: `<stem>.txt`,
/// and `<stem>_mask.png` or, as the DreamArtist extension names them,
/// `<stem>_att.<png|jpg|jpeg|webp|bmp>` (the first that exists;
/// `<stem>_mask.png` when none does).
pub fn companions(path: &Path) -> (PathBuf, PathBuf) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mask = dir.join(format!("{stem}_mask.png"));
    let mask = if mask.is_file() {
        mask
    } else {
        ATT_EXTENSIONS
            .iter()
            .map(|e| dir.join(format!("{stem}_att.{e}")))
            .find(|p| p.is_file())
            .unwrap_or(mask)
    };
    (dir.join(format!("{stem}.txt")), mask)
}

/// A1111's `[filewords]` when an image has no caption file: its file name
/// without extension and without leading digits and dashes (`00012-a red
/// car.png` → `a red car`).
pub fn filewords_from_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    stem.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-')
        .trim_start()
        .to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filewords_fall_back_to_the_file_name_as_a1111() {
        assert_eq!(
            filewords_from_name(Path::new("d/00012-a red car.png")),
            "a red car"
        );
        assert_eq!(
            filewords_from_name(Path::new("cat on sofa.jpg")),
            "cat on sofa"
        );
        assert_eq!(filewords_from_name(Path::new("123.png")), "");
    }

    #[test]
    fn extension_attention_maps_are_companions_too() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("tri.png");
        let (caption, mask) = companions(&img);
        assert_eq!(caption, tmp.path().join("tri.txt"));
        assert_eq!(mask, tmp.path().join("tri_mask.png"));
        std::fs::write(tmp.path().join("tri_att.jpg"), b"x").unwrap();
        assert_eq!(companions(&img).1, tmp.path().join("tri_att.jpg"));
        // Our own name wins when both exist.
        std::fs::write(tmp.path().join("tri_mask.png"), b"x").unwrap();
        assert_eq!(companions(&img).1, tmp.path().join("tri_mask.png"));
    }
}
