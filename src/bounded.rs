//! Bounded echoes of input: text from specs and servers is cut before it reaches a message, a
//! log line, a status field or an Event, with a note of its full length. Pure.

use std::borrow::Cow;

/// Longest value quoted inside a message (names are at most 253 characters when valid).
pub const VALUE_BYTES: usize = 256;
/// Longest single message: a problem, a condition message, an Event note (Kubernetes keeps
/// Event messages to 1 KiB).
pub const MESSAGE_BYTES: usize = 1024;

/// `text`, or its first `max` bytes (cut on a character boundary) and a note of its length.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes in all)", &text[..end], text.len()))
}

/// `text` quoted as `{:?}` would, or, when longer than [`VALUE_BYTES`], its start quoted and a
/// note of its length: `"aaaa…" (3000000 bytes)`.
pub fn quoted(text: &str) -> String {
    if text.len() <= VALUE_BYTES {
        return format!("{text:?}");
    }
    let mut end = VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("\"{}…\" ({} bytes)", text[..end].escape_debug(), text.len())
}

/// `text` without quotes, cut like [`quoted`].
pub fn value(text: &str) -> Cow<'_, str> {
    clip(text, VALUE_BYTES)
}

/// A message cut to [`MESSAGE_BYTES`].
pub fn message(text: String) -> String {
    match clip(&text, MESSAGE_BYTES) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

/// At most `max` items joined by `separator`, then how many were left out.
pub fn list<S: AsRef<str>>(items: &[S], max: usize, separator: &str) -> String {
    let mut out: Vec<&str> = items.iter().take(max).map(AsRef::as_ref).collect();
    let more = items.len().saturating_sub(max);
    let tail = format!("… and {more} more");
    if more > 0 {
        out.push(&tail);
    }
    out.join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_with_its_length() {
        assert_eq!(clip("orders", 10), "orders");
        let long = "a".repeat(3_000_000);
        let cut = clip(&long, 16);
        assert_eq!(cut, format!("{}… (3000000 bytes in all)", "a".repeat(16)));
        assert_eq!(quoted("x\"y"), "\"x\\\"y\"");
        let q = quoted(&long);
        assert!(q.len() < VALUE_BYTES + 40, "{q}");
        assert!(q.ends_with("…\" (3000000 bytes)"), "{q}");
        assert!(message("b".repeat(5000)).len() < MESSAGE_BYTES + 40);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = "é".repeat(1000);
        for max in 0..10 {
            let cut = clip(&text, max);
            assert!(cut.starts_with(&"é".repeat(max / 2)), "{cut}");
        }
        assert!(quoted(&"ü".repeat(200)).contains("(400 bytes)"));
    }

    #[test]
    fn lists_say_how_many_were_left_out() {
        assert_eq!(list(&["a", "b"], 5, ", "), "a, b");
        assert_eq!(list(&["a", "b", "c"], 2, ", "), "a, b, … and 1 more");
    }
}
