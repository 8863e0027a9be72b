//! Validation of what a client sent, field by field, answered as one `validation_error`.

use std::collections::BTreeMap;

use crate::error::{ApiError, Code};
use crate::key::looks_like_key;

/// The bidirectional controls U+202A–U+202E and U+2066–U+2069: they make text display in
/// another order than it is stored ("Trojan Source"), so a name could pass for another.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub const BIDI_MESSAGE: &str =
    "must not contain bidirectional control characters (U+202A to U+202E, U+2066 to U+2069)";

/// What a piece of text may hold. Each kind has its rule twice, side by side: as the
/// pattern the OpenAPI document states (JSON Schema, ECMA-262 syntax) and as the check the
/// server makes; `tests/api/limits.rs` sends both sides of every pattern to keep them equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chars {
    /// Longer text (descriptions, instructions, messages): no control characters but tab,
    /// line feed and carriage return, and no bidirectional controls.
    Text,
    /// As [`Chars::Text`], with at least one character that is not white space as Rust's
    /// `trim` reads it (spelled out: a JavaScript `\s` also takes U+FEFF, `trim` does not).
    NotBlank,
    /// A text query parameter (`Search`, `Action`): no control characters at all, tab and
    /// line breaks included, and no bidirectional controls.
    Query,
    /// A key name: no control characters, no bidirectional controls, and no white space at
    /// either end (what `lifecycle::check_name` checks).
    Name,
}

impl Chars {
    /// The rule as a JSON Schema pattern.
    pub const fn pattern(self) -> &'static str {
        match self {
            Chars::Text => {
                r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$"
            }
            Chars::NotBlank => {
                r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$"
            }
            Chars::Query => r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$",
            Chars::Name => {
                r"^[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000]([^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000])?$"
            }
        }
    }

    /// The rule as the server checks it: what is wrong with `v`, each part once.
    pub fn check(self, v: &str) -> Vec<&'static str> {
        let mut wrong = Vec::new();
        let line_breaks_allowed = matches!(self, Chars::Text | Chars::NotBlank);
        if self == Chars::NotBlank && !v.is_empty() && v.trim().is_empty() {
            wrong.push("must not be blank");
        }
        if self == Chars::Name && v.trim() != v {
            wrong.push("must not start or end with white space");
        }
        let control =
            |c: char| c.is_control() && !(line_breaks_allowed && matches!(c, '\n' | '\t' | '\r'));
        if v.chars().any(control) {
            wrong.push("must not contain control characters");
        }
        if v.chars().any(is_bidi_control) {
            wrong.push(BIDI_MESSAGE);
        }
        wrong
    }
}

/// A text field's rule: from `min` to `max` characters (Unicode scalar values), each of
/// them what `chars` allows. The one place a field's limit is declared: the validator
/// checks it and the OpenAPI document states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRule {
    pub min: usize,
    pub max: usize,
    pub chars: Chars,
}

impl TextRule {
    /// Up to `max` characters, empty allowed.
    pub const fn text(max: usize) -> Self {
        TextRule {
            min: 0,
            max,
            chars: Chars::Text,
        }
    }

    /// 1 to `max` characters, not all white space.
    pub const fn not_blank(max: usize) -> Self {
        TextRule {
            min: 1,
            max,
            chars: Chars::NotBlank,
        }
    }

    /// What is wrong with `v`: its length first, then its characters.
    pub fn check(self, v: &str) -> Vec<String> {
        let n = v.chars().count();
        let mut wrong = Vec::new();
        if n < self.min || n > self.max {
            wrong.push(format!(
                "must be {} to {} characters long",
                self.min, self.max
            ));
        }
        let length_wrong = !wrong.is_empty();
        // A text of the wrong length is not also called blank.
        let chars = self.chars.check(v).into_iter();
        let chars = chars.filter(|m| !length_wrong || *m != "must not be blank");
        wrong.extend(chars.map(str::to_owned));
        wrong
    }
}

/// What a request field may be, declared once per field in [`super::RequestBody::RULES`]:
/// the OpenAPI document states it (`api::contract`) and the handler checks it with the
/// same constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Text(TextRule),
    /// Text with a grammar of its own (a duration, a connection type): its pattern and its
    /// longest length, both also what the field's own parser accepts.
    Grammar {
        pattern: &'static str,
        max: usize,
    },
    /// A whole number from `min` to `max`.
    Whole {
        min: i64,
        max: i64,
    },
    /// A list of at most this many items.
    Items(usize),
}

/// The most field names a validation error's `detail` lists.
const DETAIL_NAMES: usize = 20;

/// Validation messages collected by field, answered together as one `validation_error`.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// Checks a text field that was sent against its rule: its length in characters, then
    /// what it may hold (each failing part named once).
    pub fn text(&mut self, field: &str, value: Option<&str>, rule: TextRule) {
        let Some(v) = value else { return };
        for message in rule.check(v) {
            self.add(field, message);
        }
    }

    /// A field that must be sent.
    pub fn required<T>(&mut self, field: &str, value: &Option<T>) {
        if value.is_none() {
            self.add(field, "is required");
        }
    }

    pub fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        // Each name is at most 64 characters ([`field_label`]), and at most
        // [`DETAIL_NAMES`] are listed, so the detail stays short however many fields a body
        // gets wrong; `errors` names them all.
        let names: Vec<&str> = self
            .0
            .keys()
            .take(DETAIL_NAMES)
            .map(String::as_str)
            .collect();
        let more = match self.0.len().saturating_sub(DETAIL_NAMES) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let mut e = ApiError::with_detail(
            Code::ValidationError,
            format!("Not valid: {}{more}.", names.join(", ")),
        );
        e.errors = self.0;
        Err(e)
    }
}

/// A field name the client sent, as an error may name it back: never a key, never long.
pub fn field_label(name: &str) -> String {
    if looks_like_key(name) {
        "[redacted]".to_owned()
    } else {
        name.chars().take(64).collect()
    }
}
