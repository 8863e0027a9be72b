//! API keys: their format, generation, parsing and the digest that is stored.
//!
//! A key reads `sai_<env>_<body><check>`: `body` is 40 base62 characters from the
//! operating system's CSPRNG and `check` is the CRC-32 of everything before it, as six
//! base62 digits. The plaintext lives only in [`ApiKey`], whose `Debug` and `Display`
//! redact it; the database only ever sees a [`KeyDigest`].

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 40;
const CHECK_LEN: usize = 6;
/// `sai_live_` and `sai_test_` have the same length.
const PREFIX_LEN: usize = 9;
pub const KEY_LEN: usize = PREFIX_LEN + BODY_LEN + CHECK_LEN;

/// Whether a key is meant for production traffic or for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key may do. Each scope includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET and HEAD.
    Read,
    /// Read, plus creating, changing and deleting resources.
    Write,
    /// Write, plus API-key management and the audit log.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plaintext API key. It never prints itself.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Draws a new key from the operating system's CSPRNG.
    pub fn generate(env: Environment) -> Self {
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str("sai_");
        key.push_str(env.as_str());
        key.push('_');
        push_random_base62(&mut key, BODY_LEN);
        let check = checksum(key.as_bytes());
        key.push_str(&check);
        ApiKey(SecretString::from(key))
    }

    /// Checks prefix, length, alphabet and checksum, without touching any storage.
    pub fn parse(presented: &str) -> Result<Self, MalformedKey> {
        let bytes = presented.as_bytes();
        if bytes.len() != KEY_LEN {
            return Err(MalformedKey);
        }
        if !(presented.starts_with("sai_live_") || presented.starts_with("sai_test_")) {
            return Err(MalformedKey);
        }
        let rest = &bytes[PREFIX_LEN..];
        if !rest.iter().all(u8::is_ascii_alphanumeric) {
            return Err(MalformedKey);
        }
        let (signed, check) = bytes.split_at(KEY_LEN - CHECK_LEN);
        let expected = checksum(signed);
        // Both sides are public once the key is known to be well formed, but comparing in
        // constant time costs nothing here.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), check)) {
            return Err(MalformedKey);
        }
        Ok(ApiKey(SecretString::from(presented.to_owned())))
    }

    pub fn environment(&self) -> Environment {
        if self.0.expose_secret().as_bytes()[4] == b'l' {
            Environment::Live
        } else {
            Environment::Test
        }
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.0.expose_secret().as_bytes())
    }

    /// `sai_live_Ab3x…9fQz`: enough to tell keys apart in a list, far too little to use.
    pub fn hint(&self) -> String {
        let k = self.0.expose_secret();
        format!(
            "{}{}…{}",
            &k[..PREFIX_LEN],
            &k[PREFIX_LEN..PREFIX_LEN + 4],
            &k[KEY_LEN - 4..]
        )
    }

    /// The plaintext, for the one response that hands a new key to its owner.
    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Appends `n` base62 characters from the operating system's CSPRNG.
pub fn push_random_base62(out: &mut String, n: usize) {
    let mut pool = [0u8; 64];
    let mut taken = 0;
    while taken < n {
        getrandom::fill(&mut pool).expect("the operating system's random source failed");
        for c in pool.iter().filter_map(|&b| base62(b)) {
            if taken == n {
                break;
            }
            out.push(c);
            taken += 1;
        }
    }
    pool.fill(0);
}

/// The character a random byte stands for, or `None` for the top eight values: 248 is
/// 4 × 62, so rejecting the rest keeps every character equally likely.
fn base62(b: u8) -> Option<char> {
    (b < 248).then(|| ALPHABET[(b % 62) as usize] as char)
}

/// Whether text holds something shaped like one of our keys, wherever it was sent: one of
/// the two prefixes, in any letter case (`SAI_LIVE_...` is still a pasted key).
pub fn looks_like_key(text: &str) -> bool {
    text.as_bytes().windows(PREFIX_LEN).any(|w| {
        w[..4].eq_ignore_ascii_case(b"sai_")
            && (w[4..].eq_ignore_ascii_case(b"live_") || w[4..].eq_ignore_ascii_case(b"test_"))
    })
}

/// The presented value is not a key this server could ever have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedKey;

/// SHA-256 of a key: what the database stores and what verified keys are cached by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(bytes: &[u8]) -> Self {
        KeyDigest(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(KeyDigest(bytes.try_into().ok()?))
    }

    /// Compares in constant time: a lookup by hash found the row, this confirms it.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// CRC-32 (IEEE) of `signed`, as six base62 digits, most significant first.
fn checksum(signed: &[u8]) -> String {
    let mut n = crc32fast::hash(signed) as u64;
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_shows_itself_redacted_in_debug_and_display() {
        let key = ApiKey::generate(Environment::Live);
        assert_eq!(format!("{key:?}"), "ApiKey([REDACTED])");
        assert_eq!(format!("{key}"), "[REDACTED]");
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_parse_back() {
        for env in [Environment::Live, Environment::Test] {
            let key = ApiKey::generate(env);
            let s = key.reveal();
            assert_eq!(s.len(), KEY_LEN);
            assert!(s.starts_with(&format!("sai_{env}_")));
            assert!(s[PREFIX_LEN..].bytes().all(|b| b.is_ascii_alphanumeric()));
            let parsed = ApiKey::parse(s).expect("a generated key parses");
            assert_eq!(parsed.environment(), env);
            assert_eq!(parsed.digest(), key.digest());
        }
    }

    #[test]
    fn checksum_is_crc32_in_base62_most_significant_first() {
        // crc32("123456789") = 0xCBF43926 = 3421780262 in base62 is "3jZRME".
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(checksum(b"123456789"), "3jZRME");
        assert_eq!(checksum(b""), "000000");
    }

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = ApiKey::generate(Environment::Live);
        let secret = key.reveal().to_owned();
        assert!(!format!("{key:?}").contains(&secret[PREFIX_LEN..]));
        assert!(!format!("{key}").contains(&secret[PREFIX_LEN..]));
        assert!(!format!("{:?}", key.digest()).contains(&secret[PREFIX_LEN..]));
        assert_eq!(format!("{:?}", key.digest()), "KeyDigest(..)");
    }

    #[test]
    fn every_byte_below_248_stands_for_one_character_and_the_rest_for_none() {
        let mut counts = [0u32; 62];
        for b in 0..=255u8 {
            match base62(b) {
                Some(c) => {
                    assert!(b < 248, "{b}");
                    counts[ALPHABET.iter().position(|&a| a as char == c).unwrap()] += 1;
                }
                None => assert!(b >= 248, "{b}"),
            }
        }
        assert_eq!(counts, [4; 62], "each character four times");
        assert_eq!(base62(0), Some('0'));
        assert_eq!(base62(247), Some('z'));
    }

    #[test]
    fn random_bodies_have_the_asked_length_and_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for n in [0, 1, 63, 64, 65, 200] {
            let mut s = String::from("x");
            push_random_base62(&mut s, n);
            assert_eq!(s.len(), n + 1);
            seen.extend(s[1..].chars());
        }
        // 393 draws miss one of 62 characters with a chance of about 62 · (61/62)^393.
        assert!(seen.len() > 55, "{}", seen.len());
    }

    #[test]
    fn something_shaped_like_a_key_is_recognised_in_any_letter_case() {
        assert!(looks_like_key("x=sai_live_abc"));
        assert!(looks_like_key("SAI_TEST_"));
        assert!(looks_like_key("Sai_Live_"));
        assert!(!looks_like_key("sai_prod_abc"));
        assert!(!looks_like_key("sai_live"));
        assert!(!looks_like_key("xai_live_abc"));
        assert!(!looks_like_key("sai-live_abc"));
    }

    #[test]
    fn hint_shows_prefix_four_characters_and_last_four() {
        let key = ApiKey::generate(Environment::Test);
        let s = key.reveal();
        let hint = key.hint();
        assert_eq!(hint, format!("{}…{}", &s[..13], &s[KEY_LEN - 4..]));
    }

    proptest! {
        #[test]
        fn random_input_never_panics(s in ".{0,80}") {
            let _ = ApiKey::parse(&s);
        }

        #[test]
        fn random_key_shaped_input_is_rejected_unless_the_checksum_holds(
            env in prop_oneof![Just("live"), Just("test")],
            rest in "[0-9A-Za-z]{46}",
        ) {
            let s = format!("sai_{env}_{rest}");
            let ok = ApiKey::parse(&s).is_ok();
            prop_assert_eq!(ok, checksum(&s.as_bytes()[..KEY_LEN - CHECK_LEN]) == rest[40..]);
        }

        #[test]
        fn any_one_changed_character_fails(pos in 0..KEY_LEN, replacement in any::<char>()) {
            let key = ApiKey::generate(Environment::Live);
            let original = key.reveal();
            let mut chars: Vec<char> = original.chars().collect();
            prop_assume!(chars[pos] != replacement);
            chars[pos] = replacement;
            let changed: String = chars.into_iter().collect();
            prop_assert!(ApiKey::parse(&changed).is_err());
        }
    }
}
