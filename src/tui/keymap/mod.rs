//! Keymap in TOML with a description per binding. The help popup, the bottom
//! command bar, the palette and every popup's key hints are generated from it,
//! so they never drift from what the keys do.
//!
//! Files layer: the built-in map (`assets/keymap.toml`), then
//! `~/.config/dreamartist/keymap.toml`, then the workspace's `keymap.toml`.
//! Each file changes single bindings of the map below it (the keys, the
//! description, or both) and leaves the rest alone; a key a file binds is taken
//! away from the other actions of the same section below it, so a rebinding
//! always wins.

mod key;
mod layers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ratatui::crossterm::event::KeyEvent;
use serde::Deserialize;

pub use key::KeySpec;
pub use layers::{
    Action, CompareKey, ConfirmKey, ConfirmQuitKey, ErrorKey, EvalKey, FormKey, FullscreenKey,
    HelpKey, LayerAction, PaletteKey, RunsKey,
};

pub const DEFAULT_KEYMAP: &str = include_str!("../../../assets/keymap.toml");

/// Why a keymap file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeymapError {
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid keymap", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<KeymapError>,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("[{section}]: unknown action `{id}` (known: {known})")]
    UnknownAction {
        section: &'static str,
        id: String,
        known: String,
    },
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    #[error("[{section}] {id}: a binding needs both `keys` and `desc`")]
    Incomplete { section: &'static str, id: String },
}

/// One action's keys and description.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding<A> {
    pub action: A,
    pub keys: Vec<KeySpec>,
    pub desc: String,
}

/// The bindings of one layer (the main screen or one popup), in the order of
/// the layer's actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer<A> {
    pub bindings: Vec<Binding<A>>,
}

impl<A: LayerAction> Default for Layer<A> {
    fn default() -> Self {
        Self {
            bindings: Vec::new(),
        }
    }
}

impl<A: LayerAction> Layer<A> {
    pub fn action_for(&self, ev: &KeyEvent) -> Option<A> {
        self.bindings
            .iter()
            .find(|b| b.keys.iter().any(|k| k.matches(ev)))
            .map(|b| b.action)
    }

    fn binding(&self, action: A) -> Option<&Binding<A>> {
        self.bindings.iter().find(|b| b.action == action)
    }

    /// Every key of an action, `/`-separated (help, palette, command bar).
    pub fn keys_label(&self, action: A) -> String {
        self.labels(action).join("/")
    }

    /// An action's keys, main key first (a hint may show only the first few).
    pub fn labels(&self, action: A) -> Vec<String> {
        self.binding(action)
            .map(|b| b.keys.iter().map(KeySpec::label).collect())
            .unwrap_or_default()
    }

    /// An action's main (first) key, for hints; empty when unbound.
    pub fn key(&self, action: A) -> String {
        self.labels(action).into_iter().next().unwrap_or_default()
    }

    pub fn desc(&self, action: A) -> &str {
        self.binding(action).map_or("", |b| b.desc.as_str())
    }

    /// Lays a file's section over this layer: each entry replaces the keys
    /// and/or the description of one binding; the keys it names leave the
    /// bindings this section does not mention.
    fn overlay(&mut self, entries: BTreeMap<String, Entry>) -> Result<(), KeymapError> {
        let mut claimed: Vec<(A, Vec<KeySpec>)> = Vec::new();
        for (id, entry) in entries {
            let action = A::all()
                .iter()
                .copied()
                .find(|a| a.id() == id)
                .ok_or_else(|| KeymapError::UnknownAction {
                    section: A::SECTION,
                    id: id.clone(),
                    known: A::all()
                        .iter()
                        .map(|a| a.id())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let keys: Option<Vec<KeySpec>> = entry
                .keys
                .map(|ks| {
                    ks.iter()
                        .map(|k| KeySpec::parse(k))
                        .collect::<Result<_, _>>()
                })
                .transpose()?;
            if let Some(keys) = &keys {
                claimed.push((action, keys.clone()));
            }
            match (self.bindings.iter_mut().find(|b| b.action == action), keys) {
                (Some(b), keys) => {
                    if let Some(keys) = keys {
                        b.keys = keys;
                    }
                    if let Some(desc) = entry.desc {
                        b.desc = desc;
                    }
                }
                (None, Some(keys)) => match entry.desc {
                    Some(desc) => self.bindings.push(Binding { action, keys, desc }),
                    None => return Err(incomplete::<A>(id)),
                },
                (None, None) => return Err(incomplete::<A>(id)),
            }
        }
        for b in &mut self.bindings {
            if claimed.iter().any(|(a, _)| *a == b.action) {
                continue;
            }
            b.keys
                .retain(|k| !claimed.iter().any(|(_, keys)| keys.contains(k)));
        }
        self.bindings
            .sort_by_key(|b| A::all().iter().position(|a| *a == b.action));
        Ok(())
    }

    /// The layer as help shows it: keys and description per binding.
    fn rows(&self) -> Vec<(String, String)> {
        self.bindings
            .iter()
            .map(|b| (self.keys_label(b.action), b.desc.clone()))
            .collect()
    }
}

fn incomplete<A: LayerAction>(id: String) -> KeymapError {
    KeymapError::Incomplete {
        section: A::SECTION,
        id,
    }
}

/// One entry of a keymap file. Both fields are needed in the built-in map; a
/// user's or workspace's file may change either alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    keys: Option<Vec<String>>,
    desc: Option<String>,
}

type Section = BTreeMap<String, Entry>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeymapFile {
    #[serde(default)]
    actions: Section,
    #[serde(default)]
    help: Section,
    #[serde(default)]
    palette: Section,
    #[serde(default)]
    form: Section,
    #[serde(default)]
    confirm_quit: Section,
    #[serde(default)]
    eval: Section,
    #[serde(default)]
    error: Section,
    #[serde(default)]
    fullscreen: Section,
    #[serde(default)]
    runs: Section,
    #[serde(default)]
    compare: Section,
    #[serde(default)]
    confirm: Section,
}

/// A layer as the help screen lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct HelpSection {
    pub title: &'static str,
    /// Keys label and description per binding.
    pub rows: Vec<(String, String)>,
}

/// Resolved bindings, one layer per screen and popup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keymap {
    pub main: Layer<Action>,
    pub help: Layer<HelpKey>,
    pub palette: Layer<PaletteKey>,
    pub form: Layer<FormKey>,
    pub confirm_quit: Layer<ConfirmQuitKey>,
    pub eval: Layer<EvalKey>,
    pub error: Layer<ErrorKey>,
    pub fullscreen: Layer<FullscreenKey>,
    pub runs: Layer<RunsKey>,
    pub compare: Layer<CompareKey>,
    pub confirm: Layer<ConfirmKey>,
}

/// The keymap files laid over the built-in map, lowest first: the user's
/// (`~/.config/dreamartist/keymap.toml`), then the workspace's.
pub fn layer_paths(home: Option<&Path>, workspace_root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(home) = home {
        v.push(home.join(".config/dreamartist/keymap.toml"));
    }
    v.push(workspace_root.join("keymap.toml"));
    v
}

impl Keymap {
    /// The built-in map.
    pub fn default_map() -> Self {
        // The embedded default is checked by a unit test; fall back to empty on the impossible.
        Self::from_toml(DEFAULT_KEYMAP).unwrap_or_default()
    }

    /// A complete map from one file (every binding needs keys and a description).
    pub fn from_toml(text: &str) -> Result<Self, KeymapError> {
        let mut map = Self::default();
        map.overlay_toml(text)?;
        Ok(map)
    }

    /// Lays a file's bindings over this map, binding by binding.
    pub fn overlay_toml(&mut self, text: &str) -> Result<(), KeymapError> {
        let file: KeymapFile =
            toml::from_str(text).map_err(|e| KeymapError::Syntax(e.to_string().trim().into()))?;
        self.main.overlay(file.actions)?;
        self.help.overlay(file.help)?;
        self.palette.overlay(file.palette)?;
        self.form.overlay(file.form)?;
        self.confirm_quit.overlay(file.confirm_quit)?;
        self.eval.overlay(file.eval)?;
        self.error.overlay(file.error)?;
        self.fullscreen.overlay(file.fullscreen)?;
        self.runs.overlay(file.runs)?;
        self.compare.overlay(file.compare)?;
        self.confirm.overlay(file.confirm)?;
        Ok(())
    }

    /// The built-in map with each existing file of `paths` laid over it in order.
    pub fn load_layers(paths: &[PathBuf]) -> Result<Self, KeymapError> {
        let mut map = Self::default_map();
        for path in paths.iter().filter(|p| p.is_file()) {
            let text = std::fs::read_to_string(path).map_err(|source| KeymapError::Read {
                path: path.clone(),
                source,
            })?;
            map.overlay_toml(&text).map_err(|e| KeymapError::Invalid {
                path: path.clone(),
                source: Box::new(e),
            })?;
        }
        Ok(map)
    }

    /// The main screen's action for a key.
    pub fn action_for(&self, ev: &KeyEvent) -> Option<Action> {
        self.main.action_for(ev)
    }

    pub fn keys_label(&self, action: Action) -> String {
        self.main.keys_label(action)
    }

    pub fn desc(&self, action: Action) -> &str {
        self.main.desc(action)
    }

    /// Every layer for the help screen, the main screen first.
    pub fn help_sections(&self) -> Vec<HelpSection> {
        fn section<A: LayerAction>(layer: &Layer<A>) -> HelpSection {
            HelpSection {
                title: A::TITLE,
                rows: layer.rows(),
            }
        }
        vec![
            section(&self.main),
            section(&self.help),
            section(&self.palette),
            section(&self.form),
            section(&self.confirm_quit),
            section(&self.eval),
            section(&self.error),
            section(&self.fullscreen),
            section(&self.runs),
            section(&self.compare),
            section(&self.confirm),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::{KeyCode, KeyModifiers};

    fn ev(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn complete<A: LayerAction + std::fmt::Debug>(layer: &Layer<A>) {
        for a in A::all() {
            assert!(
                layer
                    .bindings
                    .iter()
                    .any(|b| b.action == *a && !b.keys.is_empty() && !b.desc.is_empty()),
                "[{}] {a:?}",
                A::SECTION
            );
        }
    }

    #[test]
    fn default_keymap_covers_every_action_of_every_layer() {
        let map = Keymap::from_toml(DEFAULT_KEYMAP).unwrap();
        complete(&map.main);
        complete(&map.help);
        complete(&map.palette);
        complete(&map.form);
        complete(&map.confirm_quit);
        complete(&map.eval);
        complete(&map.error);
        complete(&map.fullscreen);
        complete(&map.runs);
        complete(&map.compare);
        complete(&map.confirm);
        assert_eq!(
            map.runs.action_for(&ev(KeyCode::Char(' '))),
            Some(RunsKey::Mark)
        );
        let ctrl_p = KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL);
        assert_eq!(map.action_for(&ctrl_p), Some(Action::Palette));
        let shift_s = KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT);
        assert_eq!(map.action_for(&shift_s), Some(Action::SaveNow));
        assert_eq!(map.action_for(&ev(KeyCode::Char('s'))), Some(Action::Stop));
        assert_eq!(
            map.form.action_for(&ev(KeyCode::Backspace)),
            Some(FormKey::Delete)
        );
        assert_eq!(
            map.confirm_quit.action_for(&ev(KeyCode::Esc)),
            Some(ConfirmQuitKey::Cancel)
        );
        assert_eq!(map.help_sections().len(), 11);
    }

    #[test]
    fn files_layer_binding_by_binding() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let ws = tmp.path().join("ws");
        let paths = layer_paths(Some(&home), &ws);
        assert_eq!(
            paths,
            vec![
                home.join(".config/dreamartist/keymap.toml"),
                ws.join("keymap.toml")
            ]
        );
        // No files: the built-in map.
        assert_eq!(Keymap::load_layers(&paths).unwrap(), Keymap::default_map());
        std::fs::create_dir_all(paths[0].parent().unwrap()).unwrap();
        std::fs::create_dir_all(&ws).unwrap();
        // The user's file rebinds train and describes stop; the workspace's
        // rebinds the palette's run key and re-describes train only.
        std::fs::write(
            &paths[0],
            "[actions]\ntrain = { keys = [\"T\"], desc = \"Train!\" }\nstop = { desc = \"Halt\" }\n",
        )
        .unwrap();
        std::fs::write(
            &paths[1],
            "[actions]\ntrain = { desc = \"Train here\" }\n[palette]\nrun = { keys = [\"Tab\"] }\n",
        )
        .unwrap();
        let map = Keymap::load_layers(&paths).unwrap();
        assert_eq!(map.keys_label(Action::Train), "T", "the user's keys stay");
        assert_eq!(
            map.desc(Action::Train),
            "Train here",
            "the workspace's desc wins"
        );
        assert_eq!(map.keys_label(Action::Stop), "s");
        assert_eq!(map.desc(Action::Stop), "Halt");
        assert_eq!(
            map.keys_label(Action::Help),
            "?/F1",
            "untouched bindings stay"
        );
        assert_eq!(map.palette.keys_label(PaletteKey::Run), "Tab");
        assert_eq!(
            map.palette.desc(PaletteKey::Run),
            Keymap::default_map().palette.desc(PaletteKey::Run)
        );
        assert_eq!(map.form, Keymap::default_map().form);
    }

    #[test]
    fn a_rebound_key_leaves_the_other_actions() {
        let mut map = Keymap::default_map();
        map.overlay_toml("[actions]\nexport = { keys = [\"t\"] }\n")
            .unwrap();
        assert_eq!(
            map.action_for(&ev(KeyCode::Char('t'))),
            Some(Action::Export)
        );
        assert_eq!(map.keys_label(Action::Train), "");
        // The same key in another layer is untouched.
        map.overlay_toml("[confirm_quit]\nkeep = { keys = [\"s\"] }\n")
            .unwrap();
        assert_eq!(map.action_for(&ev(KeyCode::Char('s'))), Some(Action::Stop));
        assert_eq!(
            map.confirm_quit.action_for(&ev(KeyCode::Char('s'))),
            Some(ConfirmQuitKey::Keep)
        );
        assert_eq!(map.confirm_quit.keys_label(ConfirmQuitKey::Stop), "");
    }

    #[test]
    fn bad_files_are_refused_with_their_path() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("keymap.toml");
        for (text, says) in [
            (
                "[actions]\nfly = { keys = [\"f\"], desc = \"x\" }\n",
                "unknown action `fly`",
            ),
            ("[popups]\n", "popups"),
            (
                "[help]\nclose = { keys = [\"Ctrl-Nope\"] }\n",
                "unknown key `Ctrl-Nope`",
            ),
            ("[form]\nsubmit = { key = [\"x\"] }\n", "key"),
        ] {
            std::fs::write(&p, text).unwrap();
            let err = Keymap::load_layers(std::slice::from_ref(&p)).unwrap_err();
            let full = format!("{:#}", anyhow::Error::from(err));
            assert!(
                full.contains("invalid keymap") && full.contains(says),
                "{text}: {full}"
            );
        }
        assert!(KeySpec::parse("Ctrl-Nope").is_err());
        // A binding new to the map needs both fields.
        assert!(matches!(
            Keymap::from_toml("[actions]\ntrain = { keys = [\"t\"] }\n"),
            Err(KeymapError::Incomplete { .. })
        ));
    }
}
