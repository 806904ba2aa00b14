//! dreamartist: one-shot concept learning on Stable Diffusion with DreamArtist
//! (contrastive prompt tuning), on candle.

pub mod cli;
pub mod generate;
pub mod sd;
pub mod selftest;
pub mod train;
