//! Evaluation prompts: templates with `[name]` where the concept goes. The
//! same template gives the generation prompt (`[name]` → `<cat>`) and the text
//! CLIP-T compares against (`[name]` → the class word, e.g. `cat`, or nothing).

use std::path::Path;

use super::error::EvalError;

/// Objects and characters (`photo` / `anime` presets): the concept alone, then
/// in new contexts, which is where an overfitted embedding shows.
pub const OBJECT_PROMPTS: &[&str] = &[
    "[name]",
    "a photo of a [name] on the beach",
    "a photo of a [name] in the snow",
    "a watercolor painting of a [name]",
    "a [name] wearing a hat",
    "a photo of a [name] in a city at night",
];

/// Styles (`style` preset): the style alone, then applied to new subjects.
pub const STYLE_PROMPTS: &[&str] = &[
    "[name]",
    "a city in the style of [name]",
    "a portrait of a woman in the style of [name]",
    "a mountain landscape in the style of [name]",
    "a cat in the style of [name]",
    "a bowl of fruit in the style of [name]",
];

/// One evaluation prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalPrompt {
    /// The text with `[name]` placeholders.
    pub template: String,
}

impl EvalPrompt {
    pub fn new(template: impl Into<String>) -> Self {
        Self {
            template: template.into(),
        }
    }

    /// The generation prompt: `[name]` → the pseudo-word (`<cat>`).
    pub fn with_word(&self, word: &str) -> String {
        self.template.replace("[name]", word)
    }

    /// The CLIP-T text: `[name]` → the class word (fixing `a`/`an` before it),
    /// or removed together with an article right before it when there is no
    /// class word.
    pub fn in_words(&self, class: Option<&str>) -> String {
        let class = class.map(str::trim).filter(|c| !c.is_empty());
        let mut out = String::new();
        for (i, piece) in self.template.split("[name]").enumerate() {
            if i > 0 {
                match class {
                    Some(c) => {
                        set_article(&mut out, c);
                        out.push_str(c);
                    }
                    None => drop_article(&mut out),
                }
            }
            out.push_str(piece);
        }
        let joined = out.split_whitespace().collect::<Vec<_>>().join(" ");
        joined
            .replace(" ,", ",")
            .replace(" .", ".")
            .trim_matches(|c: char| c == ',' || c.is_whitespace())
            .to_string()
    }
}

/// The byte offset and text of the last word of `s` when `s` ends in a space.
fn last_word(s: &str) -> Option<(usize, &str)> {
    if !s.ends_with(char::is_whitespace) {
        return None;
    }
    let body = s.trim_end();
    let start = body.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
    Some((start, &body[start..]))
}

fn set_article(out: &mut String, next: &str) {
    if let Some((start, w)) = last_word(out) {
        let lower = w.to_ascii_lowercase();
        if lower == "a" || lower == "an" {
            let vowel = next
                .chars()
                .next()
                .is_some_and(|c| "aeiouAEIOU".contains(c));
            let capital = w.starts_with('A');
            let article = match (vowel, capital) {
                (true, true) => "An",
                (true, false) => "an",
                (false, true) => "A",
                (false, false) => "a",
            };
            out.replace_range(start..start + w.len(), article);
        }
    }
}

fn drop_article(out: &mut String) {
    if let Some((start, w)) = last_word(out) {
        if matches!(w.to_ascii_lowercase().as_str(), "a" | "an" | "the") {
            out.truncate(start);
        }
    }
}

/// The built-in prompt set of a preset: `style` gets [`STYLE_PROMPTS`],
/// everything else [`OBJECT_PROMPTS`]. Returns the set's name too.
pub fn default_prompts(preset: &str) -> (&'static str, Vec<EvalPrompt>) {
    let (name, set) = if preset == "style" {
        ("style", STYLE_PROMPTS)
    } else {
        ("object", OBJECT_PROMPTS)
    };
    (name, set.iter().map(|t| EvalPrompt::new(*t)).collect())
}

/// Reads a prompt file: one prompt per line, `#` comments and blank lines
/// skipped; each line names the concept as `[name]` or as its pseudo-word.
pub fn load_prompt_file(path: &Path, positive_word: &str) -> Result<Vec<EvalPrompt>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(EvalError::io(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let template = line.replace(positive_word, "[name]");
        if !template.contains("[name]") {
            return Err(EvalError::bad_file(
                path,
                format!(
                    "line {}: `{line}` does not mention the concept; write [name] or {positive_word} where it goes",
                    i + 1
                ),
            ));
        }
        out.push(EvalPrompt::new(template));
    }
    if out.is_empty() {
        return Err(EvalError::bad_file(
            path,
            "no prompts (one per line, with [name] where the concept goes)",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_word_replaces_the_pseudo_word_with_the_right_article() {
        let p = EvalPrompt::new("a photo of a [name] on the beach");
        assert_eq!(p.with_word("<cat>"), "a photo of a <cat> on the beach");
        assert_eq!(p.in_words(Some("cat")), "a photo of a cat on the beach");
        assert_eq!(p.in_words(Some("owl")), "a photo of an owl on the beach");
        assert_eq!(p.in_words(None), "a photo of on the beach");
        assert_eq!(EvalPrompt::new("[name]").in_words(None), "");
        assert_eq!(EvalPrompt::new("[name]").in_words(Some("cat")), "cat");
        assert_eq!(
            EvalPrompt::new("An [name], sitting").in_words(Some("dog")),
            "A dog, sitting"
        );
        assert_eq!(
            EvalPrompt::new("a city in the style of [name]").in_words(Some("ukiyo-e")),
            "a city in the style of ukiyo-e"
        );
        assert_eq!(
            EvalPrompt::new("the [name], at dusk").in_words(None),
            "at dusk"
        );
    }

    #[test]
    fn presets_pick_their_prompt_set() {
        let (name, set) = default_prompts("style");
        assert_eq!(name, "style");
        assert!(set.iter().any(|p| p.template.contains("in the style of")));
        let (name, set) = default_prompts("photo");
        assert_eq!(name, "object");
        assert!(set.iter().any(|p| p.template.contains("beach")));
        assert_eq!(default_prompts("anime").0, "object");
        assert!(set.iter().all(|p| p.template.contains("[name]")));
    }

    #[test]
    fn prompt_files_accept_both_spellings_and_reject_lines_without_the_concept() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.txt");
        std::fs::write(&f, "# mine\n\n<cat> in a box\n  a [name] asleep \n").unwrap();
        let p = load_prompt_file(&f, "<cat>").unwrap();
        assert_eq!(
            p,
            vec![
                EvalPrompt::new("[name] in a box"),
                EvalPrompt::new("a [name] asleep")
            ]
        );
        std::fs::write(&f, "<cat> in a box\na dog\n").unwrap();
        let e = load_prompt_file(&f, "<cat>").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("p.txt"), "{e}");
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(load_prompt_file(&f, "<cat>").is_err());
    }
}
