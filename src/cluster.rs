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
/// Redis's clock is read in microseconds since the epoch (exact in a Lua number); a
/// bucket's distance ahead of that clock is kept in nanoseconds, as the in-memory limiter
/// keeps it, so both decide alike for every limit up to 10⁹ a minute.
const NANOS: u64 = 1_000_000_000;

/// One GCRA step on a bucket in Redis, on Redis's clock. The bucket holds when it was last
/// written (µs) and how far ahead of that its theoretical arrival time was (ns, at most the
/// burst: about a minute, exact in a Lua number). ARGV: interval and capacity in ns, and
/// whether to count the request (`1`) or only look (`0`). Returns how far ahead of now the
/// arrival time is before the step (ns, 0 if in the past); the caller decides the same way
/// ([`gcra`]) from that number with now = 0.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ahead = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local written, was = string.match(stored, '^(%d+):(%d+)$')
  if written then
    ahead = math.max(tonumber(was) - (now - tonumber(written)) * 1000, 0)
  end
end
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local next_ahead = ahead + interval
if ARGV[3] == '1' and next_ahead <= capacity then
  local ttl = math.ceil(next_ahead / 1000000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f:%.0f', now, next_ahead), 'PX', ttl)
end
return string.format('%.0f', ahead)
";

/// A Redis shared by the replicas, and whether it answers.
pub struct Cluster {
    client: Client,
    connection: ConnectionManager,
    script: Script,
    up: AtomicBool,
    /// Redis answers, but with errors (logged once until it answers normally again).
    refusing: AtomicBool,
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
            refusing: AtomicBool::new(false),
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

    /// A call on a request's path failed. Only a lost connection or a timeout means Redis
    /// is gone; an answer that is an error (a read-only replica after a failover, out of
    /// memory) leaves the replica on Redis, limiting this one request on its own.
    fn failed(&self, e: &redis::RedisError) {
        let unreachable = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal();
        if unreachable {
            self.mark_down(e);
        } else {
            self.metrics.redis_error();
            if !self.refusing.swap(true, Ordering::AcqRel) {
                tracing::warn!(error = ?e.kind(), "Redis answered with an error; limiting on this replica meanwhile");
            }
        }
    }

    fn answered(&self) {
        if self.refusing.load(Ordering::Relaxed) {
            self.refusing.store(false, Ordering::Release);
            tracing::info!("Redis answers normally again");
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
        if let Err(e) = publish(&mut connection).await {
            self.failed(&e);
        }
    }

    /// Announces a key change from a process that is not a replica (the command line).
    pub async fn announce_from_outside(url: &SecretString) -> Result<(), String> {
        let client = Client::open(url.expose_secret())
            .map_err(|e| format!("SIESTA_REDIS_URL is not a Redis URL ({:?})", e.kind()))?;
        let publish = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            publish(&mut connection).await
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
        let ahead: String = self
            .script
            .key(format!("{PREFIX}{bucket}"))
            .arg(quota.interval(NANOS))
            .arg(quota.capacity(NANOS))
            .arg(if count { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await?;
        let ahead = ahead.parse::<u64>().map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a duration"))
        })?;
        Ok(gcra(ahead, 0, quota, NANOS).0)
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

/// Announces a key change on the channel every replica follows.
async fn publish(connection: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg("keys")
        .query_async::<i64>(connection)
        .await
        .map(drop)
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
    /// Redis keeps its own time, the same for every replica; `clock` serves the fallback.
    pub fn new(cluster: Arc<Cluster>, clock: crate::clock::Clock) -> Self {
        SharedRateLimiter {
            cluster,
            local: InMemoryRateLimiter::new(clock),
        }
    }
}

#[async_trait]
impl RateLimiter for SharedRateLimiter {
    async fn check(&self, bucket: Bucket, quota: Quota) -> Decision {
        if self.cluster.is_up() {
            match self.cluster.step(bucket, quota, true).await {
                Ok(decision) => {
                    self.cluster.answered();
                    return decision;
                }
                Err(e) => self.cluster.failed(&e),
            }
        }
        self.local.check(bucket, quota).await
    }

    async fn peek(&self, bucket: Bucket, quota: Quota) -> Option<Decision> {
        if self.cluster.is_up() {
            match self.cluster.step(bucket, quota, false).await {
                Ok(decision) => {
                    self.cluster.answered();
                    return (!decision.allowed).then_some(decision);
                }
                Err(e) => self.cluster.failed(&e),
            }
        }
        self.local.peek(bucket, quota).await
    }

    fn prune(&self) {
        // Buckets in Redis expire by themselves.
        self.local.prune();
    }
}
