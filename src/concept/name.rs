//! The one naming rule for pseudo-words and concepts. A name becomes a file
//! name (`<name>.safetensors`), a folder (`concepts/<name>/`) and a prompt word
//! (`<name>`), so it may hold only ASCII letters, digits, `_` and `-`: no path
//! separators, no `..`, no spaces or control characters, nothing a shell or an
//! other tool's prompt parser would read differently.

use std::fmt;

/// The longest name (file systems allow more; prompts and menus do not need it).
pub const MAX_NAME: usize = 64;

/// A checked pseudo-word name (`cat-toy`, `astro-neg`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WordName(String);

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` cannot be a name: use 1 to {MAX_NAME} letters, digits, `_` or `-`, not starting with `-`")]
    Invalid(String),
    #[error(
        "`{0}` cannot be a concept name: `-neg` is the suffix of every concept's negative word"
    )]
    NegSuffix(String),
}

/// The characters a name may hold.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl WordName {
    /// A word name: 1–64 of `[A-Za-z0-9_-]`, not starting with `-`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && !name.starts_with('-')
            && name.chars().all(is_name_char);
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(NameError::Invalid(name.to_string()))
        }
    }

    /// A concept name: a word name that does not end in `-neg` (its negative
    /// word is `<name>-neg`).
    pub fn concept(name: &str) -> Result<Self, NameError> {
        let w = Self::parse(name)?;
        if w.0.ends_with("-neg") {
            return Err(NameError::NegSuffix(name.to_string()));
        }
        Ok(w)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WordName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WordName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        for ok in ["cat", "cat-toy", "A_1", "x"] {
            assert_eq!(WordName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "../o",
            "a/b",
            "a\\b",
            "..",
            ".",
            "-x",
            "a b",
            "a\u{0}b",
            "a\nb",
            "é",
            "<cat>",
            &"x".repeat(65),
        ] {
            assert!(WordName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(WordName::parse("cat-neg").is_ok());
        assert_eq!(
            WordName::concept("cat-neg"),
            Err(NameError::NegSuffix("cat-neg".into()))
        );
    }
}
