//! Keymap in TOML with a description per binding. The help popup, the bottom
//! command bar and the palette are generated from it, so they never drift from
//! what the keys do.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Deserialize;

/// Everything the workbench can do from the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Help,
    Palette,
    Quit,
    Suspend,
    NextPane,
    PrevPane,
    Up,
    Down,
    Left,
    Right,
    AddReference,
    NewConcept,
    Train,
    Resume,
    Pause,
    Stop,
    SaveNow,
    Generate,
    Reroll,
    EditPrompt,
    NewPrompt,
    ToggleWatch,
    Export,
    Fullscreen,
    History,
    LogLevel,
    Eval,
}

impl Action {
    pub const ALL: [Action; 27] = [
        Action::Help,
        Action::Palette,
        Action::Quit,
        Action::Suspend,
        Action::NextPane,
        Action::PrevPane,
        Action::Up,
        Action::Down,
        Action::Left,
        Action::Right,
        Action::AddReference,
        Action::NewConcept,
        Action::Train,
        Action::Resume,
        Action::Pause,
        Action::Stop,
        Action::SaveNow,
        Action::Generate,
        Action::Reroll,
        Action::EditPrompt,
        Action::NewPrompt,
        Action::ToggleWatch,
        Action::Export,
        Action::Fullscreen,
        Action::History,
        Action::LogLevel,
        Action::Eval,
    ];

    pub fn id(&self) -> &'static str {
        match self {
            Action::Help => "help",
            Action::Palette => "palette",
            Action::Quit => "quit",
            Action::Suspend => "suspend",
            Action::NextPane => "next_pane",
            Action::PrevPane => "prev_pane",
            Action::Up => "up",
            Action::Down => "down",
            Action::Left => "left",
            Action::Right => "right",
            Action::AddReference => "add_reference",
            Action::NewConcept => "new_concept",
            Action::Train => "train",
            Action::Resume => "resume",
            Action::Pause => "pause",
            Action::Stop => "stop",
            Action::SaveNow => "save_now",
            Action::Generate => "generate",
            Action::Reroll => "reroll",
            Action::EditPrompt => "edit_prompt",
            Action::NewPrompt => "new_prompt",
            Action::ToggleWatch => "toggle_watch",
            Action::Export => "export",
            Action::Fullscreen => "fullscreen",
            Action::History => "history",
            Action::LogLevel => "log_level",
            Action::Eval => "eval",
        }
    }

    fn from_id(id: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.id() == id)
    }

    /// Shown in the bottom command bar (the most used ones, in this order).
    pub const BAR: [Action; 9] = [
        Action::Help,
        Action::Palette,
        Action::Train,
        Action::Pause,
        Action::Stop,
        Action::Generate,
        Action::EditPrompt,
        Action::NewConcept,
        Action::Quit,
    ];
}

/// A key with modifiers, as written in the keymap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub code: KeyCode,
    pub ctrl: bool,
    pub alt: bool,
}

impl KeySpec {
    pub fn parse(s: &str) -> Result<Self> {
        let mut rest = s;
        let (mut ctrl, mut alt) = (false, false);
        loop {
            if let Some(r) = rest.strip_prefix("Ctrl-") {
                ctrl = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("Alt-") {
                alt = true;
                rest = r;
            } else {
                break;
            }
        }
        let code = match rest {
            "Tab" => KeyCode::Tab,
            "BackTab" => KeyCode::BackTab,
            "Enter" => KeyCode::Enter,
            "Esc" => KeyCode::Esc,
            "Up" => KeyCode::Up,
            "Down" => KeyCode::Down,
            "Left" => KeyCode::Left,
            "Right" => KeyCode::Right,
            "PageUp" => KeyCode::PageUp,
            "PageDown" => KeyCode::PageDown,
            "Home" => KeyCode::Home,
            "End" => KeyCode::End,
            "Space" => KeyCode::Char(' '),
            f if f.starts_with('F') && f.len() > 1 => {
                let n: u8 = f[1..].parse().map_err(|_| anyhow!("unknown key `{s}`"))?;
                KeyCode::F(n)
            }
            c if c.chars().count() == 1 => KeyCode::Char(c.chars().next().unwrap_or(' ')),
            _ => bail!("unknown key `{s}`"),
        };
        Ok(Self { code, ctrl, alt })
    }

    pub fn matches(&self, ev: &KeyEvent) -> bool {
        let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
        let alt = ev.modifiers.contains(KeyModifiers::ALT);
        let code = match (ev.code, self.code) {
            // Shifted letters arrive as the upper-case char; compare case-sensitively.
            (KeyCode::Char(a), KeyCode::Char(b)) if ctrl => a.eq_ignore_ascii_case(&b),
            (a, b) => a == b,
        };
        code && ctrl == self.ctrl && alt == self.alt
    }

    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::F(n) => format!("F{n}"),
            KeyCode::BackTab => "S-Tab".into(),
            other => format!("{other:?}"),
        };
        match (self.ctrl, self.alt) {
            (true, _) => format!("C-{base}"),
            (_, true) => format!("M-{base}"),
            _ => base,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Binding {
    keys: Vec<String>,
    desc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeymapFile {
    actions: BTreeMap<String, Binding>,
}

/// Resolved bindings: action → keys + description.
#[derive(Debug, Clone)]
pub struct Keymap {
    pub bindings: Vec<(Action, Vec<KeySpec>, String)>,
}

pub const DEFAULT_KEYMAP: &str = include_str!("../../assets/keymap.toml");

impl Keymap {
    pub fn default_map() -> Self {
        // The embedded default is checked by a unit test; fall back to empty on the impossible.
        Self::from_toml(DEFAULT_KEYMAP).unwrap_or(Keymap {
            bindings: Vec::new(),
        })
    }

    pub fn from_toml(text: &str) -> Result<Self> {
        let file: KeymapFile =
            toml::from_str(text).map_err(|e| anyhow!(e.to_string().trim().to_string()))?;
        let mut bindings = Vec::new();
        for (id, b) in file.actions {
            let action = Action::from_id(&id).ok_or_else(|| {
                anyhow!(
                    "unknown action `{id}` (known: {})",
                    Action::ALL
                        .iter()
                        .map(|a| a.id())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let keys = b
                .keys
                .iter()
                .map(|k| KeySpec::parse(k))
                .collect::<Result<Vec<_>>>()?;
            bindings.push((action, keys, b.desc));
        }
        bindings.sort_by_key(|(a, _, _)| Action::ALL.iter().position(|x| x == a));
        Ok(Self { bindings })
    }

    /// The default map with a user file's entries laid over it.
    pub fn load(user: Option<&Path>) -> Result<Self> {
        let mut map = Self::default_map();
        if let Some(p) = user.filter(|p| p.is_file()) {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            let over = Self::from_toml(&text)
                .with_context(|| format!("{}: invalid keymap", p.display()))?;
            for (a, keys, desc) in over.bindings {
                map.bindings.retain(|(x, _, _)| *x != a);
                map.bindings.push((a, keys, desc));
            }
            map.bindings
                .sort_by_key(|(a, _, _)| Action::ALL.iter().position(|x| x == a));
        }
        Ok(map)
    }

    pub fn action_for(&self, ev: &KeyEvent) -> Option<Action> {
        self.bindings
            .iter()
            .find(|(_, keys, _)| keys.iter().any(|k| k.matches(ev)))
            .map(|(a, _, _)| *a)
    }

    pub fn keys_label(&self, action: Action) -> String {
        self.bindings
            .iter()
            .find(|(a, _, _)| *a == action)
            .map(|(_, keys, _)| keys.iter().map(|k| k.label()).collect::<Vec<_>>().join("/"))
            .unwrap_or_default()
    }

    pub fn desc(&self, action: Action) -> &str {
        self.bindings
            .iter()
            .find(|(a, _, _)| *a == action)
            .map(|(_, _, d)| d.as_str())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keymap_covers_every_action() {
        let map = Keymap::from_toml(DEFAULT_KEYMAP).unwrap();
        for a in Action::ALL {
            assert!(
                map.bindings
                    .iter()
                    .any(|(x, k, d)| *x == a && !k.is_empty() && !d.is_empty()),
                "{a:?}"
            );
        }
        let ev = KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL);
        assert_eq!(map.action_for(&ev), Some(Action::Palette));
        let ev = KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT);
        assert_eq!(map.action_for(&ev), Some(Action::SaveNow));
        let ev = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE);
        assert_eq!(map.action_for(&ev), Some(Action::Stop));
    }

    #[test]
    fn user_overrides_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("keymap.toml");
        std::fs::write(
            &p,
            "[actions]\ntrain = { keys = [\"T\"], desc = \"Train!\" }\n",
        )
        .unwrap();
        let map = Keymap::load(Some(&p)).unwrap();
        assert_eq!(map.keys_label(Action::Train), "T");
        assert_eq!(map.desc(Action::Train), "Train!");
        std::fs::write(&p, "[actions]\nfly = { keys = [\"f\"], desc = \"x\" }\n").unwrap();
        assert!(Keymap::load(Some(&p))
            .unwrap_err()
            .to_string()
            .contains("keymap"));
        assert!(KeySpec::parse("Ctrl-Nope").is_err());
    }
}
