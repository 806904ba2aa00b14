//! Asking the terminal what it can draw: one burst of queries (XTVERSION, two
//! kitty graphics queries, primary device attributes, cell size in pixels, and a
//! device status report that every terminal answers last), read back with a
//! deadline on our own file descriptor.
//!
//! Why not ratatui-image's `Picker::from_query_stdio`: when nothing answers (a
//! detached tmux session, `script`, some SSH clients) it gives up after its
//! timeout but leaves its reader thread blocked on stdin, and that thread eats
//! the user's first key. Here every read waits in `poll` and nothing is left
//! reading once the probe returns.
//!
//! The second kitty query carries `U=1` (Unicode placeholders, kitty ≥ 0.28,
//! the only kitty mode ratatui-image draws): an older kitty refuses the whole
//! command ("invalid key character: 0x55") and does not answer it, so an
//! answered first query with an unanswered second one means "kitty without
//! placeholders".

use std::time::Duration;

/// The image ids of the two kitty queries (never displayed: `a=q` only asks).
const KITTY_PLAIN_ID: u32 = 31;
const KITTY_PLACEHOLDER_ID: u32 = 32;

/// How long the terminal may stay silent before the probe gives up. Each byte
/// that arrives restarts it, so a slow link that does answer is waited for.
pub const SILENCE: Duration = Duration::from_millis(1000);

/// What the terminal said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replies {
    /// The device status report came back: everything asked before it was answered
    /// or will never be.
    pub status: bool,
    /// The kitty graphics protocol answered the plain query with OK.
    pub kitty: bool,
    /// The kitty graphics protocol also accepted the query with `U=1`.
    pub kitty_placeholders: bool,
    /// Primary device attributes list 4 (sixel graphics).
    pub sixel: bool,
    /// XTVERSION's answer, e.g. `kitty(0.26.5)` or `XTerm(379)`.
    pub version: Option<String>,
    /// Character cell size in pixels (width, height), from `CSI 16 t`.
    pub cell: Option<(u16, u16)>,
}

impl Replies {
    /// Nothing at all came back.
    pub fn is_silent(&self) -> bool {
        *self == Replies::default()
    }
}

/// The queries, wrapped for tmux's passthrough when inside tmux (the outer
/// terminal answers them; tmux itself knows nothing about images).
pub fn query(tmux: bool) -> String {
    let body = format!(
        "\x1b[>0q\
         \x1b_Gi={KITTY_PLAIN_ID},s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\\
         \x1b_Gi={KITTY_PLACEHOLDER_ID},s=1,v=1,a=q,t=d,f=24,U=1;AAAA\x1b\\\
         \x1b[c\
         \x1b[16t\
         \x1b[5n"
    );
    if tmux {
        format!("\x1bPtmux;{}\x1b\\", body.replace('\x1b', "\x1b\x1b"))
    } else {
        body
    }
}

/// Parses everything read so far (replies in any order, other bytes skipped).
pub fn parse(bytes: &[u8]) -> Replies {
    let mut r = Replies::default();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != 0x1b || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            // APC (kitty) and DCS (XTVERSION): up to ST (ESC \) or BEL.
            b'_' | b'P' => {
                let start = i + 2;
                let Some((end, next)) = string_end(bytes, start) else {
                    break;
                };
                let body = String::from_utf8_lossy(&bytes[start..end]);
                if bytes[i + 1] == b'_' {
                    kitty_reply(&body, &mut r);
                } else if let Some(v) = body.strip_prefix(">|") {
                    r.version = Some(v.to_string());
                }
                i = next;
            }
            b'[' => {
                let start = i + 2;
                // Parameters and intermediates, then one final byte in @..~.
                let Some(len) = bytes[start..]
                    .iter()
                    .position(|b| (0x40..=0x7e).contains(b))
                else {
                    break;
                };
                let params = String::from_utf8_lossy(&bytes[start..start + len]);
                csi_reply(&params, bytes[start + len], &mut r);
                i = start + len + 1;
            }
            _ => i += 1,
        }
    }
    r
}

/// The end of a string sequence that starts at `start`: (end of its body,
/// index after its terminator).
fn string_end(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let mut j = start;
    while j < bytes.len() {
        match bytes[j] {
            0x07 => return Some((j, j + 1)),
            0x1b if bytes.get(j + 1) == Some(&b'\\') => return Some((j, j + 2)),
            _ => j += 1,
        }
    }
    None
}

/// `Gi=31;OK` or `Gi=32;EINVAL:...`.
fn kitty_reply(body: &str, r: &mut Replies) {
    let Some(rest) = body.strip_prefix('G') else {
        return;
    };
    let (keys, message) = rest.split_once(';').unwrap_or((rest, ""));
    let id = keys
        .split(',')
        .find_map(|kv| kv.strip_prefix("i="))
        .and_then(|v| v.parse::<u32>().ok());
    let ok = message == "OK";
    match id {
        Some(KITTY_PLAIN_ID) => r.kitty |= ok,
        Some(KITTY_PLACEHOLDER_ID) => r.kitty_placeholders |= ok,
        _ => {}
    }
}

fn csi_reply(params: &str, final_byte: u8, r: &mut Replies) {
    match final_byte {
        // Primary device attributes: `?62;4;22c`.
        b'c' => {
            if let Some(list) = params.strip_prefix('?') {
                r.sixel |= list.split(';').any(|p| p == "4");
            }
        }
        // Cell size: `6;height;width t`.
        b't' => {
            let mut it = params.split(';');
            if it.next() == Some("6") {
                let h = it.next().and_then(|v| v.parse::<u16>().ok());
                let w = it.next().and_then(|v| v.parse::<u16>().ok());
                if let (Some(h), Some(w)) = (h, w) {
                    if h > 0 && w > 0 {
                        r.cell = Some((w, h));
                    }
                }
            }
        }
        // Device status: `0n` (ok) or `3n` (malfunction): answered either way.
        b'n' => r.status |= params == "0" || params == "3",
        _ => {}
    }
}

/// Sends the queries and reads the replies until the status report arrives
/// or the terminal stays silent for [`SILENCE`]. The terminal must be in raw
/// mode and nothing else may be reading its input.
#[cfg(unix)]
pub fn ask(tmux: bool) -> std::io::Result<Replies> {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let tty = Tty::open()?;
    let mut out = std::io::stdout();
    out.write_all(query(tmux).as_bytes())?;
    out.flush()?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let mut pfd = libc::pollfd {
            fd: tty.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, SILENCE.as_millis() as libc::c_int) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready == 0 {
            // Silence: whatever was answered is all there is.
            return Ok(parse(&bytes));
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes; poll said the fd is readable.
        let n = unsafe {
            libc::read(
                tty.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        if n <= 0 {
            return Ok(parse(&bytes));
        }
        bytes.extend_from_slice(&buf[..n as usize]);
        let replies = parse(&bytes);
        if replies.status {
            return Ok(replies);
        }
    }
}

/// Without a Unix terminal there is nothing to ask: no replies.
#[cfg(not(unix))]
pub fn ask(_tmux: bool) -> std::io::Result<Replies> {
    Ok(Replies::default())
}

/// The terminal's input: stdin when it is a terminal, else `/dev/tty` (where
/// crossterm reads keys from too).
#[cfg(unix)]
struct Tty {
    fd: std::os::fd::OwnedFd,
}

#[cfg(unix)]
impl Tty {
    fn open() -> std::io::Result<Self> {
        use std::io::IsTerminal;
        use std::os::fd::AsFd;
        // A duplicate of stdin's descriptor: dropping it leaves stdin open.
        let fd = if std::io::stdin().is_terminal() {
            std::io::stdin().as_fd().try_clone_to_owned()?
        } else {
            std::fs::File::open("/dev/tty")?.into()
        };
        Ok(Self { fd })
    }
}

/// Cell size in pixels from the kernel's idea of the window (`TIOCGWINSZ`),
/// for terminals that do not answer `CSI 16 t`.
#[cfg(unix)]
pub fn cell_from_winsize() -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    if rc != 0 || ws.ws_xpixel == 0 || ws.ws_ypixel == 0 || ws.ws_col == 0 || ws.ws_row == 0 {
        return None;
    }
    Some((ws.ws_xpixel / ws.ws_col, ws.ws_ypixel / ws.ws_row))
}

#[cfg(not(unix))]
pub fn cell_from_winsize() -> Option<(u16, u16)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_terminals_answer() {
        // kitty 0.32: both queries OK, no sixel, cell size, version.
        let kitty =
            b"\x1bP>|kitty(0.32.2)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b_Gi=32;OK\x1b\\\x1b[?62;c\x1b[6;20;10t\x1b[0n";
        let r = parse(kitty);
        assert_eq!(
            r,
            Replies {
                status: true,
                kitty: true,
                kitty_placeholders: true,
                sixel: false,
                version: Some("kitty(0.32.2)".into()),
                cell: Some((10, 20)),
            }
        );
        // kitty 0.26: the U=1 query is dropped, the plain one answered.
        let old = parse(b"\x1bP>|kitty(0.26.5)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[?62;c\x1b[0n");
        assert!(old.kitty && !old.kitty_placeholders && old.status);
        // xterm -ti vt340: sixel in DA1, no kitty, no cell size (window ops off).
        let xterm = parse(b"\x1bP>|XTerm(379)\x1b\\\x1b[?63;1;2;4;6;9;15;16;22;28;29c\x1b[0n");
        assert!(xterm.sixel && !xterm.kitty && xterm.cell.is_none());
        assert_eq!(xterm.version.as_deref(), Some("XTerm(379)"));
        // An error reply to the kitty query is no kitty; BEL ends a string too.
        let err = parse(b"\x1b_Gi=31;EINVAL:bad\x07\x1b[0n");
        assert!(!err.kitty && err.status);
        // DA1 with 4 only as part of another number is no sixel.
        assert!(!parse(b"\x1b[?64;14c").sixel);
        // Nothing, or a half-read reply, is silence.
        assert!(parse(b"").is_silent());
        assert!(!parse(b"\x1bP>|kit").status);
    }

    #[test]
    fn queries_are_wrapped_for_tmux() {
        let plain = query(false);
        assert!(plain.ends_with("\x1b[5n") && plain.contains(",U=1;"));
        let wrapped = query(true);
        assert!(wrapped.starts_with("\x1bPtmux;\x1b\x1b[>0q"));
        assert!(wrapped.ends_with("\x1b\x1b[5n\x1b\\"));
    }
}
