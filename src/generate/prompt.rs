//! A1111 prompt syntax: emphasis `(word)` ×1.1, `((word))` ×1.21, `[word]` ÷1.1,
//! `(word:1.5)` ×1.5, `\(` escapes, and `BREAK` to start a new 75-token chunk.
//! The parser follows A1111's `parse_prompt_attention` exactly, so prompts
//! copied from other tools weigh the same here, with one deliberate
//! difference: `BREAK` inside brackets still breaks. A1111 multiplies its
//! internal marker weight (-1) by the brackets, so `(a BREAK b)` there encodes
//! the word "BREAK" with weight -1.1 instead of breaking, which no prompt means.

/// A run of prompt text with one weight; `Break` forces a new chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Fragment {
    Text { text: String, weight: f64 },
    Break,
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// Tries to read `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`; returns the weight
/// and the bytes consumed.
fn weight_suffix(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    if b.first() != Some(&b':') {
        return None;
    }
    let mut i = 1;
    while i < b.len() && (b[i] as char).is_whitespace() {
        i += 1;
    }
    let start = i;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = i;
    while i < b.len() && (b[i] == b'.' || b[i].is_ascii_digit()) {
        i += 1;
    }
    if i == digits {
        return None;
    }
    let number = &s[start..i];
    while i < b.len() && (b[i] as char).is_whitespace() {
        i += 1;
    }
    if i < b.len() && b[i] == b')' {
        number.parse::<f64>().ok().map(|w| (w, i + 1))
    } else {
        None
    }
}

/// A parsed run before merging: its text and weight, or a `BREAK` (which
/// brackets do not weigh).
type Run = (String, f64, bool);

/// Splits plain text on the `BREAK` keyword (a whole word, surrounding spaces eaten).
fn push_text(out: &mut Vec<Run>, text: &str) {
    let mut rest = text;
    let mut first = true;
    loop {
        let found = rest.match_indices("BREAK").find(|(i, _)| {
            let before = rest[..*i].chars().next_back();
            let after = rest[i + 5..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        });
        if !first {
            out.push(("BREAK".into(), 1.0, true));
        }
        first = false;
        match found {
            Some((i, _)) => {
                out.push((rest[..i].trim_end().to_string(), 1.0, false));
                rest = rest[i + 5..].trim_start();
            }
            None => {
                out.push((rest.to_string(), 1.0, false));
                break;
            }
        }
    }
}

/// Parses a prompt into weighted fragments.
pub fn parse(prompt: &str) -> Vec<Fragment> {
    let mut res: Vec<Run> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<Run>, from: usize, m: f64| {
        for r in res.iter_mut().skip(from).filter(|r| !r.2) {
            r.1 *= m;
        }
    };
    let mut i = 0;
    while i < prompt.len() {
        let rest = &prompt[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if c == '\\' {
            let next = rest[1..].chars().next();
            match next {
                Some(n @ ('(' | ')' | '[' | ']' | '\\')) => {
                    res.push((n.to_string(), 1.0, false));
                    i += 1 + n.len_utf8();
                }
                _ => {
                    res.push((String::new(), 1.0, false));
                    i += 1;
                }
            }
        } else if c == '(' {
            round.push(res.len());
            i += 1;
        } else if c == '[' {
            square.push(res.len());
            i += 1;
        } else if let (Some((w, used)), false) = (weight_suffix(rest), round.is_empty()) {
            if let Some(p) = round.pop() {
                multiply(&mut res, p, w);
            }
            i += used;
        } else if c == ')' && !round.is_empty() {
            if let Some(p) = round.pop() {
                multiply(&mut res, p, ROUND);
            }
            i += 1;
        } else if c == ']' && !square.is_empty() {
            if let Some(p) = square.pop() {
                multiply(&mut res, p, SQUARE);
            }
            i += 1;
        } else {
            // A run of plain text (or a lone special character, as text).
            let len = if matches!(c, '(' | ')' | '[' | ']' | ':' | '\\') {
                // An unmatched `)`/`]`, a `:` that is not a weight, or a stray
                // weight suffix outside brackets: A1111 keeps it as text.
                match weight_suffix(rest) {
                    Some((_, used)) if c == ':' => used,
                    _ => c.len_utf8(),
                }
            } else {
                rest.find(['\\', '(', ')', '[', ']', ':'])
                    .unwrap_or(rest.len())
            };
            push_text(&mut res, &rest[..len]);
            i += len;
        }
    }
    for p in round {
        multiply(&mut res, p, ROUND);
    }
    for p in square {
        multiply(&mut res, p, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0, false));
    }
    // Merge neighbours with equal weights (never across a BREAK).
    let mut merged: Vec<Fragment> = Vec::new();
    for (t, w, brk) in res {
        match merged.last_mut() {
            _ if brk => merged.push(Fragment::Break),
            Some(Fragment::Text { text, weight }) if *weight == w => text.push_str(&t),
            _ => merged.push(Fragment::Text { text: t, weight: w }),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str, weight: f64) -> Fragment {
        Fragment::Text {
            text: text.into(),
            weight,
        }
    }

    fn close(a: &[Fragment], b: &[Fragment]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (
                    Fragment::Text {
                        text: t1,
                        weight: w1,
                    },
                    Fragment::Text {
                        text: t2,
                        weight: w2,
                    },
                ) => t1 == t2 && (w1 - w2).abs() < 1e-9,
                (Fragment::Break, Fragment::Break) => true,
                _ => false,
            })
    }

    // The examples of A1111's `parse_prompt_attention` docstring.
    #[test]
    fn a1111_examples() {
        let cases: Vec<(&str, Vec<Fragment>)> = vec![
            ("normal text", vec![t("normal text", 1.0)]),
            (
                "an (important) word",
                vec![t("an ", 1.0), t("important", 1.1), t(" word", 1.0)],
            ),
            ("(unbalanced", vec![t("unbalanced", 1.1)]),
            ("\\(literal\\]", vec![t("(literal]", 1.0)]),
            ("(unnecessary)(parens)", vec![t("unnecessaryparens", 1.1)]),
            (
                "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
                vec![
                    t("a ", 1.0),
                    t("house", 1.5730000000000004),
                    t(" ", 1.1),
                    t("on", 1.0),
                    t(" a ", 1.1),
                    t("hill", 0.55),
                    t(", sun, ", 1.1),
                    t("sky", 1.4641000000000006),
                    t(".", 1.1),
                ],
            ),
        ];
        for (prompt, expected) in cases {
            let got = parse(prompt);
            assert!(close(&got, &expected), "{prompt}: {got:?}");
        }
    }

    #[test]
    fn weights_breaks_and_stray_colons() {
        assert!(close(
            &parse("(masterpiece:1.2), cat"),
            &[t("masterpiece", 1.2), t(", cat", 1.0)]
        ));
        assert!(close(&parse("[dim]"), &[t("dim", 1.0 / 1.1)]));
        assert!(close(&parse("ratio 16:9"), &[t("ratio 16:9", 1.0)]));
        assert!(close(
            &parse("a cat BREAK a dog"),
            &[t("a cat", 1.0), Fragment::Break, t("a dog", 1.0)]
        ));
        assert!(close(&parse(""), &[t("", 1.0)]));
    }

    /// Edge cases, each expected value computed by A1111's own
    /// `parse_prompt_attention` (modules/prompt_parser.py).
    #[test]
    fn a1111_edge_cases() {
        let cases: Vec<(&str, Vec<Fragment>)> = vec![
            ("(a:b:1.2)", vec![t("a:b", 1.2)]),
            ("(x:abc)", vec![t("x:abc", 1.1)]),
            ("\\\\(", vec![t("\\", 1.0)]),
            ("\\\\(x)", vec![t("\\", 1.0), t("x", 1.1)]),
            (
                "a BREAK BREAK b",
                vec![
                    t("a", 1.0),
                    Fragment::Break,
                    t("", 1.0),
                    Fragment::Break,
                    t("b", 1.0),
                ],
            ),
            ("(a:1.2:1.3)", vec![t("a:1.2", 1.3)]),
            ("x:1.5)", vec![t("x:1.5)", 1.0)]),
            ("((a:0.5) b)", vec![t("a", 0.55), t(" b", 1.1)]),
            ("[a:1.5]", vec![t("a:1.5", 0.9090909090909091)]),
            ("(a: 1.5 )", vec![t("a", 1.5)]),
            ("(a:-0.5)", vec![t("a", -0.5)]),
            ("(a:.5)", vec![t("a", 0.5)]),
            ("\\x", vec![t("x", 1.0)]),
            ("a\\", vec![t("a", 1.0)]),
            ("]x[", vec![t("]x", 1.0)]),
            (
                "BREAKfast BREAK",
                vec![t("BREAKfast", 1.0), Fragment::Break, t("", 1.0)],
            ),
            (
                "a ( b [c] ) d",
                vec![
                    t("a ", 1.0),
                    t(" b ", 1.1),
                    t("c", 1.0),
                    t(" ", 1.1),
                    t(" d", 1.0),
                ],
            ),
            (
                "(<cat>:1.3), on a beach",
                vec![t("<cat>", 1.3), t(", on a beach", 1.0)],
            ),
            ("((a)", vec![t("a", 1.2100000000000002)]),
            ("(a))", vec![t("a", 1.1), t(")", 1.0)]),
            ("[[a]", vec![t("a", 0.8264462809917354)]),
            ("(a:+2)", vec![t("a", 2.0)]),
        ];
        for (prompt, expected) in cases {
            let got = parse(prompt);
            assert!(close(&got, &expected), "{prompt}: {got:?}");
        }
    }

    /// Where A1111 differs on purpose: a BREAK inside brackets breaks (A1111
    /// would weigh the word "BREAK" by -1.1), and a malformed weight is text
    /// under the bracket's ×1.1 (A1111 raises a ValueError).
    #[test]
    fn break_in_brackets_and_malformed_weights() {
        assert!(close(
            &parse("(a BREAK b)"),
            &[t("a", 1.1), Fragment::Break, t("b", 1.1)]
        ));
        assert!(close(
            &parse("(BREAK)"),
            &[t("", 1.1), Fragment::Break, t("", 1.1)]
        ));
        assert!(close(&parse("(a:1.2.3)"), &[t("a:1.2.3", 1.1)]));
    }
}
