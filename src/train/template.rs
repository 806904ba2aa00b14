//! Prompt templates with `[name]` and `[filewords]` (A1111's template files,
//! which DreamArtist trains with). The negative prompt is the same line with
//! the negative pseudo-word in place of `[name]`.

use std::path::Path;

// AUTOMATIC1111's `textual_inversion_templates/*.txt`, which the DreamArtist
// extension trains with, byte for byte.
const SUBJECT: &str = include_str!("../../assets/templates/subject.txt");
const SUBJECT_FILEWORDS: &str = include_str!("../../assets/templates/subject_filewords.txt");
const STYLE: &str = include_str!("../../assets/templates/style.txt");
const STYLE_FILEWORDS: &str = include_str!("../../assets/templates/style_filewords.txt");

pub const TEMPLATE_NAMES: [&str; 5] = [
    "subject",
    "style",
    "subject_filewords",
    "style_filewords",
    "none",
];

/// The non-empty lines of a template text.
fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A template's lines: a built-in name, a file of lines (`*.txt`, relative to
/// `base`, the workspace; as A1111's template files), or one line of its own
/// containing `[name]` (e.g. `"a photo of [name]"`). `none` is `[name]` alone
/// (A1111's `none.txt` is "picture", which would train nothing here).
pub fn template_lines(name: &str, base: &Path) -> Result<Vec<String>, String> {
    let builtin = match name {
        "subject" => Some(SUBJECT),
        "style" => Some(STYLE),
        "subject_filewords" => Some(SUBJECT_FILEWORDS),
        "style_filewords" => Some(STYLE_FILEWORDS),
        "none" => Some("[name]"),
        _ => None,
    };
    if let Some(text) = builtin {
        return Ok(lines_of(text));
    }
    if name.ends_with(".txt") || name.contains('/') || name.contains(std::path::MAIN_SEPARATOR) {
        let path = base.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("template file {}: cannot read ({e})", path.display()))?;
        let lines = lines_of(&text);
        if lines.is_empty() {
            return Err(format!("template file {} has no lines", path.display()));
        }
        if let Some((i, l)) = lines
            .iter()
            .enumerate()
            .find(|(_, l)| !l.contains("[name]"))
        {
            return Err(format!(
                "template file {}: line {} (`{l}`) has no [name], so it would train nothing",
                path.display(),
                i + 1
            ));
        }
        return Ok(lines);
    }
    if name.contains("[name]") {
        return Ok(vec![name.to_string()]);
    }
    Err(format!(
        "unknown template `{name}` (known: {}, a .txt file of lines, or one line containing `[name]`)",
        TEMPLATE_NAMES.join(", ")
    ))
}

/// Fills a template line. `filewords` empty removes the placeholder and the
/// separator before it.
pub fn fill(line: &str, word: &str, filewords: Option<&str>) -> String {
    let line = line.replace("[name]", word);
    match filewords {
        Some(f) if !f.trim().is_empty() => line.replace("[filewords]", f.trim()),
        _ => line
            .replace(", [filewords]", "")
            .replace(" [filewords]", "")
            .replace("[filewords]", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-ins are A1111's files: their line counts and the lines the
    /// extension's users know (subject has the "a close-up photo of a" line,
    /// style_filewords puts the file words inside the phrase).
    #[test]
    fn builtins_are_a1111s_files() {
        let here = Path::new(".");
        let subject = template_lines("subject", here).unwrap();
        assert_eq!(subject.len(), 27);
        assert!(subject.contains(&"a close-up photo of a [name]".to_string()));
        assert_eq!(template_lines("style", here).unwrap().len(), 19);
        let sf = template_lines("subject_filewords", here).unwrap();
        assert_eq!(sf.len(), 27);
        assert!(sf
            .iter()
            .zip(&subject)
            .all(|(f, s)| *f == format!("{s}, [filewords]")));
        let stf = template_lines("style_filewords", here).unwrap();
        assert_eq!(stf[0], "a painting of [filewords], art by [name]");
        assert_eq!(stf.len(), 19);
    }

    #[test]
    fn template_files_have_many_lines_each_with_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("mine.txt"),
            "a photo of [name]\n\n  [name] on a table  \n",
        )
        .unwrap();
        assert_eq!(
            template_lines("mine.txt", tmp.path()).unwrap(),
            vec!["a photo of [name]", "[name] on a table"]
        );
        std::fs::write(tmp.path().join("bad.txt"), "a photo of [name]\na photo\n").unwrap();
        let e = template_lines("bad.txt", tmp.path()).unwrap_err();
        assert!(e.contains("line 2") && e.contains("no [name]"), "{e}");
        assert!(template_lines("missing.txt", tmp.path())
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn fills_name_and_filewords() {
        assert_eq!(
            fill(
                "a photo of a [name], [filewords]",
                "<cat>",
                Some("on a sofa")
            ),
            "a photo of a <cat>, on a sofa"
        );
        assert_eq!(
            fill("a photo of a [name], [filewords]", "<cat-neg>", None),
            "a photo of a <cat-neg>"
        );
        let here = Path::new(".");
        assert!(template_lines("subject", here)
            .unwrap()
            .iter()
            .all(|l| l.contains("[name]")));
        assert!(template_lines("bogus", here).is_err());
        assert_eq!(
            template_lines("a photo of [name]", here).unwrap(),
            vec!["a photo of [name]".to_string()]
        );
        assert_eq!(
            fill("a photo of [name]", "<x-neg>", Some("ignored")),
            "a photo of <x-neg>"
        );
    }
}
