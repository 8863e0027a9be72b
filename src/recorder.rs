//! Buffers the records of reads (audit entries of requests, last-use times) and writes them
//! in batches, so that serving a request never waits for a database write.
//!
//! A crash loses at most the records of the last [`FLUSH_EVERY`] plus one write. Mutations
//! never come through here: they write their audit record in their own transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::store::{AuditRecord, Store};

/// How long a record of a read may wait in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Records written in one transaction at most.
const BATCH: usize = 5_000;
/// Past this many unwritten records (a database that is down), the oldest are dropped and
/// the loss is logged, rather than growing without bound.
const BACKLOG: usize = 200_000;

enum Entry {
    Audit(Box<AuditRecord>),
    Used(Uuid, Timestamp),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Entry>,
}

pub struct RecorderTask {
    handle: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub fn start(store: Arc<dyn Store>) -> (Recorder, RecorderTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(run(store, rx));
        (Recorder { tx }, RecorderTask { handle })
    }

    pub fn audit(&self, record: AuditRecord) {
        let _ = self.tx.send(Entry::Audit(Box::new(record)));
    }

    pub fn key_used(&self, key_id: Uuid, at: Timestamp) {
        let _ = self.tx.send(Entry::Used(key_id, at));
    }

    /// Writes everything recorded so far; returns once it is in the database.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Entry::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl RecorderTask {
    /// Waits until every handle is dropped and the last records are written.
    pub async fn finish(self) {
        let _ = self.handle.await;
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut audit: Vec<AuditRecord> = Vec::new();
    let mut used: Vec<(Uuid, Timestamp)> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut closed = false;
        let mut due = false;
        tokio::select! {
            entry = rx.recv() => match entry {
                Some(Entry::Audit(r)) => audit.push(*r),
                Some(Entry::Used(k, at)) => used.push((k, at)),
                Some(Entry::Flush(done)) => waiting.push(done),
                None => closed = true,
            },
            _ = tick.tick() => due = true,
        }
        if !(closed || due || !waiting.is_empty() || audit.len() >= BATCH) {
            continue;
        }
        // Whatever else is already queued goes into the same transaction.
        while let Ok(entry) = rx.try_recv() {
            match entry {
                Entry::Audit(r) => audit.push(*r),
                Entry::Used(k, at) => used.push((k, at)),
                Entry::Flush(done) => waiting.push(done),
            }
        }
        write(&*store, &mut audit, &mut used).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

async fn write(store: &dyn Store, audit: &mut Vec<AuditRecord>, used: &mut Vec<(Uuid, Timestamp)>) {
    if audit.is_empty() && used.is_empty() {
        return;
    }
    for attempt in 0..3 {
        match store.record_batch(audit, used).await {
            Ok(()) => {
                audit.clear();
                used.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, records = audit.len(), "could not write request records; will retry");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    if audit.len() > BACKLOG {
        let lost = audit.len() - BACKLOG;
        audit.drain(..lost);
        tracing::error!(
            lost,
            "dropped the oldest request records: the database has not accepted writes"
        );
    }
}
