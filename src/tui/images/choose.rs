//! Which image protocol `--image-protocol auto` uses, from the terminal's
//! replies ([`super::probe`]) and the environment. A pure function, so every
//! terminal's case is a unit test. The rule: a protocol is chosen only when it
//! is known to draw here; anything uncertain gets half-blocks, with a reason
//! for the log.

use ratatui_image::picker::ProtocolType;

use super::probe::Replies;

/// Kitty draws Unicode placeholders (the only kitty mode ratatui-image has)
/// from this version on.
const KITTY_PLACEHOLDERS: (u32, u32) = (0, 28);

/// What the environment says about where we run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// Inside tmux (`$TMUX`, or `TERM`/`TERM_PROGRAM` naming it).
    pub tmux: bool,
    /// ratatui-image will wrap its output for tmux's passthrough (it decides
    /// that from `TERM` starting with `tmux` or `TERM_PROGRAM=tmux`).
    pub tmux_wraps: bool,
    /// WezTerm or Konsole: they answer kitty queries but draw no placeholders,
    /// and Konsole's sixel is broken (ratatui-image's own exclusions).
    pub no_kitty: bool,
    pub no_sixel: bool,
    /// `TERM_PROGRAM`/`LC_TERMINAL` names a terminal with the iTerm2 protocol.
    pub iterm2: bool,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let term = var("TERM").unwrap_or_default();
        let program = var("TERM_PROGRAM").unwrap_or_default();
        let tmux_wraps = term.starts_with("tmux") || program == "tmux";
        let wezterm = var("WEZTERM_EXECUTABLE").is_some();
        let konsole = var("KONSOLE_VERSION").is_some();
        let iterm2 = [
            "iTerm",
            "WezTerm",
            "mintty",
            "vscode",
            "Tabby",
            "Hyper",
            "rio",
            "Bobcat",
            "WarpTerminal",
        ]
        .iter()
        .any(|p| program.contains(p))
            || var("LC_TERMINAL").is_some_and(|t| t.contains("iTerm"));
        Self {
            tmux: tmux_wraps || var("TMUX").is_some(),
            tmux_wraps,
            no_kitty: wezterm || konsole,
            no_sixel: konsole,
            iterm2,
        }
    }
}

/// The protocol and why (a line for the workbench's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub protocol: ProtocolType,
    pub why: String,
}

fn decision(protocol: ProtocolType, why: impl Into<String>) -> Decision {
    Decision {
        protocol,
        why: why.into(),
    }
}

/// `kitty(0.26.5)` → (0, 26); `None` for other terminals or odd strings.
pub fn kitty_version(version: &str) -> Option<(u32, u32)> {
    let inner = version.strip_prefix("kitty(")?.strip_suffix(')')?;
    let mut parts = inner.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Picks the protocol for `auto`. `cell` is the cell size in pixels as far as
/// it is known (the reply, else the kernel's window size).
pub fn choose(r: &Replies, env: &Env, cell: Option<(u16, u16)>) -> Decision {
    use ProtocolType::*;
    if r.is_silent() {
        return decision(
            Halfblocks,
            "the terminal did not answer the image query; images as half-blocks \
             (--image-protocol picks one)",
        );
    }
    let old_kitty = r
        .version
        .as_deref()
        .and_then(kitty_version)
        .filter(|v| *v < KITTY_PLACEHOLDERS);
    let placeholders = r.kitty && r.kitty_placeholders && old_kitty.is_none() && !env.no_kitty;
    let kitty_note = match (r.kitty && !placeholders, &r.version) {
        (true, Some(v)) => format!("{v} draws no kitty Unicode placeholders (kitty ≥ 0.28 does)"),
        (true, None) => "the terminal's kitty graphics draw no Unicode placeholders".to_string(),
        (false, _) => String::new(),
    };
    let with_note = |why: String| {
        if kitty_note.is_empty() {
            why
        } else {
            format!("{kitty_note}; {why}")
        }
    };
    let needs_cell = |p: ProtocolType, why: String| {
        if cell.is_some() {
            decision(p, with_note(why))
        } else {
            decision(
                Halfblocks,
                with_note(
                    "the terminal did not tell its cell size in pixels; images as half-blocks"
                        .into(),
                ),
            )
        }
    };
    if env.tmux {
        // Inside tmux only what tmux passes through and keeps in place: kitty's
        // placeholders are text, so tmux moves and clears them like text. Sixel
        // and iTerm2 pixels would be drawn past tmux and left behind.
        return if placeholders && env.tmux_wraps {
            needs_cell(Kitty, "kitty graphics through tmux".into())
        } else {
            decision(
                Halfblocks,
                with_note(
                    "inside tmux only kitty (≥ 0.28) images pass through; images as half-blocks"
                        .into(),
                ),
            )
        };
    }
    if placeholders {
        return needs_cell(Kitty, "kitty graphics".into());
    }
    if r.sixel && !env.no_sixel {
        return needs_cell(Sixel, "sixel graphics".into());
    }
    if env.iterm2 {
        return needs_cell(Iterm2, "iTerm2 images (from TERM_PROGRAM)".into());
    }
    let why = if kitty_note.is_empty() {
        "no image protocol answered; images as half-blocks".to_string()
    } else {
        format!("{kitty_note}; images as half-blocks")
    };
    decision(Halfblocks, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolType::*;

    fn kitty(version: &str, placeholders: bool) -> Replies {
        Replies {
            status: true,
            kitty: true,
            kitty_placeholders: placeholders,
            version: Some(version.into()),
            cell: Some((10, 20)),
            ..Default::default()
        }
    }

    const CELL: Option<(u16, u16)> = Some((10, 20));

    #[test]
    fn silence_and_plain_terminals_get_halfblocks() {
        let d = choose(&Replies::default(), &Env::default(), CELL);
        assert_eq!(d.protocol, Halfblocks);
        assert!(d.why.contains("did not answer"), "{}", d.why);
        let plain = Replies {
            status: true,
            ..Default::default()
        };
        assert_eq!(choose(&plain, &Env::default(), CELL).protocol, Halfblocks);
    }

    #[test]
    fn kitty_needs_placeholders() {
        let env = Env::default();
        assert_eq!(
            choose(&kitty("kitty(0.32.2)", true), &env, CELL).protocol,
            Kitty
        );
        // Debian 12's kitty: the U=1 query unanswered.
        let d = choose(&kitty("kitty(0.26.5)", false), &env, CELL);
        assert_eq!(d.protocol, Halfblocks);
        assert!(
            d.why.contains("kitty(0.26.5)") && d.why.contains("0.28"),
            "{}",
            d.why
        );
        // An old version is believed even if the U=1 query got an OK somehow.
        assert_eq!(
            choose(&kitty("kitty(0.27.1)", true), &env, CELL).protocol,
            Halfblocks
        );
        // WezTerm answers kitty queries but draws no placeholders; it gets iTerm2.
        let wez = Env {
            no_kitty: true,
            iterm2: true,
            ..Default::default()
        };
        assert_eq!(
            choose(&kitty("WezTerm 2024", true), &wez, CELL).protocol,
            Iterm2
        );
    }

    #[test]
    fn sixel_when_the_device_attributes_say_so() {
        let xterm = Replies {
            status: true,
            sixel: true,
            version: Some("XTerm(379)".into()),
            ..Default::default()
        };
        assert_eq!(choose(&xterm, &Env::default(), CELL).protocol, Sixel);
        // Without a cell size no pixel protocol can be sized.
        let d = choose(&xterm, &Env::default(), None);
        assert_eq!(d.protocol, Halfblocks);
        assert!(d.why.contains("cell size"));
        let konsole = Env {
            no_sixel: true,
            no_kitty: true,
            ..Default::default()
        };
        assert_eq!(choose(&xterm, &konsole, CELL).protocol, Halfblocks);
    }

    #[test]
    fn tmux_passes_only_kitty_placeholders() {
        let tmux = Env {
            tmux: true,
            tmux_wraps: true,
            ..Default::default()
        };
        assert_eq!(
            choose(&kitty("kitty(0.35.0)", true), &tmux, CELL).protocol,
            Kitty
        );
        let sixel = Replies {
            status: true,
            sixel: true,
            ..Default::default()
        };
        let d = choose(&sixel, &tmux, CELL);
        assert_eq!(d.protocol, Halfblocks);
        assert!(d.why.contains("tmux"), "{}", d.why);
        assert_eq!(
            choose(&kitty("kitty(0.26.5)", false), &tmux, CELL).protocol,
            Halfblocks
        );
        // ratatui-image would not wrap for tmux (TERM=screen): no kitty either.
        let unwrapped = Env {
            tmux: true,
            ..Default::default()
        };
        assert_eq!(
            choose(&kitty("kitty(0.35.0)", true), &unwrapped, CELL).protocol,
            Halfblocks
        );
        // A detached session answers nothing.
        assert_eq!(
            choose(&Replies::default(), &tmux, CELL).protocol,
            Halfblocks
        );
    }

    #[test]
    fn kitty_versions() {
        assert_eq!(kitty_version("kitty(0.26.5)"), Some((0, 26)));
        assert_eq!(kitty_version("kitty(0.28.0)"), Some((0, 28)));
        assert_eq!(kitty_version("XTerm(379)"), None);
        assert_eq!(kitty_version("kitty(x)"), None);
    }
}
