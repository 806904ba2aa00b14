//! The toy world's renderer and detector against the reference's own files:
//! our port of `data.py` reproduces the reference images pixel for pixel, and
//! the detector reads them (and clean renders of every combination) exactly.

use std::path::{Path, PathBuf};

use dreamartist::toyworld::protocol::CONCEPTS;
use dreamartist::toyworld::world::{render, Attrs, Colour, Jitter, Position, Shape, Size};
use dreamartist::toyworld::{detect, Detection};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn open(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn the_port_renders_the_reference_images_exactly() {
    for spec in CONCEPTS {
        let file = open(&root().join(format!("references/{}.png", spec.name)));
        let ours = render(
            &Attrs {
                shape: spec.shape,
                colour: spec.colour,
                size: spec.size,
                pos: spec.pos,
                bg: spec.bg,
            },
            Jitter::default(),
        );
        assert_eq!(file.dimensions(), ours.dimensions());
        let differing = file
            .pixels()
            .zip(ours.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "{}: {differing} pixels differ", spec.name);
    }
}

#[test]
fn the_detector_reads_the_references() {
    for spec in CONCEPTS {
        let d = detect(&open(&root().join(format!("references/{}.png", spec.name))));
        assert_eq!(
            (d.shape, d.colour, d.background, d.size),
            (
                Some(spec.shape),
                Some(spec.colour),
                spec.bg,
                Some(spec.size)
            ),
            "{}",
            spec.name
        );
    }
}

#[test]
fn the_detector_is_exact_on_every_clean_combination() {
    let mut wrong: Vec<(Attrs, Detection)> = Vec::new();
    let mut n = 0;
    for &shape in Shape::ALL {
        for &colour in Colour::ALL {
            for &bg in Colour::ALL.iter().filter(|b| **b != colour) {
                for &size in Size::ALL {
                    for &pos in Position::ALL {
                        let a = Attrs {
                            shape,
                            colour,
                            size,
                            pos,
                            bg,
                        };
                        let d = detect(&render(&a, Jitter::default()));
                        n += 1;
                        if (d.shape, d.colour, d.background, d.size)
                            != (Some(shape), Some(colour), bg, Some(size))
                        {
                            wrong.push((a, d));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n, 4 * 8 * 7 * 2 * 5);
    assert!(
        wrong.is_empty(),
        "{} of {n} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
