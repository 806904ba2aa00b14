//! The terminal's modes the workbench changes (raw mode, alternate screen,
//! hidden cursor) and their undoing: on quit, around `$EDITOR` and the shell,
//! and in the panic hook, so a crash never leaves a raw, blank terminal.
//! Nothing here asks the terminal anything: start-up and redraws must work
//! where nobody answers (a detached tmux session, `script`).

use std::io::{self, Write};
use std::panic::PanicHookInfo;

use anyhow::{Context, Result};
use ratatui::backend::Backend;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EndSynchronizedUpdate, EnterAlternateScreen,
    LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::Rect;
use ratatui::Terminal;

/// Raw mode on, alternate screen, cursor hidden; on failure whatever was
/// switched is switched back.
pub fn enter() -> Result<()> {
    enable_raw_mode().context("cannot switch the terminal to raw mode")?;
    if let Err(e) = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide) {
        leave();
        return Err(e).context("cannot enter the alternate screen");
    }
    Ok(())
}

/// Undoes [`enter`] on the real terminal (errors are ignored: this runs on
/// the way out, when nothing better can be done).
pub fn leave() {
    let _ = restore(&mut io::stdout(), disable_raw_mode, false);
}

/// [`leave`] from the panic hook: the panic may have struck between the start
/// and the end of a synchronized frame, which is ended too (ending one that
/// is not open makes kitty log a warning, so only here).
fn leave_after_panic() {
    let _ = restore(&mut io::stdout(), disable_raw_mode, true);
}

/// Undoes [`enter`]: `raw_off` turns raw mode off, then `out` gets the escapes
/// that (with `end_frame`) end a half-drawn synchronized frame, leave the
/// alternate screen and show the cursor. All steps run even when one fails;
/// the first error is returned.
pub fn restore(
    out: &mut impl Write,
    raw_off: impl FnOnce() -> io::Result<()>,
    end_frame: bool,
) -> io::Result<()> {
    let raw = raw_off();
    let end = if end_frame {
        execute!(out, EndSynchronizedUpdate)
    } else {
        Ok(())
    };
    let escapes = execute!(out, LeaveAlternateScreen, cursor::Show);
    raw.and(end).and(escapes)
}

/// The panic hook: `restore_terminal` first, then the `previous` hook prints
/// the message (onto the normal screen, where it stays readable).
pub fn panic_hook(
    previous: Box<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static>,
    restore_terminal: impl Fn() + Send + Sync + 'static,
) -> Box<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static> {
    Box::new(move |info| {
        restore_terminal();
        previous(info);
    })
}

/// Installs [`panic_hook`] with the real terminal.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(panic_hook(previous, leave_after_panic));
}

/// Clears the screen and makes the next draw repaint every cell, without
/// `Terminal::clear`, which reads the cursor position first: a terminal that
/// does not answer that (a detached tmux session) made the workbench exit with
/// "The cursor position could not be read within a normal duration".
pub fn clear<B: Backend>(terminal: &mut Terminal<B>) -> Result<(), B::Error> {
    let area = Rect::from((ratatui::layout::Position::ORIGIN, terminal.size()?));
    // Resizing a fullscreen viewport clears it and resets the back buffer.
    terminal.resize(area)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    #[test]
    fn restore_turns_raw_mode_off_and_leaves_the_alternate_screen() {
        let mut out = Vec::new();
        let mut raw_off_called = false;
        restore(
            &mut out,
            || {
                raw_off_called = true;
                Ok(())
            },
            true,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(raw_off_called);
        assert!(
            s.contains("\x1b[?1049l"),
            "leaves the alternate screen: {s:?}"
        );
        assert!(s.contains("\x1b[?25h"), "shows the cursor: {s:?}");
        assert!(
            s.contains("\x1b[?2026l"),
            "ends a synchronized frame: {s:?}"
        );
        // A failing raw-mode switch still leaves the alternate screen; a
        // normal exit does not end a frame that is not open.
        let mut out = Vec::new();
        let err = restore(&mut out, || Err(io::Error::other("no tty")), false).unwrap_err();
        assert_eq!(err.to_string(), "no tty");
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\x1b[?1049l") && !s.contains("\x1b[?2026l"),
            "{s:?}"
        );
    }

    #[test]
    fn clear_repaints_without_asking_the_cursor_position() {
        // TestBackend answers cursor queries, so check what clear does do:
        // every cell is drawn again on the next frame.
        let mut t = Terminal::new(TestBackend::new(4, 2)).unwrap();
        t.draw(|f| f.render_widget(ratatui::widgets::Paragraph::new("ab"), f.area()))
            .unwrap();
        clear(&mut t).unwrap();
        t.backend().assert_buffer_lines(["    ", "    "]);
        t.draw(|f| f.render_widget(ratatui::widgets::Paragraph::new("ab"), f.area()))
            .unwrap();
        t.backend().assert_buffer_lines(["ab  ", "    "]);
    }
}
