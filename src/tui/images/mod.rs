//! In-pane image previews with ratatui-image: protocol detection by asking
//! the terminal with a deadline ([`probe`], [`choose`]: kitty with Unicode
//! placeholders incl. tmux passthrough, sixel, iTerm2, half-blocks whenever
//! anything is uncertain), decoding on a loader thread, resizing and encoding on
//! one encoder thread per slot (the UI thread never touches pixels), and a text
//! placeholder when previews are off (`--image-protocol off`) or while an image
//! is still being decoded. Images smaller than their pane are scaled up with
//! nearest-neighbour (a 32×32 sample fills the pane, its pixels stay sharp);
//! larger ones are scaled down; both keep their aspect.

pub mod choose;
pub mod probe;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};

use image::imageops::FilterType;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{Paragraph, StatefulWidget, Widget, Wrap};
use ratatui_image::errors::Errors;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::StatefulProtocol;
use ratatui_image::thread::{ResizeRequest, ResizeResponse, ThreadProtocol};
use ratatui_image::{FontSize, Resize, StatefulImage};

use super::app::ImageSlot;

/// The user's choice of image protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolChoice {
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    Halfblocks,
    Off,
}

/// The picker for a choice, and what the log should say about how it was made.
pub struct Resolved {
    pub picker: Option<Picker>,
    pub notes: Vec<String>,
}

/// Cell size assumed when the terminal does not tell (only half-blocks use it
/// then, where it just sets the 1:2 aspect of a cell).
const DEFAULT_CELL: (u16, u16) = (10, 20);

impl ProtocolChoice {
    /// Builds the picker. `auto` and the pixel protocols ask the terminal, so
    /// call this after entering raw mode and before the input thread starts
    /// reading. Never fails: whatever goes wrong ends in half-blocks and a note.
    pub fn resolve(self) -> Resolved {
        let mut notes = Vec::new();
        let forced = match self {
            ProtocolChoice::Off => {
                return Resolved {
                    picker: None,
                    notes,
                }
            }
            ProtocolChoice::Halfblocks => {
                return Resolved {
                    picker: Some(Picker::halfblocks()),
                    notes,
                }
            }
            ProtocolChoice::Auto => None,
            ProtocolChoice::Kitty => Some(ProtocolType::Kitty),
            ProtocolChoice::Sixel => Some(ProtocolType::Sixel),
            ProtocolChoice::Iterm2 => Some(ProtocolType::Iterm2),
        };
        let env = choose::Env::from_process();
        if env.tmux {
            allow_tmux_passthrough();
        }
        let replies = probe::ask(env.tmux).unwrap_or_else(|e| {
            notes.push(format!("cannot ask the terminal about images: {e}"));
            probe::Replies::default()
        });
        let cell = replies.cell.or_else(probe::cell_from_winsize);
        let protocol = match forced {
            Some(p) => {
                if cell.is_none() {
                    notes.push(format!(
                        "the terminal did not tell its cell size; assuming {}×{} pixels",
                        DEFAULT_CELL.0, DEFAULT_CELL.1
                    ));
                }
                p
            }
            None => {
                let d = choose::choose(&replies, &env, cell);
                notes.push(d.why);
                d.protocol
            }
        };
        Resolved {
            picker: Some(picker_for(protocol, cell)),
            notes,
        }
    }
}

/// A picker that draws `protocol` with cells of `cell` pixels.
pub fn picker_for(protocol: ProtocolType, cell: Option<(u16, u16)>) -> Picker {
    if protocol == ProtocolType::Halfblocks {
        return Picker::halfblocks();
    }
    // `from_fontsize` is ratatui-image's only constructor that takes what we
    // probed ourselves (its own query leaves a reader thread behind: see probe).
    #[allow(deprecated)]
    let mut p = Picker::from_fontsize(FontSize::from(cell.unwrap_or(DEFAULT_CELL)));
    p.set_protocol_type(protocol);
    p
}

/// Lets kitty's image escapes through tmux (what ratatui-image does too, but
/// the probe needs it before its wrapped queries go out).
fn allow_tmux_passthrough() {
    let _ = std::process::Command::new("tmux")
        .args(["set", "-p", "allow-passthrough", "on"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

pub fn protocol_name(picker: Option<&Picker>) -> String {
    match picker.map(|p| p.protocol_type()) {
        None => "off".into(),
        Some(ProtocolType::Halfblocks) => "halfblocks".into(),
        Some(ProtocolType::Sixel) => "sixel".into(),
        Some(ProtocolType::Kitty) => "kitty".into(),
        Some(ProtocolType::Iterm2) => "iterm2".into(),
    }
}

struct Shown {
    path: PathBuf,
    state: Option<ThreadProtocol>,
    /// The decoded image's size in pixels (picks scaling up or down).
    dims: Option<(u32, u32)>,
    error: Option<String>,
}

type Encoded = (ImageSlot, Result<ResizeResponse, Errors>);
type Decoded = (StatefulProtocol, (u32, u32));
type Loaded = (ImageSlot, PathBuf, Result<Decoded, String>);

/// The previews on screen, one per slot.
pub struct Images {
    picker: Option<Picker>,
    shown: HashMap<ImageSlot, Shown>,
    /// One encoder thread per slot (started on the slot's first image), so each
    /// answer is known to belong to its slot.
    encoders: HashMap<ImageSlot, Sender<ResizeRequest>>,
    encoded_tx: Sender<Encoded>,
    responses: Receiver<Encoded>,
    /// The loader thread: decodes a file into a protocol's source image.
    loader: Option<Sender<(ImageSlot, PathBuf)>>,
    loaded: Receiver<Loaded>,
}

/// Decodes images for the slots; of several requests for one slot waiting,
/// only the newest is decoded (scrolling through a list skips the rest).
fn spawn_loader(picker: Picker, done: Sender<Loaded>) -> Option<Sender<(ImageSlot, PathBuf)>> {
    let (tx, rx) = mpsc::channel::<(ImageSlot, PathBuf)>();
    let spawned = std::thread::Builder::new()
        .name("image-loader".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut latest: Vec<(ImageSlot, PathBuf)> = Vec::new();
                for (slot, path) in std::iter::once(first).chain(rx.try_iter()) {
                    latest.retain(|(s, _)| *s != slot);
                    latest.push((slot, path));
                }
                for (slot, path) in latest {
                    let decoded = image::ImageReader::open(&path)
                        .and_then(|r| r.with_guessed_format())
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.decode().map_err(|e| e.to_string()))
                        .map(|img| {
                            let dims = (img.width(), img.height());
                            (picker.new_resize_protocol(img), dims)
                        });
                    if done.send((slot, path, decoded)).is_err() {
                        return;
                    }
                }
            }
        });
    spawned.ok().map(|_| tx)
}

/// Starts a slot's encoder thread: resizes and encodes off the UI thread.
fn spawn_encoder(slot: ImageSlot, done: Sender<Encoded>) -> Option<Sender<ResizeRequest>> {
    let (tx, rx) = mpsc::channel::<ResizeRequest>();
    std::thread::Builder::new()
        .name("image-encoder".into())
        .spawn(move || {
            while let Ok(req) = rx.recv() {
                if done.send((slot, req.resize_encode())).is_err() {
                    break;
                }
            }
        })
        .ok()
        .map(|_| tx)
}

/// How an image of `dims` pixels goes into `area` with cells of `font`
/// pixels: smaller ones are scaled up nearest-neighbour (sharp pixels),
/// larger ones scaled down with a smoothing filter; both keep their aspect.
pub fn resize_for(dims: (u32, u32), area: Rect, font: FontSize) -> Resize {
    let w = u32::from(area.width) * u32::from(font.width);
    let h = u32::from(area.height) * u32::from(font.height);
    if dims.0 <= w && dims.1 <= h {
        Resize::Scale(Some(FilterType::Nearest))
    } else {
        Resize::Fit(Some(FilterType::Triangle))
    }
}

impl Images {
    /// Starts the loader thread (when previews are on); encoders start with
    /// their slot's first image.
    pub fn new(picker: Option<Picker>) -> Self {
        let (encoded_tx, responses) = mpsc::channel::<Encoded>();
        let (loaded_tx, loaded) = mpsc::channel::<Loaded>();
        let loader = picker.clone().and_then(|p| spawn_loader(p, loaded_tx));
        Self {
            picker,
            shown: HashMap::new(),
            encoders: HashMap::new(),
            encoded_tx,
            responses,
            loader,
            loaded,
        }
    }

    pub fn off() -> Self {
        Self::new(None)
    }

    pub fn protocol(&self) -> String {
        protocol_name(self.picker.as_ref())
    }

    /// Shows `path` in `slot` (or clears it). The loader thread decodes it;
    /// until then the slot shows the file's name.
    pub fn show(&mut self, slot: ImageSlot, path: Option<PathBuf>) {
        let Some(path) = path else {
            self.shown.remove(&slot);
            return;
        };
        if self.shown.get(&slot).is_some_and(|s| s.path == path) {
            return;
        }
        if let Some(loader) = &self.loader {
            if !self.encoders.contains_key(&slot) {
                if let Some(tx) = spawn_encoder(slot, self.encoded_tx.clone()) {
                    self.encoders.insert(slot, tx);
                }
            }
            if self.encoders.contains_key(&slot) {
                let _ = loader.send((slot, path.clone()));
            }
        }
        self.shown.insert(
            slot,
            Shown {
                path,
                state: None,
                dims: None,
                error: None,
            },
        );
    }

    /// Whether an image is still being decoded or encoded (tests wait on it):
    /// a slot whose picture has not come back from its thread yet.
    pub fn busy(&self) -> bool {
        self.shown.iter().any(|(slot, s)| {
            self.encoders.contains_key(slot)
                && s.error.is_none()
                && s.state
                    .as_ref()
                    .is_none_or(|st| st.protocol_type().is_none())
        })
    }

    /// Takes decoded images and finished encodings from the threads; true if
    /// anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        while let Ok((slot, path, decoded)) = self.loaded.try_recv() {
            // The slot may show another file by now.
            let (Some(s), Some(tx)) = (self.shown.get_mut(&slot), self.encoders.get(&slot)) else {
                continue;
            };
            if s.path != path {
                continue;
            }
            match decoded {
                Ok((protocol, dims)) => {
                    s.state = Some(ThreadProtocol::new(tx.clone(), Some(protocol)));
                    s.dims = Some(dims);
                }
                Err(e) => s.error = Some(e),
            }
            changed = true;
        }
        while let Ok((slot, res)) = self.responses.try_recv() {
            match (res, self.shown.get_mut(&slot)) {
                (
                    Ok(resp),
                    Some(Shown {
                        state: Some(state), ..
                    }),
                ) => changed |= state.update_resized_protocol(resp),
                (Err(e), Some(s)) => {
                    s.error = Some(e.to_string());
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    /// Draws a slot into `area` (placeholder text when previews are off).
    pub fn render(&mut self, slot: ImageSlot, area: Rect, buf: &mut Buffer, style: Style) {
        let font = self.picker.as_ref().map(|p| p.font_size());
        let Some(s) = self.shown.get_mut(&slot) else {
            Paragraph::new("(no image)").style(style).render(area, buf);
            return;
        };
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match (&mut s.state, &s.error, font) {
            (_, Some(e), _) => Paragraph::new(format!("{name}: {e}"))
                .style(style)
                .wrap(Wrap { trim: true })
                .render(area, buf),
            (Some(state), None, Some(font)) => {
                let resize = resize_for(s.dims.unwrap_or((u32::MAX, u32::MAX)), area, font);
                StatefulImage::default()
                    .resize(resize)
                    .render(area, buf, state)
            }
            _ => Paragraph::new(format!("[{name}]"))
                .style(style)
                .wrap(Wrap { trim: true })
                .render(area, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_scale_up_large_ones_down() {
        let font = FontSize::new(10, 20);
        let pane = Rect::new(0, 0, 100, 30); // 1000×600 pixels
        assert!(matches!(
            resize_for((32, 32), pane, font),
            Resize::Scale(Some(FilterType::Nearest))
        ));
        assert!(matches!(
            resize_for((1024, 1024), pane, font),
            Resize::Fit(Some(FilterType::Triangle))
        ));
    }
}
