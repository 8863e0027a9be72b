//! Rate limits with the generic cell rate algorithm (GCRA).
//!
//! A quota of N per minute has an emission interval `T = 60 s / N` and a burst capacity of
//! N: a bucket starts full, N requests may pass at once, and from then on one passes every
//! `T`. A client that spaces its requests at least `T` apart is never refused. The state of
//! a bucket is one number, its theoretical arrival time (TAT), which is what makes the same
//! algorithm easy to share between replicas later.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use uuid::Uuid;

use crate::clock::Clock;

/// A limit of `per_minute` requests a minute with a burst of the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
}

impl Quota {
    pub fn per_minute(n: u32) -> Self {
        Quota {
            per_minute: n.max(1),
        }
    }

    /// The emission interval in units of which `per_second` make a second.
    pub fn interval(self, per_second: u64) -> u64 {
        (60 * per_second / self.per_minute as u64).max(1)
    }

    /// The burst capacity, in the same units.
    pub fn capacity(self, per_second: u64) -> u64 {
        self.interval(per_second) * self.per_minute as u64
    }

    #[cfg(test)]
    fn interval_nanos(self) -> u64 {
        self.interval(NANOS)
    }
}

/// Whose requests a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Every request made with one API key.
    Key(Uuid),
    /// Failed authentications from one client address.
    Address(IpAddr),
}

impl Bucket {
    /// The bucket of a client address's failed authentications: an IPv4 address on its own
    /// (an IPv4-mapped IPv6 address counts as its IPv4 address); an IPv6 address with its
    /// whole /64, the block one host or home is commonly given, so that rotating through
    /// it buys no extra attempts.
    pub fn address(ip: IpAddr) -> Bucket {
        let grouped = match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 64) - 1),
                )),
            },
        };
        Bucket::Address(grouped)
    }
}

impl std::fmt::Display for Bucket {
    /// A name for the bucket in a shared store: a key id or an address, never a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bucket::Key(id) => write!(f, "key:{id}"),
            Bucket::Address(ip) => write!(f, "address:{ip}"),
        }
    }
}

/// The outcome of a check, with what the RateLimit headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that could still pass right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// When refused: whole seconds until a request would pass (at least 1).
    pub retry_after_secs: u64,
}

/// Where bucket state lives: in this process, or shared between replicas.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request against the bucket and says whether it may pass.
    async fn check(&self, bucket: Bucket, quota: Quota) -> Decision;
    /// If the next request would be refused, says so (and when to retry) without counting it.
    async fn peek(&self, bucket: Bucket, quota: Quota) -> Option<Decision>;
    /// Forgets buckets that are full again, so idle clients take no memory.
    fn prune(&self);
}

/// One process's buckets, each a lock-free theoretical arrival time.
pub struct InMemoryRateLimiter {
    clock: Clock,
    origin: Instant,
    buckets: DashMap<Bucket, AtomicU64>,
}

impl Default for InMemoryRateLimiter {
    fn default() -> Self {
        Self::new(Clock::system())
    }
}

impl InMemoryRateLimiter {
    pub fn new(clock: Clock) -> Self {
        InMemoryRateLimiter {
            origin: clock.instant(),
            clock,
            buckets: DashMap::new(),
        }
    }

    fn now(&self) -> u64 {
        // Offset by a day so that "zero" never means "long ago" arithmetic underflows.
        let elapsed = self.clock.instant().saturating_duration_since(self.origin);
        elapsed.as_nanos() as u64 + 86_400_000_000_000
    }

    /// Pure GCRA step in nanoseconds, shared by [`check`](RateLimiter::check) and the tests.
    pub fn step(tat: u64, now: u64, quota: Quota) -> (Decision, Option<u64>) {
        gcra(tat, now, quota, NANOS)
    }
}

const NANOS: u64 = 1_000_000_000;

/// One GCRA step with times in units of which `per_second` make a second: the decision, and
/// the new theoretical arrival time if the request passes. Another implementation (a script
/// in a shared store) that does the same integer arithmetic decides the same.
pub fn gcra(tat: u64, now: u64, quota: Quota, per_second: u64) -> (Decision, Option<u64>) {
    let ceil_secs = |units: u64| units.div_ceil(per_second);
    let t = quota.interval(per_second);
    let capacity = quota.capacity(per_second);
    let new_tat = tat.max(now) + t;
    let ahead = new_tat - now;
    if ahead <= capacity {
        let decision = Decision {
            allowed: true,
            limit: quota.per_minute,
            remaining: ((capacity - ahead) / t) as u32,
            reset_secs: ceil_secs(ahead),
            retry_after_secs: 0,
        };
        (decision, Some(new_tat))
    } else {
        let decision = Decision {
            allowed: false,
            limit: quota.per_minute,
            remaining: 0,
            reset_secs: ceil_secs(tat.max(now) - now),
            retry_after_secs: ceil_secs(ahead - capacity).max(1),
        };
        (decision, None)
    }
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn check(&self, bucket: Bucket, quota: Quota) -> Decision {
        let now = self.now();
        let cell = self
            .buckets
            .entry(bucket)
            .or_insert_with(|| AtomicU64::new(0))
            .downgrade();
        let mut tat = cell.load(Ordering::Acquire);
        loop {
            let (decision, next) = Self::step(tat, now, quota);
            let Some(next) = next else { return decision };
            match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(current) => tat = current,
            }
        }
    }

    async fn peek(&self, bucket: Bucket, quota: Quota) -> Option<Decision> {
        let tat = self.buckets.get(&bucket)?.load(Ordering::Acquire);
        let (decision, _) = Self::step(tat, self.now(), quota);
        (!decision.allowed).then_some(decision)
    }

    fn prune(&self) {
        let now = self.now();
        self.buckets
            .retain(|_, tat| tat.load(Ordering::Acquire) > now);
    }
}

/// How often idle buckets are forgotten.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: u64 = 60_000_000_000;

    #[tokio::test]
    async fn pruning_forgets_a_bucket_the_moment_it_is_full_again_and_keeps_the_others() {
        let clock = Clock::manual(crate::clock::Timestamp(1_795_000_000_000));
        let limiter = InMemoryRateLimiter::new(clock.clone());
        let idle = Bucket::Key(Uuid::now_v7());
        let busy = Bucket::Key(Uuid::now_v7());
        // 60 a minute refills one request in a second; 1 a minute takes a minute.
        limiter.check(idle, Quota::per_minute(60)).await;
        limiter.check(busy, Quota::per_minute(1)).await;
        clock.advance(Duration::from_millis(999));
        limiter.prune();
        assert!(limiter.buckets.contains_key(&idle), "not yet full again");
        clock.advance(Duration::from_millis(1));
        limiter.prune();
        assert!(
            !limiter.buckets.contains_key(&idle),
            "a full bucket takes no memory"
        );
        assert!(
            limiter.buckets.contains_key(&busy),
            "a spent bucket is remembered"
        );
        assert!(limiter.peek(busy, Quota::per_minute(1)).await.is_some());
        clock.advance(Duration::from_secs(59));
        assert!(limiter.peek(busy, Quota::per_minute(1)).await.is_none());
        limiter.prune();
        assert!(limiter.buckets.is_empty());
    }

    #[test]
    fn buckets_are_named_by_key_id_or_address_never_a_secret() {
        let id = Uuid::now_v7();
        assert_eq!(Bucket::Key(id).to_string(), format!("key:{id}"));
        assert_eq!(
            Bucket::address("2001:db8::7".parse().unwrap()).to_string(),
            "address:2001:db8::"
        );
        assert_eq!(
            Bucket::address("192.0.2.7".parse().unwrap()).to_string(),
            "address:192.0.2.7"
        );
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a = |s: &str| Bucket::address(s.parse().unwrap());
        assert_eq!(a("2001:db8::1"), a("2001:db8::ffff:1:2"));
        assert_eq!(
            a("2001:db8::1"),
            Bucket::Address("2001:db8::".parse().unwrap())
        );
        assert_ne!(a("2001:db8::1"), a("2001:db8:0:1::1"));
        assert_eq!(a("::ffff:192.0.2.7"), a("192.0.2.7"));
        assert_ne!(a("192.0.2.7"), a("192.0.2.8"));
    }

    #[test]
    fn a_burst_of_n_passes_and_the_next_is_refused_with_retry_after() {
        let q = Quota::per_minute(10);
        let now = MIN;
        let mut tat = 0;
        for i in 0..10 {
            let (d, next) = InMemoryRateLimiter::step(tat, now, q);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
            tat = next.unwrap();
        }
        let (d, next) = InMemoryRateLimiter::step(tat, now, q);
        assert!(!d.allowed);
        assert!(next.is_none());
        assert_eq!(d.retry_after_secs, 6);
        assert_eq!(d.reset_secs, 60);
    }

    #[test]
    fn retry_after_is_at_least_one_second_even_for_huge_limits() {
        let q = Quota::per_minute(1_000_000_000);
        let (d, _) = InMemoryRateLimiter::step(MIN * 2, MIN, q);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
    }

    proptest! {
        #[test]
        fn a_client_spaced_evenly_under_the_limit_is_never_refused(
            n in 1u32..100_000, requests in 1usize..500, slack in 0u64..1_000,
        ) {
            let q = Quota::per_minute(n);
            let gap = q.interval_nanos() + slack;
            let mut tat = 0;
            let mut now = MIN;
            for _ in 0..requests {
                let (d, next) = InMemoryRateLimiter::step(tat, now, q);
                prop_assert!(d.allowed);
                tat = next.unwrap();
                now += gap;
            }
        }

        #[test]
        fn never_more_than_burst_plus_rate_in_any_window(
            n in 1u32..200, times in proptest::collection::vec(0u64..(3 * MIN), 1..600),
        ) {
            let q = Quota::per_minute(n);
            let mut times = times;
            times.sort_unstable();
            let mut tat = 0;
            let mut passed = 0u64;
            for t in &times {
                let (d, next) = InMemoryRateLimiter::step(tat, MIN + t, q);
                if d.allowed { passed += 1; tat = next.unwrap(); }
            }
            // Over three minutes at most N at once plus N a minute after that.
            prop_assert!(passed <= n as u64 * 4);
        }
    }
}
