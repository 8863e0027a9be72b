//! Credentials in URLs: a key sent where a URL would carry it is refused, and a URL is
//! logged with anything shaped like a key redacted.

use axum::http::Uri;

use crate::key::looks_like_key;

/// Query parameter names that would carry a key; matched in any case.
const CREDENTIAL_PARAMS: [&str; 4] = ["api_key", "apikey", "x-api-key", "x_api_key"];

fn is_credential_param(name: &str) -> bool {
    CREDENTIAL_PARAMS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(name))
}

/// Parameters that carry a secret legitimately (a realtime session's one-time secret): kept
/// out of the logs, but not refused.
fn is_secret_param(name: &str) -> bool {
    is_credential_param(name) || name.eq_ignore_ascii_case("clientSecret")
}

/// Whether text holds a key as sent, or once percent-decoded up to three times: a key sent
/// as `sai%255Flive%255F...` is still a key (and [`looks_like_key`] ignores letter case).
fn holds_key(text: &str) -> bool {
    let mut current = std::borrow::Cow::Borrowed(text);
    for _ in 0..=DECODE_ROUNDS {
        if looks_like_key(&current) {
            return true;
        }
        if !current.contains('%') {
            return false;
        }
        let next = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if next == *current {
            return false;
        }
        current = std::borrow::Cow::Owned(next);
    }
    false
}

/// How many layers of percent-encoding are looked through for a key.
const DECODE_ROUNDS: usize = 3;

/// True when the URL carries a credential: a parameter named like one, or any part of the
/// path or query shaped like a key, whatever it is called.
pub fn has_credentials(uri: &Uri) -> bool {
    if holds_key(uri.path()) {
        return true;
    }
    uri.query().is_some_and(|q| {
        holds_key(q)
            || form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| is_credential_param(&k) || holds_key(&k) || holds_key(&v))
    })
}

/// The path and query as logs may show them: anything that could be a credential redacted.
pub fn loggable_uri(uri: &Uri) -> String {
    let path = if holds_key(uri.path()) {
        uri.path()
            .split('/')
            .map(|seg| if holds_key(seg) { "[REDACTED]" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    } else {
        uri.path().to_owned()
    };
    let Some(query) = uri.query() else {
        return path;
    };
    let pairs = form_urlencoded::parse(query.as_bytes());
    let secret = |k: &str, v: &str| is_secret_param(k) || holds_key(k) || holds_key(v);
    if !holds_key(query) && !pairs.clone().any(|(k, v)| secret(&k, &v)) {
        return format!("{path}?{query}");
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if secret(&k, &v) {
            let name = if holds_key(&k) { "[REDACTED]" } else { &k };
            out.append_pair(name, "[REDACTED]");
        } else {
            out.append_pair(&k, &v);
        }
    }
    format!("{path}?{}", out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sai_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn credentials_are_found_under_any_name_and_anywhere_in_the_url() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(has_credentials(&uri("/api/v1/Me?API_KEY=x")));
        assert!(has_credentials(&uri(&format!("/api/v1/Me?token={KEY}"))));
        assert!(has_credentials(&uri(&format!("/api/v1/Agent/{KEY}"))));
        let encoded = KEY.replace('_', "%5F");
        assert!(has_credentials(&uri(&format!("/api/v1/Agent/{encoded}"))));
        assert!(has_credentials(&uri(&format!(
            "/api/v1/Me?token={encoded}"
        ))));
        let twice = KEY.replace('_', "%255F");
        let thrice = KEY.replace('_', "%25255F");
        assert!(has_credentials(&uri(&format!("/api/v1/Agent/{twice}"))));
        assert!(has_credentials(&uri(&format!("/api/v1/Me?q={thrice}"))));
        assert!(has_credentials(&uri(&format!(
            "/api/v1/Me?q={}",
            KEY.to_uppercase()
        ))));
        assert!(!has_credentials(&uri("/api/v1/Agent?Search=sai&Limit=5")));
        // Only the two prefixes make a key's shape; words that end like one do not.
        assert!(!has_credentials(&uri("/api/v1/Agent?Search=go_live_today")));
        assert!(!has_credentials(&uri("/api/v1/Agent?Search=unit_test_run")));
    }

    #[test]
    fn logged_urls_never_hold_a_key() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        for u in [
            format!("/api/v1/Me?apiKey={KEY}"),
            format!("/api/v1/Me?token={KEY}&Limit=5"),
            format!("/api/v1/Agent/{KEY}/response"),
            format!("/api/v1/Me?{KEY}=1"),
            format!("/api/v1/Agent/{}/response", KEY.replace('_', "%5f")),
        ] {
            let logged = loggable_uri(&uri(&u));
            assert!(!logged.contains(&KEY[9..]), "{logged}");
            assert!(logged.contains("REDACTED"), "{logged}");
        }
        assert_eq!(
            loggable_uri(&uri("/api/v1/Agent?Limit=5")),
            "/api/v1/Agent?Limit=5"
        );
    }
}
