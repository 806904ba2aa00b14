//! `dreamartist concept ...`.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::ConceptCommand;
use crate::concept::{self, add, Concept, NewConcept};
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
            class,
            workspace,
        } => {
            let ws = Workspace::open(&workspace)?;
            let c = add(
                &ws,
                &NewConcept {
                    name,
                    references,
                    preset,
                    pos_vectors,
                    neg_vectors,
                    init_text,
                    class,
                },
            )?;
            println!(
                "created concept {} ({} + {} vectors, preset {}, {} reference(s))",
                c.positive_word(),
                c.pos_vectors,
                c.neg_vectors,
                c.preset,
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
