//! What replicas share through Redis: rate-limit buckets, and the news that keys changed.
//!
//! Redis is optional. With it, a key's quota is one bucket for every replica (one GCRA step
//! per request, in a script, so concurrent replicas never both spend the last token), and a
//! delete or rotation through one replica empties every replica's key cache at once. When
//! Redis cannot be reached, each replica limits with its own buckets, says so on `/readyz`,
//! in the log and in `siesta_redis_up`, and goes back to Redis when it answers again; no
//! request fails because of it. Revocation then still reaches every replica through the
//! database's change counter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use secrecy::{ExposeSecret, SecretString};

use crate::metrics::Metrics;
use crate::ratelimit::{gcra, Bucket, Decision, InMemoryRateLimiter, Quota, RateLimiter};

/// Where key changes are announced.
const CHANNEL: &str = "siesta:keys-changed";
/// Bucket names start with this, so one Redis can serve other things too.
const PREFIX: &str = "siesta:rate:";
/// Longest wait for Redis on a request's path before the replica limits on its own.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an unreachable Redis is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Bucket times in Redis are microseconds since the epoch: exact in a Lua number.
const MICROS: u64 = 1_000_000;

/// One GCRA step on a bucket in Redis, on Redis's clock. ARGV: interval, capacity, and
/// whether to count the request (`1`) or only look (`0`). Returns the bucket's theoretical
/// arrival time before the step and the time now; the caller decides the same way
/// ([`gcra`]) from those two numbers.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local next_tat = math.max(tat, now) + interval
if ARGV[3] == '1' and next_tat - now <= capacity then
  local ttl = math.ceil((next_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl)
end
return {string.format('%.0f', tat), string.format('%.0f', now)}
";

/// A Redis shared by the replicas, and whether it answers.
pub struct Cluster {
    client: Client,
    connection: ConnectionManager,
    script: Script,
    up: AtomicBool,
    metrics: Metrics,
}

impl Cluster {
    /// Prepares the connection; Redis need not be up yet. Fails only on a malformed URL.
    pub fn open(url: &SecretString, metrics: Metrics) -> Result<Arc<Cluster>, String> {
        let client = Client::open(url.expose_secret())
            .map_err(|e| format!("SIESTA_REDIS_URL is not a Redis URL ({:?})", e.kind()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("Redis connection ({:?})", e.kind()))?;
        metrics.redis_up(false);
        Ok(Arc::new(Cluster {
            client,
            connection,
            script: Script::new(GCRA),
            up: AtomicBool::new(false),
            metrics,
        }))
    }

    /// Whether Redis answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("Redis reachable: rate limits are shared by every replica");
            self.metrics.redis_up(true);
        }
    }

    fn mark_down(&self, e: &redis::RedisError) {
        self.metrics.redis_error();
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = ?e.kind(),
                "Redis unreachable: rate limits are per replica until it answers again"
            );
            self.metrics.redis_up(false);
        }
    }

    /// Tells every replica that keys changed; best effort, as the change counter in the
    /// database carries the same news a moment later.
    pub async fn announce_key_change(&self) {
        if !self.is_up() {
            return;
        }
        let mut connection = self.connection.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg("keys")
            .query_async(&mut connection)
            .await;
        if let Err(e) = sent {
            self.mark_down(&e);
        }
    }

    /// Announces a key change from a process that is not a replica (the command line).
    pub async fn announce_from_outside(url: &SecretString) -> Result<(), String> {
        let client = Client::open(url.expose_secret())
            .map_err(|e| format!("SIESTA_REDIS_URL is not a Redis URL ({:?})", e.kind()))?;
        let publish = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg("keys")
                .query_async::<i64>(&mut connection)
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Redis did not take it ({:?})", e.kind())),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING").query_async(&mut connection).await
    }

    async fn step(
        &self,
        bucket: Bucket,
        quota: Quota,
        count: bool,
    ) -> redis::RedisResult<Decision> {
        let mut connection = self.connection.clone();
        let (tat, now): (String, String) = self
            .script
            .key(format!("{PREFIX}{bucket}"))
            .arg(quota.interval(MICROS))
            .arg(quota.capacity(MICROS))
            .arg(if count { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await?;
        let number = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a time"))
            })
        };
        Ok(gcra(number(&tat)?, number(&now)?, quota, MICROS).0)
    }

    /// Keeps watching Redis: tries it again every second while it is unreachable, and
    /// empties `on_change`'s cache whenever another replica announces a key change (and on
    /// every reconnection, since announcements may have been missed meanwhile).
    pub async fn run(self: Arc<Self>, on_change: impl Fn() + Send + Sync + 'static) {
        loop {
            if !self.is_up() {
                match self.ping().await {
                    Ok(()) => self.mark_up(),
                    Err(e) => self.mark_down(&e),
                }
            }
            if self.is_up() {
                self.listen(&on_change).await;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Follows the announcements until the subscription breaks.
    async fn listen(&self, on_change: &impl Fn()) {
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        });
        let mut pubsub = match subscribed.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return self.mark_down(&e),
            Err(_) => return self.mark_down(&timed_out()),
        };
        on_change();
        let mut messages = pubsub.on_message();
        let mut check = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                message = messages.next() => {
                    if message.is_none() {
                        // Redis went away, or dropped this subscriber.
                        return self.mark_down(&lost("subscription ended"));
                    }
                    tracing::debug!("another replica changed keys; verified keys dropped");
                    on_change();
                }
                // A silent network can leave the subscription hanging: when requests find
                // Redis gone, start over rather than wait on it.
                _ = check.tick() => if !self.is_up() { return },
            }
        }
    }
}

fn timed_out() -> redis::RedisError {
    lost("timed out")
}

fn lost(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, what))
}

/// Rate limits in Redis while it answers, in this replica's memory while it does not.
pub struct SharedRateLimiter {
    cluster: Arc<Cluster>,
    local: InMemoryRateLimiter,
}

impl SharedRateLimiter {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        SharedRateLimiter {
            cluster,
            local: InMemoryRateLimiter::default(),
        }
    }
}

#[async_trait]
impl RateLimiter for SharedRateLimiter {
    async fn check(&self, bucket: Bucket, quota: Quota) -> Decision {
        if self.cluster.is_up() {
            match self.cluster.step(bucket, quota, true).await {
                Ok(decision) => return decision,
                Err(e) => self.cluster.mark_down(&e),
            }
        }
        self.local.check(bucket, quota).await
    }

    async fn peek(&self, bucket: Bucket, quota: Quota) -> Option<Decision> {
        if self.cluster.is_up() {
            match self.cluster.step(bucket, quota, false).await {
                Ok(decision) => return (!decision.allowed).then_some(decision),
                Err(e) => self.cluster.mark_down(&e),
            }
        }
        self.local.peek(bucket, quota).await
    }

    fn prune(&self) {
        // Buckets in Redis expire by themselves.
        self.local.prune();
    }
}
