//! The user's words about a run: a free-text note (`note.md`) and tags
//! (`tags`, one per line), kept in the run folder so they travel with it.
//! Both are plain files a user may edit by hand; both are written atomically.

use std::path::PathBuf;

use super::rundir::RunDir;
use crate::fsutil::write_atomic;

pub const NOTE_FILE: &str = "note.md";
pub const TAGS_FILE: &str = "tags";

/// A tag that cannot be stored as one line of `tags`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("tag `{0}` is empty or has spaces, commas or control characters; use words like `best` or `lr-high`")]
pub struct BadTag(pub String);

/// Checks a tag: one word (no whitespace, commas or control characters).
pub fn check_tag(tag: &str) -> Result<(), BadTag> {
    if tag.is_empty()
        || tag
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c.is_control())
    {
        return Err(BadTag(tag.to_string()));
    }
    Ok(())
}

impl RunDir {
    pub fn note_path(&self) -> PathBuf {
        self.path().join(NOTE_FILE)
    }

    pub fn tags_path(&self) -> PathBuf {
        self.path().join(TAGS_FILE)
    }

    /// The run's note ("" without one).
    pub fn note(&self) -> String {
        std::fs::read_to_string(self.note_path()).unwrap_or_default()
    }

    /// Replaces the note; an empty one removes `note.md`.
    pub fn set_note(&self, text: &str) -> std::io::Result<()> {
        let text = text.trim_end();
        if text.is_empty() {
            return match std::fs::remove_file(self.note_path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        write_atomic(&self.note_path(), format!("{text}\n").as_bytes())
    }

    /// The run's tags, in file order, each once (blank lines and `#` comments skipped).
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        for line in std::fs::read_to_string(self.tags_path())
            .unwrap_or_default()
            .lines()
        {
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') && !tags.iter().any(|x| x == t) {
                tags.push(t.to_string());
            }
        }
        tags
    }

    /// Replaces the tags (each checked); none removes `tags`.
    pub fn set_tags(&self, tags: &[String]) -> Result<(), TagsError> {
        for t in tags {
            check_tag(t)?;
        }
        let mut unique: Vec<&String> = Vec::new();
        for t in tags {
            if !unique.contains(&t) {
                unique.push(t);
            }
        }
        let path = self.tags_path();
        let result = if unique.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let text: String = unique.iter().map(|t| format!("{t}\n")).collect();
            write_atomic(&path, text.as_bytes())
        };
        result.map_err(|source| TagsError::Io { path, source })
    }

    /// Adds and removes tags, keeping the others in order.
    pub fn edit_tags(&self, add: &[String], remove: &[String]) -> Result<Vec<String>, TagsError> {
        let mut tags = self.tags();
        tags.retain(|t| !remove.contains(t));
        for t in add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        self.set_tags(&tags)?;
        Ok(tags)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    #[error(transparent)]
    Bad(#[from] BadTag),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_and_tags_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::at(&tmp.path().join("cat"), "r1");
        std::fs::create_dir_all(run.path()).unwrap();
        assert_eq!(run.note(), "");
        assert!(run.tags().is_empty());

        run.set_note("cfg 2 keeps the shape\n\nbest so far  \n")
            .unwrap();
        assert_eq!(run.note(), "cfg 2 keeps the shape\n\nbest so far\n");
        run.set_note("").unwrap();
        assert!(!run.note_path().exists());

        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        run.set_tags(&t(&["best", "lr-high", "best"])).unwrap();
        assert_eq!(run.tags(), t(&["best", "lr-high"]));
        let now = run.edit_tags(&t(&["ema"]), &t(&["best"])).unwrap();
        assert_eq!(now, t(&["lr-high", "ema"]));
        assert_eq!(run.tags(), now);
        // A hand-edited file: comments and blank lines are not tags.
        std::fs::write(run.tags_path(), "# mine\nkeep\n\n keep \nother\n").unwrap();
        assert_eq!(run.tags(), t(&["keep", "other"]));

        for bad in ["", "two words", "a,b", "tab\t"] {
            assert!(matches!(run.set_tags(&t(&[bad])), Err(TagsError::Bad(_))));
        }
        assert_eq!(
            run.tags(),
            t(&["keep", "other"]),
            "a refused edit changes nothing"
        );
        run.set_tags(&[]).unwrap();
        assert!(!run.tags_path().exists());
        // Nothing left behind by the atomic writes.
        let stray: Vec<_> = std::fs::read_dir(run.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}
