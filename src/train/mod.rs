//! Contrastive prompt tuning (DreamArtist): the loss, the optimiser and (later)
//! the training loop. Reports through return values and callbacks; never prints.

pub mod loss;
pub mod optim;

pub use loss::{cpt_loss, CfgSpec, ConceptPrompts, CptBatch, CptLoss};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
