//! Revocation: a deleted or rotated key, or one whose owner left, stops working here and
//! on every replica.
//!
//! Each replica keeps the keys it verified in a [`KeyCache`]. Three things empty it: a
//! change made through this replica ([`keys_changed`]), an announcement through the Redis
//! the replicas share ([`follow_announcements`]), and the database's change counter, which
//! catches changes made anywhere, the command line included ([`watch_changes`]). Whatever
//! the news, no entry outlives the cache lifetime (`Settings::key_cache_ttl`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;

use super::caller::VerifiedKey;
use crate::cluster::Cluster;
use crate::key::KeyDigest;
use crate::store::Store;

/// Keys this server holds as verified, by digest.
#[async_trait]
pub trait KeyCache: Send + Sync + 'static {
    /// The current epoch; an entry read from the database may be stored only if the epoch has
    /// not moved since before the read, so a concurrent invalidation is never undone.
    fn epoch(&self) -> u64;
    fn get(&self, digest: &KeyDigest) -> Option<Arc<VerifiedKey>>;
    fn insert(&self, epoch: u64, key: Arc<VerifiedKey>);
    /// Whether a key with this digest has been verified before, even if the cache has been
    /// emptied since: such keys are exempt from the per-address failure limit.
    fn verified_before(&self, digest: &KeyDigest) -> bool;
    /// Forgets every key: something that could revoke one has changed.
    fn invalidate_all(&self);
}

/// One process's cache. Bounded: past the limit it starts afresh, which only costs lookups.
pub struct InMemoryKeyCache {
    epoch: AtomicU64,
    keys: DashMap<KeyDigest, Arc<VerifiedKey>>,
    /// Survives invalidation, so that a change elsewhere does not lock working keys out of
    /// an address that is being flooded with bad ones.
    seen: DashMap<KeyDigest, ()>,
    capacity: usize,
}

impl InMemoryKeyCache {
    pub fn new(capacity: usize) -> Self {
        InMemoryKeyCache {
            epoch: AtomicU64::new(0),
            keys: DashMap::new(),
            seen: DashMap::new(),
            capacity,
        }
    }
}

impl KeyCache for InMemoryKeyCache {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn get(&self, digest: &KeyDigest) -> Option<Arc<VerifiedKey>> {
        self.keys.get(digest).map(|k| Arc::clone(&k))
    }

    fn insert(&self, epoch: u64, key: Arc<VerifiedKey>) {
        if self.keys.len() >= self.capacity {
            self.invalidate_all();
            return;
        }
        if self.seen.len() >= self.capacity {
            self.seen.clear();
        }
        self.seen.insert(key.digest, ());
        self.keys.insert(key.digest, key);
        // An invalidation that raced with the read above may have missed this entry.
        if self.epoch() != epoch {
            self.keys.clear();
        }
    }

    fn verified_before(&self, digest: &KeyDigest) -> bool {
        self.seen.contains_key(digest)
    }

    fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.keys.clear();
    }
}

/// Watches the database's change counter, so that a delete, rotation or member removal made
/// by another process (the command line, another replica) empties this cache within a second.
pub async fn watch_changes(store: Arc<dyn Store>, keys: Arc<dyn KeyCache>, every: Duration) {
    let mut seen = store.generation().await.ok();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.generation().await {
            Ok(g) if Some(g) != seen => {
                if seen.is_some() {
                    tracing::debug!(
                        generation = g,
                        "keys or members changed; verified keys dropped"
                    );
                }
                keys.invalidate_all();
                seen = Some(g);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the change counter"),
        }
    }
}

/// Keys were deleted or rotated through this replica: forget verified keys here, and tell
/// the other replicas.
pub async fn keys_changed(keys: &dyn KeyCache, cluster: Option<&Cluster>) {
    keys.invalidate_all();
    if let Some(cluster) = cluster {
        cluster.announce_key_change().await;
    }
}

/// Follows the other replicas' announcements for as long as the server runs.
pub async fn follow_announcements(cluster: Arc<Cluster>, keys: Arc<dyn KeyCache>) {
    cluster.run(move || keys.invalidate_all()).await
}

/// Tells running replicas at once that keys changed, from a process that is not one (the
/// command line), through the Redis they share (`SIESTA_REDIS_URL`) if there is one.
/// Without it, or if Redis does not answer, they learn it from the database's change
/// counter within a second; the command has succeeded either way.
pub async fn announce_from_outside() {
    let Some(url) = std::env::var("SIESTA_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return;
    };
    let url = secrecy::SecretString::from(url);
    if let Err(e) = Cluster::announce_from_outside(&url).await {
        eprintln!("warning: could not tell the replicas through Redis: {e}; they will notice within a second");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::caller::sample as verified;

    #[test]
    fn an_entry_read_before_an_invalidation_is_not_kept() {
        let cache = InMemoryKeyCache::new(10);
        let (a, b) = (verified("a"), verified("b"));
        let before = cache.epoch();
        cache.insert(before, Arc::clone(&a));
        assert!(cache.get(&a.digest).is_some());
        cache.invalidate_all();
        assert_eq!(cache.epoch(), before + 1);
        assert!(cache.get(&a.digest).is_none());
        // Read from the database before the invalidation, stored after it: dropped.
        cache.insert(before, Arc::clone(&b));
        assert!(cache.get(&b.digest).is_none());
        cache.insert(cache.epoch(), Arc::clone(&b));
        assert!(cache.get(&b.digest).is_some());
        // Verified once, always exempt from the failure limit; never verified, not.
        assert!(cache.verified_before(&a.digest) && cache.verified_before(&b.digest));
        assert!(!cache.verified_before(&verified("c").digest));
    }

    #[test]
    fn a_full_cache_starts_afresh() {
        let cache = InMemoryKeyCache::new(2);
        let keys = [verified("a"), verified("b"), verified("c")];
        cache.insert(cache.epoch(), Arc::clone(&keys[0]));
        cache.insert(cache.epoch(), Arc::clone(&keys[1]));
        assert!(keys[..2].iter().all(|k| cache.get(&k.digest).is_some()));
        cache.insert(cache.epoch(), Arc::clone(&keys[2]));
        assert!(keys.iter().all(|k| cache.get(&k.digest).is_none()));
        cache.insert(cache.epoch(), Arc::clone(&keys[2]));
        assert!(cache.get(&keys[2].digest).is_some());
    }
}
