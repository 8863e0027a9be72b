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

    /// Checks the length of a text field that was sent (in characters), that it holds no
    /// control characters other than line breaks and tabs, and, when it may not be empty,
    /// that it is not blank either.
    pub fn text(&mut self, field: &str, value: Option<&str>, min: usize, max: usize) {
        let Some(v) = value else { return };
        let n = v.chars().count();
        if n < min || n > max {
            self.add(field, format!("must be {min} to {max} characters long"));
        } else if min > 0 && v.trim().is_empty() {
            self.add(field, "must not be blank");
        }
        if v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
        {
            self.add(field, "must not contain control characters");
        }
        if v.chars().any(is_bidi_control) {
            self.add(field, BIDI_MESSAGE);
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
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        let mut e = ApiError::with_detail(
            Code::ValidationError,
            format!("Not valid: {}.", names.join(", ")),
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
