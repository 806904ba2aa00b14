//! AFL++ target: one input is read as each of the workspace's TOML files —
//! `workspace.toml` (`Workspace::open` on a scratch folder), a `concept.toml`
//! (the `Concept` deserialisation, `Concept::load`, and the strings its
//! `[train]` table holds: learning-rate schedule, train cfg, preset, size,
//! built-in templates) and a prompt file (`parse_prompt_file`, which also
//! checks the request's limits). What is read must write back and read back
//! the same (the workbench saves concepts it loaded). Any panic, abort, hang
//! or failed round trip is a finding.

mod common;

use std::path::Path;

use dreamartist::concept::{self, Concept, Preset, CONCEPT_FILE};
use dreamartist::generate::promptfile::parse_prompt_file;
use dreamartist::train::loss::CfgSpec;
use dreamartist::train::schedule::LrSchedule;
use dreamartist::train::template::template_lines;
use dreamartist::workspace::{Workspace, WorkspaceConfig, WORKSPACE_FILE};

fn concept_strings(c: &Concept, ws: &Workspace) {
    let t = &c.train;
    if let Ok(s) = LrSchedule::parse(&t.lr, &t.lr_schedule, t.warmup_steps, t.steps) {
        for step in [
            0,
            1,
            t.warmup_steps,
            t.steps,
            t.steps.saturating_add(1),
            u64::MAX,
        ] {
            let _ = s.at(step);
        }
    }
    if let Ok(cfg) = t.train_cfg.parse::<CfgSpec>() {
        for ts in [0, 1, 500, 999] {
            let _ = cfg.at(ts, 1000);
        }
        let _ = cfg.to_string();
    }
    let _ = Preset::parse(&c.preset);
    if let Some(size) = t.size {
        let _ = (size.dims(), size.to_string());
    }
    // Template files are read from the workspace; only the built-in ones and
    // one-line templates here (a path could name any file, /dev/zero included).
    if !t.template.contains(['/', '\\']) && !t.template.ends_with(".txt") {
        let _ = template_lines(&t.template, &ws.root);
    }
    let _ = (c.positive_word(), c.negative_word(), c.reference_paths(ws));
}

fn main() {
    let dir = common::scratch("toml");
    let ws = Workspace {
        root: dir.clone(),
        config: WorkspaceConfig {
            model: "model".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            theme: None,
            clip: None,
        },
    };
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        // workspace.toml
        if common::write(&dir.join(WORKSPACE_FILE), data) {
            if let Ok(opened) = Workspace::open(&dir) {
                let _ = opened.model_spec();
                let again = toml::to_string(&opened.config).expect("a workspace.toml read writes");
                let back: WorkspaceConfig =
                    toml::from_str(&again).expect("a workspace.toml written reads back");
                assert_eq!(back, opened.config, "workspace.toml round trip:\n{again}");
            }
        }
        // concept.toml
        if let Ok(c) = toml::from_str::<Concept>(text) {
            let again = toml::to_string_pretty(&c).expect("a concept.toml read writes");
            let back: Concept = toml::from_str(&again).expect("a concept.toml written reads back");
            // Debug, not ==: a NaN read must come back as NaN.
            assert_eq!(
                format!("{back:?}"),
                format!("{c:?}"),
                "concept.toml round trip:\n{again}"
            );
            if concept::validate_name(&c.name).is_ok() {
                let cdir = ws.concept_dir(&c.name);
                if std::fs::create_dir_all(&cdir).is_ok()
                    && common::write(&cdir.join(CONCEPT_FILE), data)
                {
                    let _ = Concept::load(&ws, &c.name);
                }
                let _ = std::fs::remove_dir_all(&cdir);
            }
            concept_strings(&c, &ws);
        }
        // A prompt file.
        let _ = parse_prompt_file(text, Path::new("prompts/p.toml"), Path::new("/ws"));
    });
    let _ = std::fs::remove_dir_all(&dir);
}
