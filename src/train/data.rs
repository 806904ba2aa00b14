//! Reference images for training: centre-crop and resize to the training size,
//! optional `<stem>.txt` caption (for `[filewords]`), optional
//! `<stem>_mask.png` weighting map (0 → 0, 50% → 1, 100% → 5, resized to latent
//! size), optional horizontal flip. Latents are encoded once: the posterior
//! mean × scale, and the posterior std × scale for runs that draw a fresh
//! posterior sample every step (`vae_sample`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};

use super::TrainError;
use crate::sd::StableDiffusion;

/// One reference, ready to sample from.
#[derive(Debug, Clone)]
pub struct Reference {
    pub path: PathBuf,
    pub caption: Option<String>,
    /// Scaled latents `[1, C, h, w]` (posterior mean), and the flipped ones.
    pub latent: Tensor,
    pub latent_flipped: Tensor,
    /// Scaled posterior std `[1, C, h, w]`: a posterior sample is
    /// `latent + latent_std · ε`.
    pub latent_std: Tensor,
    pub latent_std_flipped: Tensor,
    /// Images in [-1, 1] `[1, 3, H, W]` (for the reconstruction loss).
    pub image: Tensor,
    pub image_flipped: Tensor,
    /// Weight map `[1, 1, h, w]`.
    pub mask: Option<Tensor>,
    pub mask_flipped: Option<Tensor>,
}

fn reference_error(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Reference {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Opens a reference image (see [`crate::concept::reference::open_image`]).
pub fn open_image(path: &Path) -> Result<DynamicImage, TrainError> {
    crate::concept::reference::open_image(path).map_err(|e| TrainError::Reference {
        path: e.path,
        message: e.message,
    })
}

/// The largest centred crop of a `w`×`h` image with the aspect of
/// `tw`×`th`: `(x, y, width, height)`, the region both image and mask use.
fn centre_crop(w: u32, h: u32, tw: usize, th: usize) -> (u32, u32, u32, u32) {
    let (tw, th) = (tw as u64, th as u64);
    let (w64, h64) = (w as u64, h as u64);
    // Width-limited when w/h < tw/th.
    let (cw, ch) = if w64 * th <= h64 * tw {
        (w64, (w64 * th / tw).clamp(1, h64))
    } else {
        ((h64 * tw / th).clamp(1, w64), h64)
    };
    let (cw, ch) = (cw as u32, ch as u32);
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

fn to_tensor(rgb: &image::RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = rgb.dimensions();
    let data: Vec<f32> = rgb
        .as_raw()
        .iter()
        .map(|v| *v as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()
}

/// Maps mask intensity to loss weight: 0 → 0, 0.5 → 1, 1 → 5 (piecewise linear).
pub fn mask_weight(v: f32) -> f32 {
    if v <= 0.5 {
        2.0 * v
    } else {
        1.0 + (v - 0.5) * 8.0
    }
}

pub use crate::concept::reference::companions;

/// Loads and encodes the references at `width`×`height`, each centre-cropped
/// to that aspect first (as the DreamArtist extension does).
pub fn load_references(
    sd: &StableDiffusion,
    paths: &[PathBuf],
    (width, height): (usize, usize),
) -> Result<Vec<Reference>, TrainError> {
    if paths.is_empty() {
        return Err(TrainError::Config(
            "the concept has no reference images; add one with `concept add --reference`".into(),
        ));
    }
    let down = sd.vae.downscale();
    for (name, v) in [("width", width), ("height", height)] {
        if v == 0 || v % 8 != 0 || v % down != 0 {
            return Err(TrainError::Config(format!(
                "training {name} {v} must be a positive multiple of 8"
            )));
        }
    }
    let (latent_w, latent_h) = (width / down, height / down);
    let device = &sd.device;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let img = open_image(path)?;
        let (w, h) = img.dimensions();
        let (x, y, cw, ch) = centre_crop(w, h, width, height);
        let rgb = img
            .crop_imm(x, y, cw, ch)
            .resize_exact(width as u32, height as u32, FilterType::Lanczos3)
            .to_rgb8();
        let flipped = image::imageops::flip_horizontal(&rgb);
        let image = to_tensor(&rgb, device)?;
        let image_flipped = to_tensor(&flipped, device)?;
        let encode = |t: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            let dist = sd.vae.encode(&t.to_dtype(sd.dtype)?)?;
            let mean = sd.vae.scale_latents(&dist.mean)?.to_dtype(DType::F32)?;
            // Scaling is affine: the std scales by the factor, the shift cancels.
            let std = (dist.std.to_dtype(DType::F32)? * sd.vae.config.scaling_factor)?;
            Ok((mean, std))
        };
        let (latent, latent_std) = encode(&image)?;
        let (latent_flipped, latent_std_flipped) = encode(&image_flipped)?;
        let (caption_path, mask_path) = companions(path);
        let caption = if caption_path.is_file() {
            let text = std::fs::read_to_string(&caption_path)
                .map_err(|e| reference_error(&caption_path, format!("cannot read caption: {e}")))?;
            Some(text.trim().to_string())
        } else {
            // A1111's fallback: the file name stands in for the caption.
            Some(crate::concept::reference::filewords_from_name(path)).filter(|s| !s.is_empty())
        };
        let (mask, mask_flipped) = if mask_path.is_file() {
            let m = open_image(&mask_path)?;
            if m.dimensions() != (w, h) {
                let (mw, mh) = m.dimensions();
                return Err(reference_error(
                    &mask_path,
                    format!("mask is {mw}x{mh} but the reference {} is {w}x{h}; save the mask at the image's size", path.display()),
                ));
            }
            let gray = m
                .crop_imm(x, y, cw, ch)
                .resize_exact(latent_w as u32, latent_h as u32, FilterType::Triangle)
                .to_luma8();
            let flipped = image::imageops::flip_horizontal(&gray);
            let to_weights = |g: &image::GrayImage| -> candle_core::Result<Tensor> {
                let data: Vec<f32> = g
                    .as_raw()
                    .iter()
                    .map(|v| mask_weight(*v as f32 / 255.0))
                    .collect();
                Tensor::from_vec(data, (1, 1, latent_h, latent_w), device)
            };
            (Some(to_weights(&gray)?), Some(to_weights(&flipped)?))
        } else {
            (None, None)
        };
        out.push(Reference {
            path: path.clone(),
            caption,
            latent,
            latent_flipped,
            latent_std,
            latent_std_flipped,
            image,
            image_flipped,
            mask,
            mask_flipped,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_weights_follow_the_method() {
        assert_eq!(mask_weight(0.0), 0.0);
        assert_eq!(mask_weight(0.5), 1.0);
        assert_eq!(mask_weight(1.0), 5.0);
        assert!((mask_weight(0.75) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn centre_square_crops_the_long_side() {
        assert_eq!(centre_crop(100, 60, 8, 8), (20, 0, 60, 60));
        assert_eq!(centre_crop(60, 100, 8, 8), (0, 20, 60, 60));
        // 64×48 (4:3) out of a square and out of a wide image.
        assert_eq!(centre_crop(100, 100, 64, 48), (0, 12, 100, 75));
        assert_eq!(centre_crop(200, 100, 64, 48), (33, 0, 133, 100));
    }
}
