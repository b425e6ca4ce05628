//! Text another peer chose (a chat line, a name, a service or file name, a refusal reason),
//! made safe to show.
//!
//! Why: a terminal obeys the control characters in what it prints. A chat line holding
//! `ESC ] 0 ; … BEL` retitles the window, `ESC [ 2 K CR` erases the line so a forged status
//! line can be drawn over it, `ESC ] 52 ; c ; … BEL` writes the user's clipboard; 8-bit C1
//! codes (U+009B is a one-character `ESC [`) do the same on terminals that honour them. And
//! bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) make text display in
//! another order than it reads (`"exe.txt"` shown for `"txt.exe"`): the "Trojan Source" trick.
//! So everything a remote peer chose goes through [`safe_line`] before a person sees it; the
//! rule lives here once, for every peer.
//!
//! Ordinary Unicode (accents, Chinese, emoji, right-to-left scripts themselves) is kept as is.

/// What the peer sent, as one line that a terminal only displays.
///
/// * C0 controls (U+0000–U+001F: ESC, BEL, NUL, backspace…), DEL (U+007F) and C1 controls
///   (U+0080–U+009F) are removed;
/// * bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) are removed;
/// * line and tab breaks (tab, LF, VT, FF, CR, NEL U+0085, U+2028, U+2029) become one space
///   each: every field this is for is shown on one line, and a space keeps the words apart
///   without letting the sender start a line of its own (a forged `* … joined` line).
///
/// Idempotent: a line that went through it comes back unchanged.
pub fn safe_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_break(c) {
            out.push(' ');
        } else if !is_hidden(c) {
            out.push(c);
        }
    }
    out
}

/// Line and tab breaks: shown as a space.
fn is_break(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Characters never shown: C0, DEL, C1 (Unicode's `Cc`), and the bidi controls that reorder
/// what follows.
fn is_hidden(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// Bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO) and isolates (LRI, RLI, FSI, PDI).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether [`safe_line`] would change `c`: for output that must keep the original text but not
/// its effect (JSON can carry such a character as a `\uXXXX` escape instead).
pub fn needs_escape(c: char) -> bool {
    is_break(c) || is_hidden(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc_title_is_defused() {
        assert_eq!(safe_line("a\x1b]0;owned\x07b"), "a]0;ownedb");
    }

    #[test]
    fn csi_erase_line_is_defused() {
        assert_eq!(
            safe_line("hi\x1b[2K\r* alice joined"),
            "hi[2K * alice joined"
        );
    }

    #[test]
    fn osc_52_clipboard_write_is_defused() {
        let out = safe_line("\x1b]52;c;cm0gLXJmIH4=\x07x");
        assert_eq!(out, "]52;c;cm0gLXJmIH4=x");
        assert!(!out.contains(['\x1b', '\x07']));
    }

    #[test]
    fn c1_controls_and_del_are_removed() {
        // U+009B is CSI in one character; U+009D is OSC; U+0090 DCS.
        assert_eq!(safe_line("a\u{9b}2Kb\u{9d}0;t\u{90}c\x7fd"), "a2Kb0;tcd");
        for c in (0x80u32..=0x9f).filter_map(char::from_u32) {
            let out = safe_line(&format!("x{c}y"));
            assert!(out == "xy" || out == "x y", "U+{:04X}: {out:?}", c as u32);
        }
    }

    #[test]
    fn bidi_overrides_and_isolates_are_removed() {
        assert_eq!(safe_line("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{2066}', '\u{2069}',
        ] {
            assert_eq!(safe_line(&format!("a{c}b")), "ab");
        }
    }

    #[test]
    fn breaks_become_spaces() {
        assert_eq!(safe_line("one\ntwo\r\nthree\tfour"), "one two  three four");
        assert_eq!(safe_line("a\u{2028}b"), "a b");
    }

    #[test]
    fn ordinary_unicode_is_kept() {
        for s in [
            "你好，世界",
            "héllo wörld ✓",
            "🦀🎉 emoji",
            "שלום עולם",
            "مرحبا",
            "",
        ] {
            assert_eq!(safe_line(s), s);
        }
    }

    #[test]
    fn it_is_idempotent() {
        let once = safe_line("\x1b]0;x\x07\u{202E}a\nb\u{9b}c");
        assert_eq!(safe_line(&once), once);
        assert!(once.chars().all(|c| !needs_escape(c)));
    }
}
