//! PNG output with an A1111-compatible `parameters` text chunk, so other tools'
//! "PNG info" reads prompt, seed and settings back.

use std::io::{BufRead, BufReader, BufWriter, Cursor, Seek};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// Whether `key` is a PNG text keyword: 1 to 79 printable Latin-1 characters,
/// no leading, trailing or consecutive spaces (PNG 1.2, 11.3.4.2). The png
/// crate writes any Latin-1 key, but a NUL in one moves the split between
/// key and text, so the pair read back is another one (or none).
pub fn is_keyword(key: &str) -> bool {
    let printable = |c: char| matches!(c, ' '..='~' | '\u{a1}'..='\u{ff}');
    (1..=79).contains(&key.chars().count())
        && key.chars().all(printable)
        && !key.starts_with(' ')
        && !key.ends_with(' ')
        && !key.contains("  ")
}

/// Encodes an RGB image as PNG bytes with text chunks: `tEXt` when the text is
/// Latin-1 (what every reader takes), else UTF-8 `iTXt` (emoji, CJK), as
/// A1111 (through Pillow) writes them. A key that is no PNG keyword
/// ([`is_keyword`]) is refused.
pub fn encode_png(img: &image::RgbImage, text: &[(&str, &str)]) -> Result<Vec<u8>> {
    if let Some((k, _)) = text.iter().find(|(k, _)| !is_keyword(k)) {
        return Err(anyhow!(
            "PNG text chunk {k:?}: a key is 1 to 79 printable Latin-1 characters without \
             leading, trailing or double spaces"
        ));
    }
    let mut bytes = Vec::new();
    {
        let w = BufWriter::new(&mut bytes);
        let mut enc = png::Encoder::new(w, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in text {
            let latin1 = v.chars().all(|c| (c as u32) < 0x100);
            let added = if latin1 {
                enc.add_text_chunk(k.to_string(), v.to_string())
            } else {
                enc.add_itxt_chunk(k.to_string(), v.to_string())
            };
            added.map_err(|e| anyhow!("PNG text chunk `{k}`: {e}"))?;
        }
        let mut writer = enc.write_header().context("PNG header")?;
        writer.write_image_data(img.as_raw()).context("PNG data")?;
        writer.finish().context("PNG end")?;
    }
    Ok(bytes)
}

/// Reads the `tEXt`/`iTXt` chunks of a PNG file (`parameters` among them).
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    png_text(BufReader::new(file)).with_context(|| format!("{}: not a PNG", path.display()))
}

/// [`read_png_text`] of PNG bytes in memory.
pub fn read_png_text_bytes(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    png_text(Cursor::new(bytes)).context("not a PNG")
}

/// The text chunks before the image data: `tEXt` first, then `iTXt`.
fn png_text<R: BufRead + Seek>(r: R) -> Result<Vec<(String, String)>, png::DecodingError> {
    let reader = png::Decoder::new(r).read_info()?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        if let Ok(s) = t.get_text() {
            out.push((t.keyword.clone(), s));
        }
    }
    Ok(out)
}

/// Writes `bytes` to the next free `NNNNN-<seed>.png` in `dir` (never
/// overwriting: the name is reserved with an exclusive create, then filled
/// through a temporary file and a rename).
pub fn write_numbered(dir: &Path, seed: u64, bytes: &[u8]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut next = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.split('-').next()?.parse::<u64>().ok()
        })
        .max()
        .map_or(1, |m| m + 1);
    loop {
        let path = dir.join(format!("{next:05}-{seed}.png"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {
                if let Err(e) = crate::workspace::write_atomic(&path, bytes) {
                    // Never leave the reserved, empty name behind (a full disk).
                    let _ = std::fs::remove_file(&path);
                    return Err(e).with_context(|| format!("{}: cannot write", path.display()));
                }
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
            Err(e) => return Err(e).with_context(|| format!("{}: cannot create", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_and_latin1_text_round_trip() {
        let img = image::RgbImage::new(2, 2);
        let prompts = [
            ("parameters", "a café on the beach, naïve"),
            ("emoji", "a 🐱 in 東京 (masterpiece:1.2)"),
        ];
        let bytes = encode_png(&img, &prompts).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.png");
        std::fs::write(&path, &bytes).unwrap();
        let mut read = read_png_text(&path).unwrap();
        read.sort();
        let mut want: Vec<(String, String)> = prompts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(read, want);
        let mut in_memory = read_png_text_bytes(&bytes).unwrap();
        in_memory.sort();
        assert_eq!(in_memory, want);
        assert!(read_png_text_bytes(b"not a png").is_err());
        // Latin-1 stays in tEXt, which every PNG reader takes.
        let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!(info.uncompressed_latin1_text.len(), 1);
        assert_eq!(info.utf8_text.len(), 1);
    }

    /// Fuzzing (fuzz/src/png.rs, the writer → reader round trip): a key with
    /// a NUL was written as is, so the reader split key and text elsewhere
    /// (`k\0\x01` + `\0\x32` read back as `k` + `\x01\0\0\x32`) or dropped the
    /// chunk (an empty key). Keys that are no PNG keyword are refused now.
    #[test]
    fn keys_must_be_png_keywords() {
        let img = image::RgbImage::new(1, 1);
        let long = "k".repeat(80);
        for key in [
            "\0", "k\0\u{1}", "", " k", "k ", "a  b", "tab\t", "猫", &long,
        ] {
            let err = encode_png(&img, &[("parameters", "x"), (key, "\0\x32")]).unwrap_err();
            assert!(err.to_string().contains(&format!("{key:?}")), "{err}");
        }
        // Values keep their NULs, in tEXt and iTXt alike.
        let text = [
            ("parameters", "a\0b"),
            ("Comment", "猫\0"),
            (&long[..79], ""),
        ];
        let mut read = read_png_text_bytes(&encode_png(&img, &text).unwrap()).unwrap();
        read.sort();
        let mut want: Vec<(String, String)> = text
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(read, want);
        assert!(is_keyword("Software") && is_keyword("a b ÿ") && !is_keyword("\u{a0}"));
    }
}
