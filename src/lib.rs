//! dreamartist: one-shot concept learning on Stable Diffusion with DreamArtist
//! (contrastive prompt tuning), on candle.

pub mod bench;
pub mod cli;
mod cli_concept;
mod cli_eval;
mod cli_generate;
mod cli_interop;
mod cli_train;
mod cli_watch;
pub mod concept;
pub mod engine;
pub mod eval;
pub mod generate;
pub mod interop;
pub mod rng;
pub mod sd;
pub mod selftest;
pub mod threads;
pub mod toyworld;
pub mod train;
pub mod tui;
pub mod workspace;
