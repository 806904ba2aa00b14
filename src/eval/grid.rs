//! A prompt's samples as one PNG: a grid (one row up to four samples, else a
//! near-square layout) separated by a thin gap, with the prompt, negative
//! prompt and seeds in PNG text chunks.

use std::path::Path;

use super::error::EvalError;
use crate::generate::png::encode_png;
use crate::workspace::write_atomic;

const GAP: u32 = 2;
const BACKGROUND: image::Rgb<u8> = image::Rgb([24, 24, 24]);

/// Columns of the grid for `n` images.
pub fn columns(n: usize) -> usize {
    if n <= 4 {
        n.max(1)
    } else {
        (n as f64).sqrt().ceil() as usize
    }
}

/// Lays the images out in a grid (cells sized to the largest image).
pub fn compose(images: &[&image::RgbImage]) -> image::RgbImage {
    let cols = columns(images.len()) as u32;
    let rows = (images.len() as u32).div_ceil(cols).max(1);
    let cw = images.iter().map(|i| i.width()).max().unwrap_or(1);
    let ch = images.iter().map(|i| i.height()).max().unwrap_or(1);
    let w = cols * cw + (cols - 1) * GAP;
    let h = rows * ch + (rows - 1) * GAP;
    let mut out = image::RgbImage::from_pixel(w, h, BACKGROUND);
    for (k, img) in images.iter().enumerate() {
        let (c, r) = (k as u32 % cols, k as u32 / cols);
        image::imageops::replace(
            &mut out,
            *img,
            (c * (cw + GAP)) as i64,
            (r * (ch + GAP)) as i64,
        );
    }
    out
}

/// Writes the grid PNG of one prompt's samples.
pub fn write_grid(
    path: &Path,
    images: &[&image::RgbImage],
    prompt: &str,
    negative: &str,
    seeds: &[u64],
) -> Result<(), EvalError> {
    let grid = compose(images);
    let seeds = seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let bytes = encode_png(
        &grid,
        &[
            ("prompt", prompt),
            ("negative", negative),
            ("seeds", &seeds),
        ],
    )
    .map_err(|e| EvalError::bad_file(path, format!("cannot encode the grid: {e:#}")))?;
    write_atomic(path, &bytes).map_err(EvalError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_in_rows_with_gaps() {
        let a = image::RgbImage::from_pixel(4, 3, image::Rgb([255, 0, 0]));
        let b = image::RgbImage::from_pixel(4, 3, image::Rgb([0, 255, 0]));
        let g = compose(&[&a, &b]);
        assert_eq!((g.width(), g.height()), (4 * 2 + GAP, 3));
        assert_eq!(g.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(4, 0).0, BACKGROUND.0);
        assert_eq!(g.get_pixel(4 + GAP, 2).0, [0, 255, 0]);
        assert_eq!(columns(4), 4);
        assert_eq!(columns(5), 3);
        assert_eq!(columns(9), 3);
        let five: Vec<&image::RgbImage> = vec![&a; 5];
        let g = compose(&five);
        assert_eq!((g.width(), g.height()), (3 * 4 + 2 * GAP, 2 * 3 + GAP));
    }
}
