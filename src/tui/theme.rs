//! Colour themes from `themes/*.toml` (built-in copies of the shipped ones, a
//! user's own in `<workspace>/themes/`), and `NO_COLOR` support.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

const BUILTIN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "catppuccin-mocha",
        include_str!("../../themes/catppuccin-mocha.toml"),
    ),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    background: String,
    foreground: String,
    muted: String,
    accent: String,
    highlight_bg: String,
    border: String,
    border_focused: String,
    ok: String,
    warning: String,
    error: String,
    loss_raw: String,
    loss_smooth: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub bg: Color,
    pub fg: Color,
    pub muted: Color,
    pub accent: Color,
    pub highlight_bg: Color,
    pub border: Color,
    pub border_focused: Color,
    pub ok: Color,
    pub warning: Color,
    pub error: Color,
    pub loss_raw: Color,
    pub loss_smooth: Color,
    /// `NO_COLOR`: styles carry only modifiers (bold, reverse).
    pub monochrome: bool,
}

fn color(s: &str) -> Result<Color> {
    if s == "reset" {
        return Ok(Color::Reset);
    }
    s.parse::<Color>()
        .map_err(|_| anyhow!("unknown colour `{s}` (use a name or #rrggbb)"))
}

impl Theme {
    fn from_file(f: ThemeFile) -> Result<Self> {
        Ok(Self {
            name: f.name,
            bg: color(&f.background)?,
            fg: color(&f.foreground)?,
            muted: color(&f.muted)?,
            accent: color(&f.accent)?,
            highlight_bg: color(&f.highlight_bg)?,
            border: color(&f.border)?,
            border_focused: color(&f.border_focused)?,
            ok: color(&f.ok)?,
            warning: color(&f.warning)?,
            error: color(&f.error)?,
            loss_raw: color(&f.loss_raw)?,
            loss_smooth: color(&f.loss_smooth)?,
            monochrome: false,
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        let f: ThemeFile =
            toml::from_str(text).map_err(|e| anyhow!(e.to_string().trim().to_string()))?;
        Self::from_file(f)
    }

    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A theme by name: `<workspace>/themes/<name>.toml` first, then the built-ins.
    pub fn load(name: &str, workspace: &Path) -> Result<Self> {
        let user = workspace.join("themes").join(format!("{name}.toml"));
        if user.is_file() {
            let text = std::fs::read_to_string(&user)
                .with_context(|| format!("{}: cannot read", user.display()))?;
            return Self::parse(&text)
                .with_context(|| format!("{}: invalid theme", user.display()));
        }
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Self::parse(text),
            None => bail!(
                "unknown theme `{name}` (built in: {}; or put {name}.toml in {})",
                Self::builtin_names().join(", "),
                workspace.join("themes").display()
            ),
        }
    }

    /// The workbench's theme: none at all when `NO_COLOR` is set to anything
    /// non-empty (<https://no-color.org>; it wins over `--theme` and the
    /// workspace's `theme`), else `--theme`, else the workspace's, else dark.
    pub fn resolve(
        cli: Option<&str>,
        ws: &crate::workspace::Workspace,
        no_color: Option<&std::ffi::OsStr>,
    ) -> Result<Self> {
        if no_color.is_some_and(|v| !v.is_empty()) {
            return Ok(Self::plain());
        }
        match cli.or(ws.config.theme.as_deref()) {
            None => Ok(Self::dark()),
            Some(n) => Self::load(n, &ws.root),
        }
    }

    pub fn dark() -> Self {
        // The built-in file is verified by a unit test.
        Self::parse(BUILTIN[0].1).unwrap_or(Self::plain())
    }

    /// No colours at all (NO_COLOR, or a theme that failed to load).
    pub fn plain() -> Self {
        Self {
            name: "no-color".into(),
            bg: Color::Reset,
            fg: Color::Reset,
            muted: Color::Reset,
            accent: Color::Reset,
            highlight_bg: Color::Reset,
            border: Color::Reset,
            border_focused: Color::Reset,
            ok: Color::Reset,
            warning: Color::Reset,
            error: Color::Reset,
            loss_raw: Color::Reset,
            loss_smooth: Color::Reset,
            monochrome: true,
        }
    }

    fn fg_style(&self, c: Color) -> Style {
        if self.monochrome {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }

    pub fn text(&self) -> Style {
        if self.monochrome {
            Style::default()
        } else {
            Style::default().fg(self.fg).bg(self.bg)
        }
    }
    pub fn muted(&self) -> Style {
        self.fg_style(self.muted)
    }
    pub fn accent(&self) -> Style {
        self.fg_style(self.accent).add_modifier(Modifier::BOLD)
    }
    pub fn ok(&self) -> Style {
        self.fg_style(self.ok)
    }
    pub fn warning(&self) -> Style {
        self.fg_style(self.warning)
    }
    pub fn error(&self) -> Style {
        self.fg_style(self.error).add_modifier(Modifier::BOLD)
    }
    pub fn border(&self, focused: bool) -> Style {
        match (self.monochrome, focused) {
            (true, true) => Style::default().add_modifier(Modifier::BOLD),
            (true, false) => Style::default(),
            (false, true) => Style::default().fg(self.border_focused),
            (false, false) => Style::default().fg(self.border),
        }
    }
    pub fn selected(&self) -> Style {
        if self.monochrome {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
                .bg(self.highlight_bg)
                .add_modifier(Modifier::BOLD)
        }
    }
    /// The `i`th compared run's colour (the theme's chart and status colours in turn).
    pub fn run_series(&self, i: usize) -> Style {
        let colours = [self.loss_smooth, self.accent, self.warning, self.ok];
        self.fg_style(colours[i % colours.len()])
    }

    pub fn series(&self, smooth: bool) -> Style {
        self.fg_style(if smooth {
            self.loss_smooth
        } else {
            self.loss_raw
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_themes_parse_and_unknown_ones_are_refused() {
        for name in Theme::builtin_names() {
            let t = Theme::load(name, Path::new("/nonexistent")).unwrap();
            assert_eq!(t.name, name);
        }
        let err = Theme::load("neon", Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("neon") && err.contains("dark"), "{err}");
        assert!(Theme::parse("name = \"x\"").is_err());
        assert!(Theme::plain().monochrome);
    }
}
