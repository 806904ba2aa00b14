//! The reference run's published figures (shared/toyworld/README.md, mean over
//! training seeds 0–3) and the Markdown table that puts ours beside them.

use super::protocol::Scores;

/// One row of the reference's results table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefRow {
    pub concept: &'static str,
    /// `text`, `init`, `ti`, `da`, `da_pos_only`.
    pub row: &'static str,
    pub fidelity: f64,
    pub shape: f64,
    pub colour: f64,
    pub copies_bg: f64,
    pub control: f64,
    pub bg_follows: f64,
    pub diversity: f64,
}

macro_rules! r {
    ($c:literal, $r:literal, $f:expr, $s:expr, $col:expr, $cb:expr, $ctl:expr, $bf:expr, $d:expr) => {
        RefRow {
            concept: $c,
            row: $r,
            fidelity: $f,
            shape: $s,
            colour: $col,
            copies_bg: $cb,
            control: $ctl,
            bg_follows: $bf,
            diversity: $d,
        }
    };
}

/// The reference implementation's table.
pub const REFERENCE: [RefRow; 10] = [
    r!(
        "purple_cross",
        "text",
        1.00,
        1.00,
        1.00,
        1.00,
        0.92,
        1.00,
        11.84
    ),
    r!(
        "purple_cross",
        "init",
        0.00,
        0.00,
        0.00,
        0.06,
        0.00,
        1.00,
        23.90
    ),
    r!(
        "purple_cross",
        "ti",
        1.00,
        1.00,
        1.00,
        1.00,
        0.34,
        0.55,
        11.50
    ),
    r!(
        "purple_cross",
        "da",
        0.61,
        0.61,
        0.97,
        0.73,
        0.15,
        1.00,
        14.41
    ),
    r!(
        "purple_cross",
        "da_pos_only",
        0.75,
        0.84,
        0.81,
        0.36,
        0.50,
        1.00,
        18.40
    ),
    r!(
        "orange_triangle",
        "text",
        1.00,
        1.00,
        1.00,
        1.00,
        1.00,
        1.00,
        10.10
    ),
    r!(
        "orange_triangle",
        "init",
        0.00,
        0.00,
        0.69,
        0.31,
        0.00,
        1.00,
        23.90
    ),
    r!(
        "orange_triangle",
        "ti",
        0.89,
        0.89,
        1.00,
        1.00,
        0.38,
        0.44,
        9.88
    ),
    r!(
        "orange_triangle",
        "da",
        0.58,
        0.83,
        0.70,
        0.75,
        0.58,
        0.89,
        15.46
    ),
    r!(
        "orange_triangle",
        "da_pos_only",
        0.59,
        0.61,
        0.88,
        0.78,
        0.58,
        0.81,
        11.04
    ),
];

/// The reference's row, if it has one.
pub fn reference(concept: &str, row: &str) -> Option<&'static RefRow> {
    REFERENCE
        .iter()
        .find(|r| r.concept == concept && r.row == row)
}

/// A readable label for a row key.
pub fn row_label(row: &str) -> &str {
    match row {
        "text" => "base, text prompt",
        "init" => "untrained init vectors",
        "ti" => "Textual Inversion",
        "da" => "DreamArtist (pos + neg)",
        "da_pos_only" => "DreamArtist pos only (neg '')",
        other => other,
    }
}

/// Our figures and the reference's as a Markdown table: each cell is
/// `ours (ref)`, or just ours where the reference has no such row.
pub fn table(rows: &[(String, String, Scores)]) -> String {
    let mut s = String::from(
        "| concept | row | fidelity (shape+colour) | shape | colour | copies ref bg | controllability | bg follows prompt | diversity (L2) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (concept, row, ours) in rows {
        let theirs = reference(concept, row);
        let cell = |v: f64, r: Option<f64>, digits: usize| match r {
            Some(r) => format!("{v:.digits$} ({r:.digits$})"),
            None => format!("{v:.digits$}"),
        };
        s.push_str(&format!(
            "| {concept} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row_label(row),
            cell(ours.fidelity, theirs.map(|r| r.fidelity), 2),
            cell(ours.shape, theirs.map(|r| r.shape), 2),
            cell(ours.colour, theirs.map(|r| r.colour), 2),
            cell(ours.copies_bg, theirs.map(|r| r.copies_bg), 2),
            cell(ours.control, theirs.map(|r| r.control), 2),
            cell(ours.bg_follows, theirs.map(|r| r.bg_follows), 2),
            cell(ours.diversity, theirs.map(|r| r.diversity), 1),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_puts_reference_figures_beside_ours() {
        let ours = Scores {
            fidelity: 0.5,
            diversity: 12.0,
            ..Default::default()
        };
        let t = table(&[
            ("purple_cross".into(), "ti".into(), ours.clone()),
            ("purple_cross".into(), "sweep-x".into(), ours),
        ]);
        assert!(
            t.contains("| purple_cross | Textual Inversion | 0.50 (1.00) |"),
            "{t}"
        );
        assert!(t.contains("| purple_cross | sweep-x | 0.50 |"), "{t}");
        assert_eq!(t.lines().count(), 4);
        assert_eq!(reference("orange_triangle", "da").unwrap().control, 0.58);
    }
}
