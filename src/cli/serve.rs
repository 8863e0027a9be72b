//! `siesta serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use axum::http::HeaderValue;
use clap::Args;
use secrecy::SecretString;

use super::common::{CliError, CliResult};
use crate::duration::HumanDuration;
use crate::provider::{ChatCompletions, OfflineResponder, Provider};
use crate::settings::Settings;
use crate::{bootstrap, shutdown_signal, store, Server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SIESTA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Requests per minute for keys without their own limit (N or N/min).
    #[arg(long, env = "SIESTA_RATE_LIMIT", default_value_t = Settings::default().rate_limit, value_parser = parse_per_minute)]
    pub rate_limit: u32,
    /// Failed authentications per minute from one client address before it is refused.
    #[arg(long, env = "SIESTA_AUTH_FAILURE_LIMIT", default_value_t = Settings::default().auth_failure_limit, value_parser = parse_per_minute)]
    pub auth_failure_limit: u32,
    /// Comma-separated origins whose pages may call the API from a browser.
    #[arg(long, env = "SIESTA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Longest time a request may take.
    #[arg(long, env = "SIESTA_REQUEST_TIMEOUT", default_value_t = HumanDuration(Settings::default().request_timeout))]
    pub request_timeout: HumanDuration,
    /// Longest time a client may take to send a request's headers.
    #[arg(long, env = "SIESTA_HEADER_READ_TIMEOUT", default_value_t = HumanDuration(Settings::default().header_read_timeout))]
    pub header_read_timeout: HumanDuration,
    /// Where uploaded files are kept (created if missing).
    #[arg(long, env = "SIESTA_DATA_DIR", default_value_os_t = Settings::default().data_dir)]
    pub data_dir: std::path::PathBuf,
    /// Largest file upload, in bytes.
    #[arg(long, env = "SIESTA_MAX_FILE_BYTES", default_value_t = Settings::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// How long an uploaded file lives before it is removed.
    #[arg(long, env = "SIESTA_FILE_TTL", default_value_t = HumanDuration(Settings::default().file_ttl))]
    pub file_ttl: HumanDuration,
    /// Base URL of an OpenAI-compatible chat-completions API, such as
    /// http://localhost:11434/v1; without it agents answer with the offline responder.
    /// The API key, if the server needs one, is read from SIESTA_LLM_API_KEY only.
    #[arg(long, env = "SIESTA_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// The model to ask when an agent names none (required with --llm-base-url).
    #[arg(long, env = "SIESTA_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Longest wait for the model to start answering, and between two pieces of an answer.
    #[arg(long, env = "SIESTA_LLM_TIMEOUT", default_value_t = HumanDuration(Settings::default().provider_timeout))]
    pub llm_timeout: HumanDuration,
    /// Redis shared by several replicas (redis://host:6379): one rate-limit bucket per key
    /// for all of them, and key deletes and rotations announced to each at once. Without
    /// it, limits are per process
    #[arg(long, env = "SIESTA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Comma-separated addresses or networks (10.0.0.0/8) of load balancers whose
    /// X-Forwarded-For names the client, for the per-address limit on failed
    /// authentications; without it, the connection's address is the client
    #[arg(long, env = "SIESTA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The URL clients reach this server at (https://api.example.com): every absolute URL
    /// the server hands out starts with it, never with a request's Host. Default: http://
    /// and the bound address
    #[arg(long, env = "SIESTA_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Open connections at most; beyond it a connection is answered 503 and closed.
    /// Default: 90 % of the process's open-file limit
    #[arg(long, env = "SIESTA_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// The longest a streamed answer may last; then it ends with a provider_timeout event.
    #[arg(long, env = "SIESTA_STREAM_TIMEOUT", default_value_t = HumanDuration(Settings::default().stream_timeout))]
    pub stream_timeout: HumanDuration,
    /// Characters of a conversation's earlier messages sent to the model with a new one
    /// (the newest that fit).
    #[arg(long, env = "SIESTA_HISTORY_CHARS", default_value_t = Settings::default().history_chars)]
    pub history_chars: usize,
    /// Messages a conversation may hold, both roles counted; a message that would take it
    /// past this with its answer is refused with 409.
    #[arg(long, env = "SIESTA_MAX_CONVERSATION_MESSAGES", default_value_t = Settings::default().max_conversation_messages, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_conversation_messages: u32,
}

/// `http(s)://host[:port]`, with no path, query or user information; kept without a
/// trailing slash so paths can be appended.
fn parse_public_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let bad = || format!("'{s}' is not a public URL such as https://api.example.com");
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let authority: axum::http::uri::Authority = rest.parse().map_err(|_| bad())?;
    if rest.is_empty() || authority.as_str().contains('@') || authority.as_str() != rest {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// An address (a network of one) or a network in CIDR notation.
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an address or a network such as 10.0.0.0/8"))
}

/// The model provider the flags describe.
fn provider(args: &ServeArgs) -> Result<Arc<dyn Provider>, CliError> {
    let Some(base) = args
        .llm_base_url
        .as_deref()
        .filter(|b| !b.trim().is_empty())
    else {
        return Ok(Arc::new(OfflineResponder));
    };
    let model = args
        .llm_model
        .clone()
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| {
            CliError(
                "SIESTA_LLM_MODEL (or --llm-model) is required with SIESTA_LLM_BASE_URL".into(),
            )
        })?;
    let api_key = std::env::var("SIESTA_LLM_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .map(SecretString::from);
    Ok(Arc::new(
        ChatCompletions::new(base, api_key, model).map_err(CliError)?,
    ))
}

fn parse_per_minute(s: &str) -> Result<u32, String> {
    let n = s.trim().strip_suffix("/min").unwrap_or(s.trim());
    match n.parse::<u32>() {
        Ok(n) if (1..=crate::duration::MAX_RATE_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a rate limit: use N or N/min with N from 1 to 1000000000"
        )),
    }
}

/// The database URL as it may be logged: without a password.
/// A URL as the log may show it: without user information, and without its query, where
/// a password can also travel (`?password=`, `?pass=`).
fn redacted_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?[REDACTED]"),
        None => (url, ""),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://[REDACTED]@{}", &base[..scheme], &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    base + query
}

pub async fn run(database: &str, args: ServeArgs) -> CliResult {
    let mut cors_origins = Vec::new();
    for origin in args
        .cors_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
    {
        let value = HeaderValue::from_str(origin)
            .map_err(|_| CliError(format!("SIESTA_CORS_ORIGINS: '{origin}' is not an origin")))?;
        cors_origins.push(value);
    }
    let settings = Settings {
        rate_limit: args.rate_limit,
        auth_failure_limit: args.auth_failure_limit,
        cors_origins,
        request_timeout: nonzero(args.request_timeout, "request timeout")?,
        header_read_timeout: nonzero(args.header_read_timeout, "header read timeout")?,
        provider_timeout: nonzero(args.llm_timeout, "model timeout")?,
        data_dir: args.data_dir.clone(),
        max_file_bytes: args.max_file_bytes,
        file_ttl: nonzero(args.file_ttl, "file lifetime")?,
        redis_url: args.redis_url.clone().map(secrecy::SecretString::from),
        trusted_proxies: args.trusted_proxies.clone(),
        public_url: args.public_url.clone(),
        max_connections: args.max_connections.map(|n| n as usize),
        stream_timeout: nonzero(args.stream_timeout, "stream timeout")?,
        history_chars: args.history_chars,
        max_conversation_messages: args.max_conversation_messages,
        ..Settings::default()
    };
    tracing::info!(
        listen = %args.listen,
        database = %redacted_url(database),
        rate_limit = settings.rate_limit,
        auth_failure_limit = settings.auth_failure_limit,
        cors_origins = ?args.cors_origins,
        request_timeout = ?settings.request_timeout,
        header_read_timeout = ?settings.header_read_timeout,
        llm_base_url = args.llm_base_url.as_deref().map(redacted_url).as_deref().unwrap_or("(offline responder)"),
        llm_model = args.llm_model.as_deref().unwrap_or("-"),
        data_dir = %args.data_dir.display(),
        max_file_bytes = args.max_file_bytes,
        trusted_proxies = ?args.trusted_proxies,
        public_url = args.public_url.as_deref().unwrap_or("(the listen address)"),
        max_connections = ?args.max_connections,
        stream_timeout = ?settings.stream_timeout,
        history_chars = settings.history_chars,
        max_conversation_messages = settings.max_conversation_messages,
        redis = args.redis_url.as_deref().map(redacted_url).as_deref().unwrap_or("(none: limits per process)"),
        "starting"
    );
    let store = store::open(database)
        .await
        .map_err(|e| CliError(format!("cannot open the database: {e}")))?;
    // Bind before the first start creates its key, so a busy port cannot swallow the only
    // announcement of that key.
    let provider = provider(&args)?;
    let server = Server::bind_with(args.listen, settings, store.clone(), provider)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", args.listen)))?;
    let first = bootstrap::first_start(&*store)
        .await
        .map_err(|e| CliError(format!("first start failed: {e}")))?;
    let addr = server.local_addr().map_err(|e| CliError(e.to_string()))?;
    let shutdown = shutdown_signal();
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{addr}");
        if let Some(first) = &first {
            let _ = write!(
                stdout,
                "{}",
                bootstrap::announcement(first, server.public_url())
            );
        }
        let _ = stdout.flush();
    }
    drop(first);
    tracing::info!(%addr, "listening");
    server.run(shutdown).await;
    Ok(())
}

fn nonzero(d: HumanDuration, what: &str) -> Result<Duration, CliError> {
    if d.0.is_zero() {
        return Err(CliError(format!("the {what} must be longer than 0")));
    }
    Ok(d.0)
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn a_public_url_is_a_scheme_and_an_authority() {
        use super::parse_public_url as p;
        assert_eq!(
            p("https://api.example.com/").unwrap(),
            "https://api.example.com"
        );
        assert_eq!(p(" http://10.0.0.5:8080 ").unwrap(), "http://10.0.0.5:8080");
        assert_eq!(p("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in [
            "api.example.com",
            "ftp://api.example.com",
            "https://",
            "https://api.example.com/siesta",
            "https://user:pw@api.example.com",
            "https://api.example.com?x=1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_logged_without_credentials() {
        assert_eq!(
            redacted_url("postgres://u:secret@db:5432/siesta"),
            "postgres://[REDACTED]@db:5432/siesta"
        );
        assert_eq!(
            redacted_url("postgres://db/siesta?password=secret&max_connections=4"),
            "postgres://db/siesta?[REDACTED]"
        );
        assert_eq!(
            redacted_url("redis+unix:///run/redis.sock?pass=secret"),
            "redis+unix:///run/redis.sock?[REDACTED]"
        );
        assert_eq!(redacted_url("sqlite://siesta.db"), "sqlite://siesta.db");
    }
}
