//! What a configuration message may show of the configuration's own text.
//!
//! A message names fields, never values, but some names are the operator's
//! words: a KEK's name, a kid, a variable, a sealing key's id, and the
//! strings serde quotes in a shape error (`invalid type: string "…"`,
//! ``unknown field `…` ``). An operator who pastes a key where a name
//! belongs (the API's `kek` parameter *is* hex, so `customers[].kek` given
//! a KEK's hex is a natural slip) must not find the key in Envoy's log. A
//! name is shown only when it cannot be key material: short, visible ASCII,
//! and no run of 16 or more hex digits (64 bits; every key fpgen takes is
//! 32 digits or more). Anything else is described, never quoted.

use std::borrow::Cow;
use std::fmt;

/// The longest name shown, in bytes.
const MAX_SHOWN: usize = 64;
/// The shortest run of hex digits that hides a name.
const HEX_RUN: usize = 16;

/// Whether `text` may appear in a message as it is.
pub(super) fn is_shown(text: &str) -> bool {
    let mut run = 0usize;
    !text.is_empty()
        && text.len() <= MAX_SHOWN
        && text.bytes().all(|b| {
            run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
            run < HEX_RUN && b.is_ascii_graphic() && !matches!(b, b'"' | b'`' | b'\\')
        })
}

/// `text`, or a description of it that holds none of it.
pub(super) fn name(text: &str) -> Cow<'_, str> {
    if is_shown(text) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(hidden(text).to_string())
    }
}

/// A name as a message quotes it: `"text"`, or its description.
pub(super) struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_shown(self.0) {
            write!(f, "\"{}\"", self.0)
        } else {
            hidden(self.0).fmt(f)
        }
    }
}

/// A description of a value that is not shown: its length and kind.
fn hidden(text: &str) -> impl fmt::Display + '_ {
    struct Hidden<'a>(&'a str);
    impl fmt::Display for Hidden<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let chars = self.0.chars().count();
            if chars > 0 && self.0.bytes().all(|b| b.is_ascii_hexdigit()) {
                write!(f, "<{chars} hex digits, not shown>")
            } else {
                write!(f, "<{chars} characters, not shown>")
            }
        }
    }
    Hidden(text)
}

/// A parser's message with every quoted string (`"…"`, with JSON's
/// escapes, or `` `…` ``) that may not be shown replaced by its
/// description, and then every run of 16 or more hex digits left anywhere
/// (serde does not escape a backtick inside the name it quotes, so a quote
/// can end early and leave the rest unquoted).
pub(super) fn scrub(message: &str) -> String {
    hide_hex_runs(&scrub_quoted(message))
}

/// `text` with every run of [`HEX_RUN`] or more hex digits described.
fn hide_hex_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        flush_run(&mut out, &mut run);
        out.push(c);
    }
    flush_run(&mut out, &mut run);
    out
}

fn flush_run(out: &mut String, run: &mut String) {
    if run.len() >= HEX_RUN {
        out.push_str(&hidden(run).to_string());
    } else {
        out.push_str(run);
    }
    run.clear();
}

fn scrub_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let quote = if from.starts_with('"') { '"' } else { '`' };
        let body = from.get(1..).unwrap_or("");
        let Some(end) = closing(body, quote) else {
            // An unclosed quote: describe everything after it.
            out.push_str(&name(body));
            return out;
        };
        let (quoted, after) = body.split_at(end);
        if is_shown(quoted) {
            out.push(quote);
            out.push_str(quoted);
            out.push(quote);
        } else {
            out.push_str(&hidden(quoted).to_string());
        }
        rest = after.get(1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// The byte offset of the quote that closes a quoted string (backslash
/// escapes skipped in `"…"`).
fn closing(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132";

    #[test]
    fn names_are_shown_keys_are_described() {
        for shown in [
            "demo-kek",
            "100001",
            "FPGEN_SEALING_KEY",
            "^film-1",
            "k-2026.11",
        ] {
            assert_eq!(name(shown), shown);
        }
        assert_eq!(name(KEY), "<64 hex digits, not shown>");
        assert_eq!(name(&KEY[..32]), "<32 hex digits, not shown>");
        assert_eq!(
            name(&format!("kek-{}", &KEY[..20])),
            "<24 characters, not shown>"
        );
        assert_eq!(name("has space"), "<9 characters, not shown>");
        assert_eq!(name(&"n".repeat(65)), "<65 characters, not shown>");
        assert_eq!(name(""), "<0 characters, not shown>");
        assert_eq!(Quoted("demo").to_string(), "\"demo\"");
        assert_eq!(Quoted(KEY).to_string(), "<64 hex digits, not shown>");
    }

    #[test]
    fn parser_messages_lose_their_values() {
        let m =
            format!("invalid type: string \"{KEY}\", expected a sealing key at line 3 column 80");
        assert_eq!(
            scrub(&m),
            "invalid type: string <64 hex digits, not shown>, expected a sealing key at line 3 column 80"
        );
        let m = format!("unknown field `{KEY}`, expected `env`");
        assert_eq!(
            scrub(&m),
            "unknown field <64 hex digits, not shown>, expected `env`"
        );
        // escapes inside a JSON string do not end it
        let m = format!("invalid value: string \"a\\\"{KEY}\", expected x");
        assert!(!scrub(&m).contains(&KEY[..16]), "{}", scrub(&m));
        // an unclosed quote hides the rest
        assert!(!scrub(&format!("bad \"{KEY}")).contains(&KEY[..16]));
        assert_eq!(scrub("missing field `id`"), "missing field `id`");
        // a backtick inside the quoted name ends serde's quote early
        let m = format!("unknown field `x`{KEY}`, expected `env` at line 1 column 80");
        assert!(!scrub(&m).contains(&KEY[..16]), "{}", scrub(&m));
        // (the rest is garbled, since the quotes no longer pair, but holds
        // no key)
        assert!(scrub(&m).starts_with("unknown field `x`"), "{}", scrub(&m));
    }
}
