//! Console passwords: 12 to 128 characters, kept only as argon2id in PHC form.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// Shortest and longest password, in characters.
pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;

/// argon2id's cost: 19 MiB of memory, two passes, one lane (OWASP's first choice).
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// A password as typed, checked for length; it shows itself nowhere.
pub struct Password(SecretString);

impl Password {
    /// The password, if its length is allowed; else what is wrong with it.
    pub fn new(typed: String) -> Result<Self, String> {
        let chars = typed.chars().count();
        if chars < MIN_CHARS {
            return Err(format!("must be at least {MIN_CHARS} characters"));
        }
        if chars > MAX_CHARS {
            return Err(format!("must be at most {MAX_CHARS} characters"));
        }
        Ok(Password(SecretString::from(typed)))
    }

    /// The PHC string to store: argon2id with a fresh random salt.
    pub fn hash(&self) -> String {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the operating system's random source failed");
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
        hasher()
            .hash_password(self.0.expose_secret().as_bytes(), &salt)
            .expect("argon2id with fixed valid parameters")
            .to_string()
    }

    /// Whether `stored`, a PHC string, is this password's hash.
    pub fn matches(&self, stored: &str) -> bool {
        PasswordHash::new(stored).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(self.0.expose_secret().as_bytes(), &hash)
                .is_ok()
        })
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_in_characters_from_12_to_128() {
        assert!(Password::new("a".repeat(11)).is_err());
        assert!(Password::new("a".repeat(12)).is_ok());
        assert!(Password::new("é".repeat(12)).is_ok());
        assert!(Password::new("a".repeat(128)).is_ok());
        assert!(Password::new("a".repeat(129)).is_err());
    }

    #[test]
    fn a_hash_is_argon2id_with_the_required_cost_and_matches_only_its_password() {
        let password = Password::new("correct horse battery".into()).unwrap();
        let stored = password.hash();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(password.matches(&stored));
        assert!(!Password::new("correct horse battery!".into())
            .unwrap()
            .matches(&stored));
        assert_ne!(stored, password.hash(), "a fresh salt every time");
        assert!(!password.matches("not a hash"));
        assert!(!format!("{password:?}").contains("horse"));
    }
}
