//! Prompt templates with `[name]` and `[filewords]` (A1111's template files,
//! which DreamArtist trains with). The negative prompt is the same line with
//! the negative pseudo-word in place of `[name]`.

const SUBJECT: &[&str] = &[
    "a photo of a [name]",
    "a rendering of a [name]",
    "a cropped photo of the [name]",
    "the photo of a [name]",
    "a photo of a clean [name]",
    "a photo of a dirty [name]",
    "a dark photo of the [name]",
    "a photo of my [name]",
    "a photo of the cool [name]",
    "a bright photo of the [name]",
    "a cropped photo of a [name]",
    "a photo of the [name]",
    "a good photo of the [name]",
    "a photo of one [name]",
    "a close-up photo of the [name]",
    "a rendition of the [name]",
    "a photo of the clean [name]",
    "a rendition of a [name]",
    "a photo of a nice [name]",
    "a good photo of a [name]",
    "a photo of the nice [name]",
    "a photo of the small [name]",
    "a photo of the weird [name]",
    "a photo of the large [name]",
    "a photo of a cool [name]",
    "a photo of a small [name]",
];

const STYLE: &[&str] = &[
    "a painting, art by [name]",
    "a rendering, art by [name]",
    "a cropped painting, art by [name]",
    "the painting, art by [name]",
    "a clean painting, art by [name]",
    "a dirty painting, art by [name]",
    "a dark painting, art by [name]",
    "a picture, art by [name]",
    "a cool painting, art by [name]",
    "a close-up painting, art by [name]",
    "a bright painting, art by [name]",
    "a good painting, art by [name]",
    "a rendition, art by [name]",
    "a nice painting, art by [name]",
    "a small painting, art by [name]",
    "a weird painting, art by [name]",
    "a large painting, art by [name]",
];

pub const TEMPLATE_NAMES: [&str; 5] = [
    "subject",
    "style",
    "subject_filewords",
    "style_filewords",
    "none",
];

/// The lines of a shipped template, or a custom single line: a value that
/// contains `[name]` (e.g. `"a photo of [name]"`) is used as the only line.
pub fn template_lines(name: &str) -> Result<Vec<String>, String> {
    if name.contains("[name]") {
        return Ok(vec![name.to_string()]);
    }
    let with_filewords =
        |lines: &[&str]| lines.iter().map(|l| format!("{l}, [filewords]")).collect();
    match name {
        "subject" => Ok(SUBJECT.iter().map(|s| s.to_string()).collect()),
        "style" => Ok(STYLE.iter().map(|s| s.to_string()).collect()),
        "subject_filewords" => Ok(with_filewords(SUBJECT)),
        "style_filewords" => Ok(with_filewords(STYLE)),
        "none" => Ok(vec!["[name]".into()]),
        other => Err(format!(
            "unknown template `{other}` (known: {}, or one line containing `[name]`)",
            TEMPLATE_NAMES.join(", ")
        )),
    }
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
        assert!(template_lines("subject")
            .unwrap()
            .iter()
            .all(|l| l.contains("[name]")));
        assert!(template_lines("bogus").is_err());
        assert_eq!(
            template_lines("a photo of [name]").unwrap(),
            vec!["a photo of [name]".to_string()]
        );
        assert_eq!(
            fill("a photo of [name]", "<x-neg>", Some("ignored")),
            "a photo of <x-neg>"
        );
    }
}
