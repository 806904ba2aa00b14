//! In-pane image previews with ratatui-image: protocol detection by querying
//! the terminal (kitty incl. tmux passthrough, sixel, iTerm2, half-blocks
//! fallback), decoding on a loader thread, resizing and encoding on one
//! encoder thread per slot (the UI thread never touches pixels), and a text
//! placeholder when previews are off (`--image-protocol off`, and in snapshot
//! tests) or while an image is still being decoded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{Paragraph, StatefulWidget, Widget, Wrap};
use ratatui_image::errors::Errors;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::StatefulProtocol;
use ratatui_image::thread::{ResizeRequest, ResizeResponse, ThreadProtocol};
use ratatui_image::{Resize, StatefulImage};

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

impl ProtocolChoice {
    /// Builds the picker. Querying talks to the terminal, so call this after
    /// entering raw mode and before the input thread starts reading.
    pub fn picker(self) -> Option<Picker> {
        let queried = || Picker::from_query_stdio().unwrap_or_else(|_| Picker::halfblocks());
        match self {
            ProtocolChoice::Off => None,
            ProtocolChoice::Halfblocks => Some(Picker::halfblocks()),
            ProtocolChoice::Auto => Some(queried()),
            forced => {
                let mut p = queried();
                p.set_protocol_type(match forced {
                    ProtocolChoice::Kitty => ProtocolType::Kitty,
                    ProtocolChoice::Sixel => ProtocolType::Sixel,
                    _ => ProtocolType::Iterm2,
                });
                Some(p)
            }
        }
    }
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
    error: Option<String>,
}

type Encoded = (ImageSlot, Result<ResizeResponse, Errors>);
type Loaded = (ImageSlot, PathBuf, Result<StatefulProtocol, String>);

/// The previews on screen, one per slot.
pub struct Images {
    picker: Option<Picker>,
    shown: HashMap<ImageSlot, Shown>,
    /// One encoder thread per slot, so each answer is known to belong to its slot.
    encoders: HashMap<ImageSlot, Sender<ResizeRequest>>,
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
                        .map(|img| picker.new_resize_protocol(img));
                    if done.send((slot, path, decoded)).is_err() {
                        return;
                    }
                }
            }
        });
    spawned.ok().map(|_| tx)
}

impl Images {
    /// Starts the loader and encoder threads (when previews are on).
    pub fn new(picker: Option<Picker>) -> Self {
        let (done_tx, responses) = mpsc::channel::<Encoded>();
        let (loaded_tx, loaded) = mpsc::channel::<Loaded>();
        let mut encoders = HashMap::new();
        let loader = picker.clone().and_then(|p| spawn_loader(p, loaded_tx));
        if picker.is_some() {
            for slot in [
                ImageSlot::Reference,
                ImageSlot::Sample,
                ImageSlot::SampleReference,
            ] {
                let (tx, rx) = mpsc::channel::<ResizeRequest>();
                let done = done_tx.clone();
                let spawned = std::thread::Builder::new()
                    .name("image-encoder".into())
                    .spawn(move || {
                        while let Ok(req) = rx.recv() {
                            if done.send((slot, req.resize_encode())).is_err() {
                                break;
                            }
                        }
                    });
                if spawned.is_ok() {
                    encoders.insert(slot, tx);
                }
            }
        }
        Self {
            picker,
            shown: HashMap::new(),
            encoders,
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
        if self.encoders.contains_key(&slot) {
            if let Some(loader) = &self.loader {
                let _ = loader.send((slot, path.clone()));
            }
        }
        self.shown.insert(
            slot,
            Shown {
                path,
                state: None,
                error: None,
            },
        );
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
                Ok(protocol) => s.state = Some(ThreadProtocol::new(tx.clone(), Some(protocol))),
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
        let Some(s) = self.shown.get_mut(&slot) else {
            Paragraph::new("(no image)").style(style).render(area, buf);
            return;
        };
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match (&mut s.state, &s.error) {
            (_, Some(e)) => Paragraph::new(format!("{name}: {e}"))
                .style(style)
                .wrap(Wrap { trim: true })
                .render(area, buf),
            (Some(state), None) => StatefulImage::default()
                .resize(Resize::Fit(None))
                .render(area, buf, state),
            (None, None) => Paragraph::new(format!("[{name}]"))
                .style(style)
                .render(area, buf),
        }
    }
}
