//! The runs table as plain text lines (the CLI prints them; a sweep's
//! `results.md` uses [`markdown_table`]).

use super::summary::RunSummary;
use crate::concept::rundir::format_utc;

/// The columns shown, each a header and a cell per run.
fn columns(runs: &[RunSummary]) -> Vec<(&'static str, Vec<String>)> {
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
    let score = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
    let mut cols: Vec<(&'static str, Vec<String>)> = vec![
        ("run", runs.iter().map(|r| r.id.clone()).collect()),
        (
            "status",
            runs.iter().map(|r| r.state.label().into()).collect(),
        ),
        ("steps", runs.iter().map(RunSummary::progress).collect()),
        ("loss", runs.iter().map(|r| num(r.loss)).collect()),
        (
            "smoothed",
            runs.iter().map(|r| num(r.smoothed_loss)).collect(),
        ),
        (
            "started (UTC)",
            runs.iter()
                .map(|r| r.started.map_or_else(|| "-".into(), format_utc))
                .collect(),
        ),
        ("method", runs.iter().map(|r| r.method.clone()).collect()),
    ];
    if runs.iter().any(|r| r.eval.is_some()) {
        let e = |f: fn(&super::EvalScores) -> Option<f64>| -> Vec<String> {
            runs.iter()
                .map(|r| score(r.eval.as_ref().and_then(f)))
                .collect()
        };
        cols.push(("CLIP-I", e(|s| Some(s.fidelity))));
        cols.push(("CLIP-T", e(|s| Some(s.text_alignment))));
        cols.push(("diversity", e(|s| s.diversity)));
    }
    cols.push((
        "options",
        runs.iter().map(RunSummary::changed_text).collect(),
    ));
    if runs.iter().any(|r| !r.tags.is_empty()) {
        cols.push(("tags", runs.iter().map(|r| r.tags.join(" ")).collect()));
    }
    if runs.iter().any(|r| !r.note.is_empty()) {
        cols.push((
            "note",
            runs.iter().map(|r| first_line(&r.note, 40)).collect(),
        ));
    }
    cols
}

/// The first line of a note, cut to `max` characters.
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Aligned columns, a header line first; empty for no runs.
pub fn table_lines(runs: &[RunSummary]) -> Vec<String> {
    if runs.is_empty() {
        return Vec::new();
    }
    let cols = columns(runs);
    let header: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = (0..runs.len())
        .map(|i| cols.iter().map(|(_, c)| c[i].clone()).collect())
        .collect();
    aligned_lines(&header, &rows)
}

/// `header` and `rows` as left-aligned columns two spaces apart.
pub fn aligned_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> = (0..header.len())
        .map(|j| {
            rows.iter()
                .filter_map(|r| r.get(j))
                .map(|c| c.chars().count())
                .chain([header[j].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let row = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut lines = vec![row(header.to_vec())];
    for r in rows {
        lines.push(row(r.iter().map(String::as_str).collect()));
    }
    lines
}

/// A Markdown table of `header` and `rows` (cells escaped for `|`).
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let esc = |c: &String| c.replace('|', "\\|").replace('\n', " ");
    let line = |cells: &[String]| {
        format!(
            "| {} |\n",
            cells.iter().map(esc).collect::<Vec<_>>().join(" | ")
        )
    };
    let mut s = line(header);
    s.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concept::RunState;

    #[test]
    fn lines_align_and_show_scores_tags_and_notes_only_when_any_run_has_them() {
        let run = RunSummary {
            id: "r1".into(),
            state: RunState::Stopped,
            step: 226,
            total_steps: 400,
            loss: Some(0.12345),
            smoothed_loss: None,
            started: Some(1_796_094_900),
            ended: None,
            method: "DreamArtist".into(),
            preset: None,
            seed: Some(0),
            train_cfg: Some("5".into()),
            changed: vec![],
            checkpoints: vec![],
            has_pair: true,
            eval: None,
            note: String::new(),
            tags: vec![],
            message: None,
        };
        let lines = table_lines(std::slice::from_ref(&run));
        assert!(lines[0].starts_with("run  status   steps"), "{lines:?}");
        assert!(!lines[0].contains("CLIP") && !lines[0].contains("note"));
        assert!(lines[1].contains("stopped") && lines[1].contains("226/400"));
        assert!(lines[1].contains("0.1235") && lines[1].contains("2026-12-01 03:15"));
        let noted = RunSummary {
            note: "a long first line that goes on and on past forty characters\nsecond".into(),
            tags: vec!["best".into()],
            ..run
        };
        let lines = table_lines(&[noted]);
        assert!(lines[0].ends_with("tags  note"), "{lines:?}");
        assert!(
            lines[1].contains("best") && lines[1].ends_with('…'),
            "{lines:?}"
        );
        assert_eq!(
            markdown_table(&["a".into(), "b".into()], &[vec!["x|y".into(), "z".into()]]),
            "| a | b |\n|---|---|\n| x\\|y | z |\n"
        );
    }
}
