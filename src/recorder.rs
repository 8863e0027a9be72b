//! Buffers the records of reads (audit entries of requests, last-use times) and writes them
//! in batches, so that serving a request never waits for a database write.
//!
//! Requests append to a shared buffer under a short lock and wake nobody; a background task
//! writes the buffer every [`FLUSH_EVERY`], or sooner when it grows large. A crash loses at
//! most the records of the last [`FLUSH_EVERY`] plus one write. Mutations never come through
//! here: they write their audit record in their own transaction.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::store::{AuditRecord, Store};

/// How long a record of a read may wait in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this large is written without waiting for the next tick.
const BATCH: usize = 10_000;
/// Past this many unwritten records (a database that is down), the oldest are dropped and
/// the loss is logged, rather than growing without bound.
const BACKLOG: usize = 200_000;

#[derive(Default)]
struct Buffer {
    audit: Vec<AuditRecord>,
    used: Vec<(Uuid, Uuid, Timestamp)>,
    waiting: Vec<oneshot::Sender<()>>,
}

struct Shared {
    buffer: Mutex<Buffer>,
    wake: Notify,
    closing: AtomicBool,
}

#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

pub struct RecorderTask {
    shared: Arc<Shared>,
    handle: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Starts the writer task; records wait at most `every` (normally [`FLUSH_EVERY`]).
    pub fn start(store: Arc<dyn Store>, every: Duration) -> (Recorder, RecorderTask) {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let handle = tokio::spawn(run(store, Arc::clone(&shared), every));
        (
            Recorder {
                shared: Arc::clone(&shared),
            },
            RecorderTask { shared, handle },
        )
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.shared
            .buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn audit(&self, record: AuditRecord) {
        let full = {
            let mut buffer = self.buffer();
            buffer.audit.push(record);
            buffer.audit.len() == BATCH
        };
        if full {
            self.shared.wake.notify_one();
        }
    }

    pub fn key_used(&self, org_id: Uuid, key_id: Uuid, at: Timestamp) {
        self.buffer().used.push((org_id, key_id, at));
    }

    /// Writes everything recorded so far; returns once it is in the database.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.buffer().waiting.push(done);
        self.shared.wake.notify_one();
        let _ = wait.await;
    }
}

impl RecorderTask {
    /// Writes what is left and stops the task.
    pub async fn finish(self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let _ = self.handle.await;
    }
}

async fn run(store: Arc<dyn Store>, shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut audit = Vec::new();
    let mut used = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.wake.notified() => {}
        }
        let closing = shared.closing.load(Ordering::Acquire);
        let waiting = {
            let mut buffer = shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
            audit.append(&mut buffer.audit);
            used.append(&mut buffer.used);
            mem::take(&mut buffer.waiting)
        };
        write(&*store, &mut audit, &mut used).await;
        for done in waiting {
            let _ = done.send(());
        }
        if closing {
            return;
        }
    }
}

async fn write(
    store: &dyn Store,
    audit: &mut Vec<AuditRecord>,
    used: &mut Vec<(Uuid, Uuid, Timestamp)>,
) {
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
