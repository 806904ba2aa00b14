//! `dreamartist concept ...`.

use std::process::ExitCode;

use anyhow::Result;

use super::ConceptCommand;
use crate::concept::{self, add_configured, Concept, NewConcept};
use crate::train::InitMode;
use crate::workspace::Workspace;

pub fn run(action: ConceptCommand) -> Result<ExitCode> {
    match action {
        ConceptCommand::Add {
            name,
            references,
            preset,
            pos_vectors,
            neg_vectors,
            init_text,
            neg_init_text,
            init_mode,
            init_noise,
            class,
            method,
            workspace,
        } => {
            let ws = Workspace::open(&workspace)?;
            let new = NewConcept {
                name,
                references,
                preset,
                pos_vectors,
                neg_vectors,
                init_text,
                class,
                method,
            };
            let c = add_configured(&ws, &new, |c| {
                if let Some(t) = &neg_init_text {
                    if t.trim().is_empty() {
                        anyhow::bail!("--neg-init-text is empty; leave it out to use --init-text");
                    }
                    c.neg_init_text = Some(t.clone());
                }
                if let Some(m) = &init_mode {
                    let mode: InitMode = m.parse().map_err(anyhow::Error::msg)?;
                    c.train.init_mode = mode.to_string();
                }
                if let Some(n) = init_noise {
                    if !(n.is_finite() && n >= 0.0) {
                        anyhow::bail!("--init-noise must be a non-negative number, got {n}");
                    }
                    c.train.init_noise = n;
                }
                Ok(())
            })?;
            println!(
                "created concept {} ({} + {} vectors, preset {}, method {}, {} reference(s))",
                c.positive_word(),
                c.pos_vectors,
                c.neg_vectors,
                c.preset,
                c.train.method,
                c.references.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        ConceptCommand::List { workspace } => {
            let ws = Workspace::open(&workspace)?;
            for name in concept::list(&ws) {
                match Concept::load(&ws, &name) {
                    Ok(c) => println!(
                        "{}\t{}+{} vectors\t{}",
                        c.positive_word(),
                        c.pos_vectors,
                        c.neg_vectors,
                        c.preset
                    ),
                    Err(e) => println!("{name}\tinvalid: {e}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
