//! `CLIPImageProcessor` as Hugging Face runs it: convert to RGB, resize (the
//! shortest edge to `size.shortest_edge`, PIL resampling), centre crop to
//! `crop_size` (zero-padding images smaller than the crop), rescale by
//! `rescale_factor`, normalise with `image_mean` / `image_std`; all settings
//! from `preprocessor_config.json`.
//!
//! Parity: the resize is Pillow's own algorithm (see [`super::resample`]), and
//! rescaling/normalising follow numpy's dtypes (`u8 → f64 · factor → f32`,
//! then `(x − mean) / std` in f32), so `pixel_values` match the reference
//! exactly (measured on the tiny-clip goldens: max |Δ| = 0; the test allows
//! 1e-5). For comparison, the `image` crate's Catmull-Rom resize is off by up
//! to 7 levels of 255 there (0.10 in `pixel_values`, 5.5e-3 in the image
//! embeddings).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::error::ClipError;
use super::resample::{resize_rgb8, Filter};

/// How the shorter side, or both sides, are resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Scale so the shortest edge is this long (aspect ratio kept).
    ShortestEdge(usize),
    /// Resize to exactly `height × width`.
    Exact { height: usize, width: usize },
}

/// The preprocessing settings of one CLIP model.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    pub resize: Option<Resize>,
    pub filter: Filter,
    /// `(height, width)` of the centre crop.
    pub crop: Option<(usize, usize)>,
    pub rescale: Option<f64>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub normalize: bool,
}

const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

fn yes() -> bool {
    true
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn default_resample() -> u64 {
    3
}

/// The fields of `preprocessor_config.json` that matter, with
/// `CLIPImageProcessor`'s defaults for absent ones.
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default)]
    size: Option<serde_json::Value>,
    #[serde(default = "default_resample")]
    resample: u64,
    #[serde(default = "yes")]
    do_center_crop: bool,
    #[serde(default)]
    crop_size: Option<serde_json::Value>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "default_rescale")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default)]
    image_mean: Option<Vec<f64>>,
    #[serde(default)]
    image_std: Option<Vec<f64>>,
}

fn positive(v: &serde_json::Value) -> Option<usize> {
    v.as_u64().filter(|n| *n > 0).map(|n| n as usize)
}

impl Preprocessor {
    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ClipError> {
        if !path.is_file() {
            return Err(ClipError::MissingFile {
                path: path.to_path_buf(),
                what: "preprocessor_config.json (image size, crop, mean and std)".into(),
            });
        }
        let bad = |message: String| ClipError::BadFile {
            path: path.to_path_buf(),
            what: "preprocessor config".into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let resize = if raw.do_resize {
            Some(match &raw.size {
                None => Resize::ShortestEdge(224),
                Some(v) => {
                    if let Some(n) = positive(v) {
                        Resize::ShortestEdge(n)
                    } else if let Some(n) = v.get("shortest_edge").and_then(positive) {
                        Resize::ShortestEdge(n)
                    } else if let (Some(height), Some(width)) = (
                        v.get("height").and_then(positive),
                        v.get("width").and_then(positive),
                    ) {
                        Resize::Exact { height, width }
                    } else {
                        return Err(bad(format!(
                            "`size` is {v}; expected {{\"shortest_edge\": N}} or {{\"height\": H, \"width\": W}}"
                        )));
                    }
                }
            })
        } else {
            None
        };
        let crop = if raw.do_center_crop {
            Some(match &raw.crop_size {
                None => (224, 224),
                Some(v) => {
                    if let Some(n) = positive(v) {
                        (n, n)
                    } else if let (Some(h), Some(w)) = (
                        v.get("height").and_then(positive),
                        v.get("width").and_then(positive),
                    ) {
                        (h, w)
                    } else {
                        return Err(bad(format!(
                            "`crop_size` is {v}; expected {{\"height\": H, \"width\": W}}"
                        )));
                    }
                }
            })
        } else {
            None
        };
        let filter = Filter::from_pil(raw.resample).ok_or_else(|| {
            bad(format!(
                "`resample` {} is not supported (use 1 lanczos, 2 bilinear, 3 bicubic, 4 box or 5 hamming)",
                raw.resample
            ))
        })?;
        let triple = |v: Option<Vec<f64>>, default: [f64; 3], name: &str| {
            let v = v.unwrap_or_else(|| default.to_vec());
            match v.as_slice() {
                [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
                _ => Err(bad(format!(
                    "`{name}` must have 3 values (RGB), found {}",
                    v.len()
                ))),
            }
        };
        let mean = triple(raw.image_mean, OPENAI_CLIP_MEAN, "image_mean")?;
        let std = triple(raw.image_std, OPENAI_CLIP_STD, "image_std")?;
        if raw.do_normalize && std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err(bad("`image_std` must be non-zero".into()));
        }
        if raw.do_rescale && !(raw.rescale_factor.is_finite() && raw.rescale_factor > 0.0) {
            return Err(bad("`rescale_factor` must be a positive number".into()));
        }
        Ok(Self {
            resize,
            filter,
            crop,
            rescale: raw.do_rescale.then_some(raw.rescale_factor),
            mean,
            std,
            normalize: raw.do_normalize,
        })
    }

    /// The `(height, width)` of the processed image of a `w × h` input.
    pub fn output_size(&self, (w, h): (usize, usize)) -> (usize, usize) {
        if let Some(c) = self.crop {
            return c;
        }
        let (rw, rh) = self.resized_size((w, h));
        (rh, rw)
    }

    /// `get_resize_output_image_size`: `(width, height)` after the resize.
    fn resized_size(&self, (w, h): (usize, usize)) -> (usize, usize) {
        match self.resize {
            None => (w, h),
            Some(Resize::Exact { height, width }) => (width, height),
            Some(Resize::ShortestEdge(s)) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                // Python: int(size * long / short), a float division truncated.
                let new_long = ((s * long) as f64 / short.max(1) as f64) as usize;
                if w <= h {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
        }
    }

    /// Resize + centre crop, still 8-bit (what the model sees, before scaling).
    pub fn crop_u8(&self, img: &image::RgbImage) -> (Vec<u8>, usize, usize) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (rw, rh) = self.resized_size((w, h));
        let resized = if (rw, rh) == (w, h) {
            img.as_raw().clone()
        } else {
            resize_rgb8(img.as_raw(), (w, h), (rw, rh), self.filter)
        };
        let Some((ch, cw)) = self.crop else {
            return (resized, rw, rh);
        };
        // numpy's `center_crop`: offset floor((orig − crop) / 2), zeros outside.
        let top = (rh as i64 - ch as i64).div_euclid(2);
        let left = (rw as i64 - cw as i64).div_euclid(2);
        let mut out = vec![0u8; cw * ch * 3];
        for y in 0..ch {
            let sy = y as i64 + top;
            if sy < 0 || sy >= rh as i64 {
                continue;
            }
            for x in 0..cw {
                let sx = x as i64 + left;
                if sx < 0 || sx >= rw as i64 {
                    continue;
                }
                let s = (sy as usize * rw + sx as usize) * 3;
                let o = (y * cw + x) * 3;
                out[o..o + 3].copy_from_slice(&resized[s..s + 3]);
            }
        }
        (out, cw, ch)
    }

    /// `pixel_values` of one image: `[3, H, W]` f32, channels first.
    pub fn pixel_values(&self, img: &image::RgbImage) -> Vec<f32> {
        let (bytes, w, h) = self.crop_u8(img);
        let mut out = vec![0f32; 3 * w * h];
        for (i, px) in bytes.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut v = match self.rescale {
                    Some(f) => (px[c] as f64 * f) as f32,
                    None => px[c] as f32,
                };
                if self.normalize {
                    v = (v - self.mean[c]) / self.std[c];
                }
                out[c * w * h + i] = v;
            }
        }
        out
    }

    /// A batch `[n, 3, H, W]`; every image must come out the same size (always
    /// true with a centre crop).
    pub fn batch(
        &self,
        images: &[&image::RgbImage],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = Vec::new();
        let mut size = None;
        for img in images {
            let (h, w) = self.output_size((img.width() as usize, img.height() as usize));
            if size.is_some_and(|s| s != (h, w)) {
                return Err(candle_core::Error::Msg(
                    "images of different sizes after preprocessing (no centre crop configured)"
                        .into(),
                ));
            }
            size = Some((h, w));
            data.extend(self.pixel_values(img));
        }
        let (h, w) = size.unwrap_or((0, 0));
        Tensor::from_vec(data, (images.len(), 3, h, w), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(size: usize, crop: usize) -> Preprocessor {
        Preprocessor {
            resize: Some(Resize::ShortestEdge(size)),
            filter: Filter::Bicubic,
            crop: Some((crop, crop)),
            rescale: Some(1.0 / 255.0),
            mean: [0.5; 3],
            std: [0.5; 3],
            normalize: true,
        }
    }

    #[test]
    fn shortest_edge_keeps_the_aspect_ratio_like_transformers() {
        let p = pre(32, 32);
        assert_eq!(p.resized_size((56, 40)), (44, 32));
        assert_eq!(p.resized_size((40, 56)), (32, 44));
        assert_eq!(p.resized_size((56, 56)), (32, 32));
        assert_eq!(p.resized_size((225, 224)), (32, 32));
    }

    #[test]
    fn small_images_are_zero_padded_in_the_crop() {
        let p = Preprocessor {
            resize: None,
            ..pre(4, 4)
        };
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255]));
        let (bytes, w, h) = p.crop_u8(&img);
        assert_eq!((w, h), (4, 4));
        // Centred: rows/cols 1..3 are white, the border is zero.
        let at = |x: usize, y: usize| bytes[(y * 4 + x) * 3];
        assert_eq!((at(0, 0), at(1, 1), at(2, 2), at(3, 3)), (0, 255, 255, 0));
        let v = p.pixel_values(&img);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[5], 1.0);
    }
}
