//! The rule-based detector of the toy-world benchmark, following the
//! reference's definitions:
//!
//! * background = the most common nearest-palette colour of the image;
//! * object = the largest 4-connected region of non-background pixels;
//! * colour = the most common nearest-palette colour inside the object — over
//!   its interior pixels (all four neighbours in the object) when it has any:
//!   on thin shapes (a small cross's 3-pixel arms) the anti-aliased edge pixels
//!   can outnumber the pure ones and mix to a third palette colour (orange over
//!   blue edges read as purple);
//! * mask = object pixels more than half-way from the background colour to the
//!   object colour (projected on the line between the two);
//! * shape = the template with the best IoU against the mask's bounding-box crop
//!   resampled to 16×16. Templates are rendered with the world's own renderer
//!   (several radii and sub-pixel offsets, since rasterisation changes thin
//!   arms and apexes), plus rounded squares, which is what the autoencoder
//!   makes of square corners;
//! * size = big when the mask's bounding box spans more than 11.5 px (big
//!   objects span 13–17 px, small ones 7–10).

use std::sync::OnceLock;

use image::RgbImage;

use super::world::{shape_mask, Colour, Shape, Size, RES, SS};

/// Side of the resampled crop compared with the templates.
pub const CROP: usize = 16;

/// What the detector sees in one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub background: Colour,
    /// `None` when the image has no non-background pixel.
    pub colour: Option<Colour>,
    pub shape: Option<Shape>,
    pub size: Option<Size>,
    /// IoU of the best template (0 without an object).
    pub shape_iou: f64,
    /// Pixels of the object region.
    pub object_pixels: usize,
}

/// The palette colour nearest to an RGB pixel (Euclidean distance).
pub fn nearest_colour(p: [u8; 3]) -> Colour {
    let mut best = Colour::ALL[0];
    let mut best_d = u32::MAX;
    for c in Colour::ALL {
        let q = c.rgb();
        let d: u32 = (0..3)
            .map(|k| {
                let e = p[k] as i32 - q[k] as i32;
                (e * e) as u32
            })
            .sum();
        if d < best_d {
            best_d = d;
            best = *c;
        }
    }
    best
}

fn most_common(colours: impl Iterator<Item = Colour>) -> Option<Colour> {
    let mut counts = [0usize; 8];
    let mut any = false;
    for c in colours {
        counts[Colour::ALL.iter().position(|x| *x == c).unwrap_or(0)] += 1;
        any = true;
    }
    if !any {
        return None;
    }
    // Ties go to the earlier palette colour (stable, like numpy's argmax).
    let (i, _) = counts.iter().enumerate().fold(
        (0, 0),
        |best, (i, &n)| if n > best.1 { (i, n) } else { best },
    );
    Some(Colour::ALL[i])
}

/// Indices of the largest 4-connected region of `on` pixels (`w × h`, row-major).
fn largest_region(on: &[bool], w: usize, h: usize) -> Vec<usize> {
    let mut seen = vec![false; on.len()];
    let mut best: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..on.len() {
        if !on[start] || seen[start] {
            continue;
        }
        let mut region = Vec::new();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            region.push(i);
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if on[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        if region.len() > best.len() {
            best = region;
        }
    }
    best
}

/// The pixels of `region` whose four neighbours are all in it.
fn interior(region: &[usize], w: usize, h: usize) -> Vec<usize> {
    let mut inside = vec![false; w * h];
    for i in region {
        inside[*i] = true;
    }
    region
        .iter()
        .copied()
        .filter(|&i| {
            let (x, y) = (i % w, i / w);
            x > 0
                && x + 1 < w
                && y > 0
                && y + 1 < h
                && inside[i - 1]
                && inside[i + 1]
                && inside[i - w]
                && inside[i + w]
        })
        .collect()
}

/// The bounding box `(x0, y0, x1, y1)` (inclusive) of `on` pixels.
fn bbox(on: &[bool], w: usize) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for (i, _) in on.iter().enumerate().filter(|(_, v)| **v) {
        let (x, y) = (i % w, i / w);
        b = Some(match b {
            None => (x, y, x, y),
            Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        });
    }
    b
}

/// The mask's bounding-box crop resampled to `CROP × CROP` (area sampling with
/// 4×4 points per cell, thresholded at one half).
pub fn crop_mask(on: &[bool], w: usize) -> Option<Vec<bool>> {
    let (x0, y0, x1, y1) = bbox(on, w)?;
    let (bw, bh) = ((x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64);
    let n = 4usize;
    let mut out = vec![false; CROP * CROP];
    for cy in 0..CROP {
        for cx in 0..CROP {
            let mut hits = 0usize;
            for sy in 0..n {
                let fy = (cy as f64 + (sy as f64 + 0.5) / n as f64) / CROP as f64 * bh;
                let y = y0 + (fy as usize).min(y1 - y0);
                for sx in 0..n {
                    let fx = (cx as f64 + (sx as f64 + 0.5) / n as f64) / CROP as f64 * bw;
                    let x = x0 + (fx as usize).min(x1 - x0);
                    if on[y * w + x] {
                        hits += 1;
                    }
                }
            }
            out[cy * CROP + cx] = 2 * hits >= n * n;
        }
    }
    Some(out)
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        inter += (*x && *y) as usize;
        union += (*x || *y) as usize;
    }
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// A square of half-side `h` with corners rounded to radius `c` (coverage mask).
fn rounded_square(h: f64, c: f64) -> Vec<bool> {
    let (res, ss, centre) = (RES, SS, RES as f64 / 2.0);
    let mut on = vec![false; res * res];
    for py in 0..res {
        for px in 0..res {
            let mut hits = 0;
            for sy in 0..ss {
                for sx in 0..ss {
                    let x = ((px * ss + sx) as f64 + 0.5) / ss as f64 - centre;
                    let y = ((py * ss + sy) as f64 + 0.5) / ss as f64 - centre;
                    let (qx, qy) = ((x.abs() - (h - c)).max(0.0), (y.abs() - (h - c)).max(0.0));
                    if x.abs() <= h && y.abs() <= h && qx * qx + qy * qy <= c * c {
                        hits += 1;
                    }
                }
            }
            on[py * res + px] = 2 * hits > ss * ss;
        }
    }
    on
}

/// The shape templates: 16×16 crops of rendered shapes.
pub fn templates() -> &'static [(Shape, Vec<bool>)] {
    static T: OnceLock<Vec<(Shape, Vec<bool>)>> = OnceLock::new();
    T.get_or_init(|| {
        let mut out = Vec::new();
        for shape in Shape::ALL {
            for r in [4.0, 4.5, 5.0, 6.0, 7.0, 7.5, 8.0, 8.5] {
                for (ox, oy) in [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.25, 0.75)] {
                    let cov = shape_mask(*shape, 16.0 + ox, 16.0 + oy, r, RES, SS);
                    let on: Vec<bool> = cov.iter().map(|c| *c > 0.5).collect();
                    if let Some(t) = crop_mask(&on, RES) {
                        out.push((*shape, t));
                    }
                }
            }
        }
        for h in [4.0, 5.5, 6.8, 7.2] {
            for frac in [0.25, 0.4] {
                if let Some(t) = crop_mask(&rounded_square(h, h * frac), RES) {
                    out.push((Shape::Square, t));
                }
            }
        }
        out
    })
}

/// The best-matching template's shape and IoU for a 16×16 crop.
pub fn classify_crop(crop: &[bool]) -> (Shape, f64) {
    let mut best = (Shape::Circle, -1.0);
    for (shape, t) in templates() {
        let v = iou(crop, t);
        if v > best.1 {
            best = (*shape, v);
        }
    }
    best
}

/// Runs the detector on an RGB image of any size.
pub fn detect(img: &RgbImage) -> Detection {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    let nearest: Vec<Colour> = pixels.iter().map(|p| nearest_colour(*p)).collect();
    let background = most_common(nearest.iter().copied()).unwrap_or(Colour::Black);
    let on: Vec<bool> = nearest.iter().map(|c| *c != background).collect();
    let region = largest_region(&on, w, h);
    let colour = most_common(interior(&region, w, h).iter().map(|i| nearest[*i]))
        .or_else(|| most_common(region.iter().map(|i| nearest[*i])));
    let mut det = Detection {
        background,
        colour,
        shape: None,
        size: None,
        shape_iou: 0.0,
        object_pixels: region.len(),
    };
    let Some(colour) = colour else {
        return det;
    };
    let (bg, fg) = (background.rgb(), colour.rgb());
    let axis: [f64; 3] = std::array::from_fn(|k| fg[k] as f64 - bg[k] as f64);
    let len2: f64 = axis.iter().map(|a| a * a).sum();
    let mut mask = vec![false; w * h];
    for i in &region {
        let p = pixels[*i];
        let t: f64 = (0..3)
            .map(|k| (p[k] as f64 - bg[k] as f64) * axis[k])
            .sum::<f64>()
            / len2.max(1e-9);
        mask[*i] = t > 0.5;
    }
    let Some((x0, y0, x1, y1)) = bbox(&mask, w) else {
        return det;
    };
    let span = (x1 - x0 + 1).max(y1 - y0 + 1) as f64;
    det.size = Some(if span > 11.5 { Size::Big } else { Size::Small });
    if let Some(crop) = crop_mask(&mask, w) {
        let (shape, v) = classify_crop(&crop);
        det.shape = Some(shape);
        det.shape_iou = v;
    }
    det
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::toyworld::world::{render, Attrs, Jitter, Position};

    #[test]
    fn nearest_colour_is_exact_on_the_palette() {
        for c in Colour::ALL {
            assert_eq!(nearest_colour(c.rgb()), *c);
        }
        // A red-tinged orange counts as red, as in the reference detector.
        assert_eq!(nearest_colour([240, 70, 25]), Colour::Red);
    }

    #[test]
    fn largest_region_is_four_connected() {
        // Two diagonal pixels are two regions; the 3-pixel bar wins.
        #[rustfmt::skip]
        let on = [
            true,  false, false, false,
            false, true,  false, false,
            false, false, false, false,
            true,  true,  true,  false,
        ];
        let r = largest_region(&on, 4, 4);
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|i| *i >= 12));
    }

    #[test]
    fn every_shape_is_found_on_clean_renders() {
        for shape in Shape::ALL {
            for size in [Size::Big, Size::Small] {
                let a = Attrs {
                    shape: *shape,
                    colour: Colour::Orange,
                    size,
                    pos: Position::Center,
                    bg: Colour::Purple,
                };
                let d = detect(&render(&a, Jitter::default()));
                assert_eq!(d.shape, Some(*shape), "{a:?}");
                assert_eq!(d.colour, Some(Colour::Orange));
                assert_eq!(d.background, Colour::Purple);
                assert_eq!(d.size, Some(size));
            }
        }
    }

    #[test]
    fn detector_is_exact_on_jittered_renders() {
        let mut rng = Rng::seed(11);
        for _ in 0..300 {
            let a = Attrs::random(&mut rng, false);
            let j = Jitter::random(&mut rng);
            let d = detect(&render(&a, j));
            assert_eq!(d.background, a.bg, "{a:?} {j:?}");
            assert_eq!(d.colour, Some(a.colour), "{a:?} {j:?}");
            assert_eq!(d.shape, Some(a.shape), "{a:?} {j:?}");
            assert_eq!(d.size, Some(a.size), "{a:?} {j:?}");
        }
    }

    #[test]
    fn a_blank_image_has_no_object() {
        let img = RgbImage::from_pixel(32, 32, image::Rgb(Colour::Green.rgb()));
        let d = detect(&img);
        assert_eq!(d.background, Colour::Green);
        assert_eq!((d.colour, d.shape, d.size), (None, None, None));
    }

    #[test]
    fn rounded_squares_count_as_squares_and_discs_as_circles() {
        let (s, _) = classify_crop(&crop_mask(&rounded_square(6.8, 2.0), RES).unwrap());
        assert_eq!(s, Shape::Square);
        let disc = shape_mask(Shape::Circle, 16.0, 16.0, 7.0, RES, SS);
        let on: Vec<bool> = disc.iter().map(|c| *c > 0.5).collect();
        assert_eq!(
            classify_crop(&crop_mask(&on, RES).unwrap()).0,
            Shape::Circle
        );
    }
}
