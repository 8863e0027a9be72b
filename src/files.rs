//! Temporary files on disk: `<data dir>/files/<id>`, named by id only, so nothing a client
//! sends becomes part of a path. The database holds their metadata; keeping the bytes out
//! of it keeps the database and its write-ahead log small.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::clock::Clock;
use crate::store::Store;

/// At most this much of a text file is given to a model.
pub const TEXT_CONTEXT_BYTES: usize = 100 * 1024;

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Creates `<data_dir>/files` if needed.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("files");
        std::fs::create_dir_all(&dir)?;
        Ok(FileStore { dir })
    }

    pub fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.simple().to_string())
    }

    /// Where an upload is written until it is complete.
    pub fn partial_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{}.part", id.simple()))
    }

    /// Up to [`TEXT_CONTEXT_BYTES`] of a file, as text.
    pub async fn read_text(&self, id: Uuid) -> std::io::Result<String> {
        let file = tokio::fs::File::open(self.path(id)).await?;
        let mut buf = Vec::new();
        file.take(TEXT_CONTEXT_BYTES as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    pub async fn remove(&self, id: Uuid) {
        for path in [self.path(id), self.partial_path(id)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, file = %id, "could not remove a file"),
            }
        }
    }
}

impl FileStore {
    /// Removes partial uploads last written more than `age` ago: what a crash in the middle
    /// of an upload leaves behind (they have no row, so expiry never finds them). An upload
    /// in progress writes to its file all the time and is never that old.
    pub async fn remove_abandoned_parts(&self, age: Duration) -> std::io::Result<usize> {
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await? {
            if !entry.file_name().to_string_lossy().ends_with(".part") {
                continue;
            }
            let modified = entry.metadata().await.and_then(|m| m.modified());
            let old = modified.is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
            if !old {
                continue;
            }
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "could not remove an abandoned upload"),
            }
        }
        Ok(removed)
    }
}

/// Partial uploads untouched for this long were abandoned by a crash.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Whether a file is text a model can read.
pub fn is_text(content_type: &str, name: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    ct.starts_with("text/")
        || matches!(
            ct.as_str(),
            "application/json" | "application/xml" | "application/x-ndjson"
        )
        || [".txt", ".md", ".markdown", ".csv", ".json", ".xml", ".log"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Removes expired files from disk, then from the database, and abandoned partial
/// uploads, every `every`.
pub async fn sweep(store: Arc<dyn Store>, files: FileStore, every: Duration, clock: Clock) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match files.remove_abandoned_parts(ABANDONED_AFTER).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "abandoned partial uploads removed"),
            Err(e) => tracing::warn!(error = %e, "could not look for abandoned uploads"),
        }
        loop {
            let expired = match store.expired_files(clock.now(), 500).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for expired files");
                    break;
                }
            };
            if expired.is_empty() {
                break;
            }
            for id in &expired {
                files.remove(*id).await;
            }
            if let Err(e) = store.forget_files(&expired).await {
                tracing::warn!(error = %e, "could not forget expired files");
                break;
            }
            tracing::debug!(count = expired.len(), "expired files removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_partial_uploads_older_than_the_age_are_removed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path()).unwrap();
        let (old, recent, kept) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for path in [
            files.partial_path(old),
            files.partial_path(recent),
            files.path(kept),
        ] {
            std::fs::write(path, b"bytes").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        for path in [files.partial_path(old), files.path(kept)] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let removed = files.remove_abandoned_parts(ABANDONED_AFTER).await.unwrap();
        assert_eq!(removed, 1);
        assert!(!files.partial_path(old).exists());
        assert!(
            files.partial_path(recent).exists(),
            "too young to be abandoned"
        );
        assert!(
            files.path(kept).exists(),
            "a complete file is expiry's business"
        );
    }
}
