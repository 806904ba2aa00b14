//! dreamartist: one-shot concept learning on Stable Diffusion with DreamArtist
//! (contrastive prompt tuning), on candle.

pub mod bench;
pub mod cli;
pub mod concept;
pub mod engine;
pub mod errtext;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod heap;
pub mod interop;
pub mod rng;
pub mod runs;
pub mod sd;
pub mod selftest;
pub mod slurm;
pub mod sweep;
pub mod threads;
pub mod torchfile;
pub mod toyworld;
pub mod train;
pub mod tui;
pub mod workspace;
