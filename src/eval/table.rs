//! The evaluation table as text: one column group per evaluated target, so
//! two runs (DreamArtist vs its Textual Inversion baseline) read side by side.
//! Used by the CLI and meant for the workbench too.

use super::report::EvalReport;

const PROMPT_WIDTH: usize = 40;
const CELL: usize = 7;

fn clip_text(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        format!("{s:<width$}")
    } else {
        let cut: String = s.chars().take(width - 1).collect();
        format!("{cut}…")
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:>CELL$.4}"),
        None => format!("{:>CELL$}", "-"),
    }
}

fn group_width() -> usize {
    3 * CELL + 2
}

fn centre(s: &str) -> String {
    clip_text(s, group_width())
}

/// The lines of the table for one or more reports (same prompts expected;
/// a prompt missing from a report shows `-`).
pub fn table_lines(reports: &[EvalReport]) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(first) = reports.first() else {
        return lines;
    };
    lines.push(format!(
        "concept {} · model {} · CLIP {} · {} sample(s) per prompt · seed {} · {} steps, cfg {}, {}",
        first.concept, first.model, first.clip, first.samples, first.seed, first.steps, first.cfg, first.sampler
    ));
    if let Some(c) = &first.class_word {
        lines.push(format!("class word for CLIP-T: `{c}`"));
    }
    for r in reports {
        for n in &r.notes {
            let line = format!("note: {n}");
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
    }
    lines.push(String::new());

    let sep = " | ";
    let blank = " ".repeat(PROMPT_WIDTH);
    let mut h1 = blank.clone();
    let mut h2 = blank.clone();
    let mut h3 = clip_text("prompt", PROMPT_WIDTH);
    for r in reports {
        h1.push_str(sep);
        h1.push_str(&centre(&r.label));
        h2.push_str(sep);
        let mut method = match &r.train_cfg {
            Some(c) if r.method == "DreamArtist" => format!("{} cfg {c}", r.method),
            _ => r.method.clone(),
        };
        if r.vectors.ends_with("ema") {
            method.push_str(" (EMA)");
        }
        h2.push_str(&centre(&method));
        h3.push_str(sep);
        h3.push_str(&format!(
            "{:>CELL$} {:>CELL$} {:>CELL$}",
            "CLIP-I", "CLIP-T", "div"
        ));
    }
    let rule = "-".repeat(h3.chars().count());
    lines.extend([h1, h2, h3, rule.clone()]);

    let mut prompts: Vec<&str> = Vec::new();
    for r in reports {
        for p in &r.prompts {
            if !prompts.contains(&p.prompt.as_str()) {
                prompts.push(&p.prompt);
            }
        }
    }
    for prompt in prompts {
        let mut row = clip_text(prompt, PROMPT_WIDTH);
        for r in reports {
            row.push_str(sep);
            match r.prompts.iter().find(|p| p.prompt == prompt) {
                Some(p) => row.push_str(&format!(
                    "{} {} {}",
                    num(Some(p.fidelity)),
                    num(Some(p.text_alignment)),
                    num(p.diversity)
                )),
                None => row.push_str(&format!("{} {} {}", num(None), num(None), num(None))),
            }
        }
        lines.push(row);
    }
    lines.push(rule);
    let mut row = clip_text("overall (mean of prompts)", PROMPT_WIDTH);
    for r in reports {
        row.push_str(sep);
        row.push_str(&format!(
            "{} {} {}",
            num(Some(r.fidelity)),
            num(Some(r.text_alignment)),
            num(r.diversity)
        ));
    }
    lines.push(row);
    lines.push(String::new());
    lines.push(
        "CLIP-I: fidelity to the reference image(s) · CLIP-T: alignment with the prompt in words · \
         div: 1 − mean pairwise CLIP-I of a prompt's samples"
            .into(),
    );
    lines
}
