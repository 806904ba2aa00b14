//! The toy-world pipeline end to end on the bundled toy model, on a reduced
//! protocol: the real trainer learns `<purple_cross>` with DreamArtist from the
//! one reference (mean init over the colour/shape words, posterior sampling,
//! one-line template), then batched DDIM sampling and the detector show that
//! the trained vectors draw the concept's shape and colour far more often than
//! the untrained init vectors they started from.

mod common;

use std::path::{Path, PathBuf};

use dreamartist::sd::{LoadOptions, StableDiffusion};
use dreamartist::toyworld::oneshot::{self, Method};
use dreamartist::toyworld::protocol::{sample_batch, SampleSettings, CONCEPTS};
use dreamartist::toyworld::{detect, Detection};
use dreamartist::workspace::Workspace;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Samples of the plain prompt that have the concept's shape, plus those that
/// have its colour.
fn hits(dets: &[Detection]) -> usize {
    let spec = CONCEPTS[0];
    dets.iter()
        .map(|d| (d.shape == Some(spec.shape)) as usize + (d.colour == Some(spec.colour)) as usize)
        .sum()
}

#[test]
fn dreamartist_learns_the_held_out_concept_from_one_image() {
    let spec = CONCEPTS[0];
    assert_eq!(spec.name, "purple_cross");
    let sd = StableDiffusion::load_folder(&root().join("assets/toyworld"), &LoadOptions::default())
        .expect("the bundled toy model loads");
    let tmp = tempfile::tempdir().unwrap();
    let ws = Workspace::init(
        &tmp.path().join("ws"),
        &root().join("assets/toyworld").to_string_lossy(),
    )
    .unwrap();
    let reference = root().join("references/purple_cross.png");
    let rel = dreamartist::concept::create::import_reference(&ws, &reference).unwrap();

    // The reference setting, shortened: 60 steps of batch 1 at four times the
    // rate (1/27 of the reference's UNet work).
    let mut cfg = oneshot::reference_config(Method::DreamArtist, 0);
    cfg.steps = 60;
    cfg.batch_size = 1;
    cfg.lr = "0.02".into();
    let concept = oneshot::concept("purple_cross", &rel, cfg);
    let trained = oneshot::train_concept(&sd, &ws, &concept).expect("training runs");
    let neg = trained
        .neg
        .as_ref()
        .expect("DreamArtist writes a negative word");
    assert_eq!(trained.pos.dims(), &[3, 64]);
    assert_eq!(neg.dims(), &[6, 64]);
    let (pos0, neg0) = oneshot::untrained_vectors(&sd, &concept).unwrap();
    let moved = common::max_abs(&(&trained.pos - &pos0).unwrap());
    assert!(moved > 0.05, "the positive vectors barely moved ({moved})");

    let settings = SampleSettings {
        samples: 8,
        first_seed: 0,
        steps: 12,
        cfg: 5.0,
        ..Default::default()
    };
    let run = |pos: &candle_core::Tensor, neg: &candle_core::Tensor| -> Vec<Detection> {
        let bank = oneshot::bank(pos, Some(neg));
        let subject = oneshot::subject(&bank, true);
        let prompt = subject.prompts()[0].0.clone();
        let images = sample_batch(&sd, &bank, &prompt, &subject.negative, &settings).unwrap();
        assert_eq!(images.len(), 8);
        assert!(images.iter().all(|i| i.dimensions() == (32, 32)));
        images.iter().map(detect).collect()
    };
    let learned = hits(&run(&trained.pos, neg));
    let untrained = hits(&run(&pos0, &neg0));
    // Measured: 13 (8 purple, 5 crosses) against 0.
    assert!(
        learned >= untrained + 6,
        "trained vectors: {learned} shape/colour hits in 8 samples; untrained: {untrained}"
    );
}
