//! AFL++ target, two properties per input:
//! - read: the input as a PNG file (`generate::png::read_png_text_bytes`, the
//!   reader behind `read_png_text`): hostile chunks must be refused, never panic;
//! - round trip: the input as UTF-8 text chunks to write — records separated
//!   by U+001E, each `key U+001F value` — encoded with a tiny image
//!   (`generate::png::encode_png`) and read back: every pair must come back
//!   exactly (as a multiset: `tEXt` and `iTXt` are read in two groups), or
//!   `encode_png` must refuse them with an error, which it does only for a
//!   key that is no PNG keyword (`generate::png::is_keyword`).

use dreamartist::generate::png::{encode_png, is_keyword, read_png_text_bytes};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = read_png_text_bytes(data);
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let pairs: Vec<(&str, &str)> = text
            .split('\u{1e}')
            .filter(|r| !r.is_empty())
            .map(|r| r.split_once('\u{1f}').unwrap_or((r, "")))
            .take(32)
            .collect();
        let side = 1 + (data.len() % 3) as u32;
        let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let bytes = match encode_png(&img, &pairs) {
            Ok(bytes) => bytes,
            // Only keys that are no PNG keyword are refused.
            Err(e) => {
                assert!(
                    !pairs.iter().all(|(k, _)| is_keyword(k)),
                    "PNG keywords refused: {e:#}"
                );
                return;
            }
        };
        let mut got = read_png_text_bytes(&bytes).expect("our own PNG reads back");
        got.sort();
        let mut want: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(got, want, "text chunks did not round-trip");
    });
}
