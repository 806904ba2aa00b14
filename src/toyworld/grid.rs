//! Image grids for looking at samples (as the reference's `save_grid`): rows of
//! equally sized images on a grey canvas with 2-pixel gaps, nearest-neighbour
//! upscaled so 32-pixel samples are visible.

use image::{imageops, Rgb, RgbImage};

const GAP: u32 = 2;
const CANVAS: Rgb<u8> = Rgb([128, 128, 128]);

/// Lays out `rows` (rows may differ in length; an empty slot stays grey) and
/// upscales the whole grid by `scale`. Returns `None` when there is no image.
pub fn grid(rows: &[Vec<RgbImage>], scale: u32) -> Option<RgbImage> {
    let first = rows.iter().flatten().next()?;
    let (w, h) = first.dimensions();
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32;
    let mut g = RgbImage::from_pixel(cols * (w + GAP), rows.len() as u32 * (h + GAP), CANVAS);
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let x = c as u32 * (w + GAP) + GAP / 2;
            let y = r as u32 * (h + GAP) + GAP / 2;
            imageops::replace(&mut g, img, x as i64, y as i64);
        }
    }
    let scale = scale.max(1);
    Some(imageops::resize(
        &g,
        g.width() * scale,
        g.height() * scale,
        imageops::FilterType::Nearest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_in_rows_and_scales() {
        let red = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(4, 4, Rgb([0, 0, 255]));
        let g = grid(&[vec![red.clone(), blue], vec![red]], 2).unwrap();
        assert_eq!(g.dimensions(), (2 * 12, 2 * 12));
        assert_eq!(g.get_pixel(2 * 2, 2 * 2).0, [255, 0, 0]);
        assert_eq!(g.get_pixel(2 * 8, 2 * 2).0, [0, 0, 255]);
        // The missing second image of row 2 leaves the canvas grey.
        assert_eq!(g.get_pixel(2 * 8, 2 * 8).0, [128, 128, 128]);
        assert!(grid(&[], 2).is_none());
    }
}
