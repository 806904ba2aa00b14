//! The repository's own demo workspace stays loadable: workspace.toml on the
//! bundled toy world, both held-out concepts (ready to train with the `toy`
//! preset), and every prompt file.

use std::path::Path;

use dreamartist::concept::{Concept, Preset};
use dreamartist::generate::promptfile::load_prompt_file;
use dreamartist::toyworld::protocol::CONCEPTS;
use dreamartist::workspace::Workspace;

#[test]
fn demo_workspace_concepts_and_prompts_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = Workspace::open(root).expect("workspace.toml parses");
    assert_eq!(ws.config.model, "assets/toyworld");
    let model = Path::new(&ws.model_spec()).to_path_buf();
    for file in [
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
    ] {
        assert!(model.join(file).is_file(), "{file} is missing");
    }
    for spec in CONCEPTS {
        let c = Concept::load(&ws, spec.name).expect("demo concept parses");
        assert_eq!(c.preset, "toy");
        assert_eq!(c.train.init_mode, "mean");
        assert_eq!(c.train.template, "a photo of [name]");
        assert!(
            c.init_text.contains(spec.shape.word()) && c.init_text.contains(spec.colour.word())
        );
        // The shipped settings are the preset's (the demo trains what `--preset toy` creates).
        assert_eq!(c.train, Preset::Toy.train_config());
        for r in c.reference_paths(&ws) {
            assert!(r.is_file(), "{} is missing", r.display());
        }
    }
    let mut n = 0;
    for e in std::fs::read_dir(ws.prompts_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let req = load_prompt_file(&p, root).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                CONCEPTS
                    .iter()
                    .any(|c| req.prompt.contains(&format!("<{}>", c.name))),
                "{} uses no demo concept",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 2);
}
