//! The repository's own demo workspace stays loadable: workspace.toml, the demo
//! concept, and every prompt file.

use std::path::Path;

use dreamartist::concept::Concept;
use dreamartist::generate::promptfile::load_prompt_file;
use dreamartist::workspace::Workspace;

#[test]
fn demo_workspace_concept_and_prompts_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = Workspace::open(root).expect("workspace.toml parses");
    assert!(Path::new(&ws.model_spec())
        .join("model_index.json")
        .is_file());
    let cat = Concept::load(&ws, "cat").expect("demo concept parses");
    for r in cat.reference_paths(&ws) {
        assert!(r.is_file(), "{} is missing", r.display());
    }
    let mut n = 0;
    for e in std::fs::read_dir(ws.prompts_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            load_prompt_file(&p, root).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1);
}
