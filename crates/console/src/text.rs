//! Caller-supplied text on its way into the audit log.
//!
//! Whatever a browser sends (a refused sign-in name, a search filter, a node
//! name) may be long or hold characters that rewrite what a reader of the log
//! sees: newlines forge extra lines, ESC sequences recolour a terminal, bidi
//! overrides reorder the text around them. The log keeps a bounded copy in
//! which each such character is U+FFFD.

/// Most characters of a refused sign-in name kept in the log (the longest
/// valid administrator name).
pub const MAX_LOGGED_NAME_CHARS: usize = 64;

/// Most characters of an entry's `detail` (the action and what it was about);
/// the longest legitimate one, a search with every filter at its limit, is
/// about 1,200.
pub const MAX_LOGGED_DETAIL_CHARS: usize = 2048;

/// What stands in for a character that may not be shown as it is.
pub const REPLACEMENT: char = '\u{FFFD}';

/// True for characters that change how surrounding text is displayed rather
/// than showing themselves (controls, line separators, bidi controls): the
/// audit log's own rule, so the console and the log agree.
pub use tongban_audit::entry::is_forbidden_char as is_unsafe_for_log;

/// At most `max_chars` characters of `text`, each unsafe one replaced by
/// U+FFFD (so the result has at most `max_chars` characters too).
pub fn sanitize_for_log(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| if is_unsafe_for_log(c) { REPLACEMENT } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_become_visible_and_length_is_bounded() {
        let dirty = "ad\nmin\r\x1b[31m\u{7f}\u{85}\u{202E}x\u{2066}\u{2069}\u{200F}\u{2028}\t";
        let clean = sanitize_for_log(dirty, 64);
        assert_eq!(
            clean,
            "ad\u{FFFD}min\u{FFFD}\u{FFFD}[31m\u{FFFD}\u{FFFD}\u{FFFD}x\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert!(!clean.chars().any(is_unsafe_for_log));
        assert_eq!(
            sanitize_for_log(&"字".repeat(10_000), 64).chars().count(),
            64
        );
        // Ordinary names, Chinese included, pass unchanged.
        assert_eq!(
            sanitize_for_log("auditor-zhao 赵审计", 64),
            "auditor-zhao 赵审计"
        );
    }
}
