//! Wrapping for rows of a key and a value (sample metadata, help's keys and
//! descriptions): the value wraps under itself, paths break after a `/`, and
//! the caller learns how many lines it takes, so a layout can give them all
//! the room they need instead of cutting the last ones.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// Splits `text` into pieces of at most `width` characters, breaking after a
/// space or a `/` where one is near, anywhere otherwise. Never returns an empty list.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while chars.len() - start > width {
        let window = &chars[start..start + width];
        // Break after the last space or slash in the window (not at its very start).
        let cut = window
            .iter()
            .rposition(|c| *c == ' ' || *c == '/')
            .filter(|&i| i > 0)
            .map_or(width, |i| i + 1);
        let piece: String = chars[start..start + cut].iter().collect();
        out.push(piece.trim_end().to_string());
        start += cut;
        while start < chars.len() && chars[start] == ' ' {
            start += 1;
        }
    }
    out.push(chars[start..].iter().collect());
    out
}

/// A `key` column `key_width` wide and `value` wrapped beside it within
/// `width` columns; continuation lines are indented under the value.
pub fn hanging(
    key: &str,
    key_style: Style,
    key_width: usize,
    value: &str,
    value_style: Style,
    width: usize,
) -> Vec<Line<'static>> {
    let room = width.saturating_sub(key_width).max(8);
    wrap(value, room)
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let k = if i == 0 { key } else { "" };
            Line::from(vec![
                Span::styled(format!("{k:<key_width$}"), key_style),
                Span::styled(piece, value_style),
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_break_after_slashes_and_words_after_spaces() {
        assert_eq!(
            wrap(
                "concepts/cat/runs/20261126-120000/samples/step-00000005.png",
                45
            ),
            [
                "concepts/cat/runs/20261126-120000/samples/",
                "step-00000005.png"
            ]
        );
        assert_eq!(wrap("a photo of a cat", 9), ["a photo", "of a cat"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        // Every character survives.
        let long = "x/".repeat(40) + "tail";
        assert_eq!(wrap(&long, 7).concat(), long);
    }

    #[test]
    fn continuation_lines_hang_under_the_value() {
        let lines = hanging(
            "path",
            Style::default(),
            7,
            "a/b/c/d/e/f/g/h",
            Style::default(),
            15,
        );
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["path   a/b/c/d/", "       e/f/g/h"]);
    }
}
