//! Where attachment bytes live: the [`Storage`] plugin trait, and [`FsStorage`],
//! the embedded default (a directory, typically under the app's data directory).
//! An S3-compatible backend is in `crm-integrations` (feature `s3`).
//!
//! crm names every object itself: a key is `{workspace_id}/{uuid}` (under the
//! workspace's prefix; a key of its own for every upload), never a caller's file
//! name, so a name like
//! `../../etc/passwd` is only ever metadata. A backend still refuses any key that
//! is not [`valid_key`], as a second wall.
//!
//! The database is the truth: an object is written before the row that points to
//! it and deleted after the row is gone, so a crash between the two leaves an
//! object no row names, never a row without its bytes. [`crate::Crm::housekeep`]
//! finds those orphans (objects older than an hour that no row names) and deletes
//! them, and reports how many it found.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{Error, Result};

/// A boxed future, so backends can sit behind `dyn Storage`.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// An object's bytes, as they arrive.
pub type ByteStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// One stored object, as [`Storage::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: DateTime<Utc>,
}

/// What an object is, for a backend that keeps it with the bytes (S3 then serves
/// presigned downloads with the right type and file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo<'a> {
    /// The type its bytes were sniffed as (`application/pdf`).
    pub content_type: &'a str,
    /// The name a download should be saved as.
    pub file_name: &'a str,
}

/// A place to keep attachment bytes. Every method takes a key crm made
/// ([`valid_key`]). A backend that cannot be reached (a full disk, S3 down) answers
/// [`Error::Storage`] (503 over HTTP): the caller's database write is then not made
/// or, for a delete, already made.
pub trait Storage: Send + Sync + 'static {
    /// What it is (`filesystem`, `s3`), for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Writes the object whole, replacing one with the same key. A reader never
    /// sees a half-written object. `info` is the object's type and download name,
    /// for a backend that keeps them.
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes, info: ObjectInfo<'a>)
        -> StorageFuture<'a, ()>;

    /// The object's bytes as a stream; `NotFound { entity: "file" }` when there is
    /// no such object.
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ByteStream>;

    /// Deletes the object; deleting one that is not there is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()>;

    /// Every object whose key starts with `prefix` (`""`: all), in no set order.
    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<StoredObject>>;

    /// A URL anyone holding it can download the object from until `expires_in`
    /// passes (served with the [`ObjectInfo`] it was put with), for a backend that
    /// has such links (S3's presigned URLs); `None` (the default): crm signs its
    /// own links, served through the router.
    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        expires_in: Duration,
    ) -> StorageFuture<'a, Option<String>> {
        let _ = (key, expires_in);
        Box::pin(async { Ok(None) })
    }
}

/// Whether `key` is one crm could have made: 1–512 characters of lower-case ASCII
/// letters, digits, `-`, `_`, `.` and `/`, in `/`-separated parts that are neither
/// empty nor `.` or `..`. Backends refuse any other with a `Storage` error.
pub fn valid_key(key: &str) -> bool {
    (1..=512).contains(&key.len())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'/')
        })
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// A whole object from its stream (`size`, when known, saves reallocations); a
/// `Storage` error when the stream fails midway.
pub async fn collect(mut body: ByteStream, size: usize) -> Result<Bytes> {
    use futures_util::TryStreamExt;
    let mut out = Vec::with_capacity(size);
    while let Some(chunk) = body.try_next().await.map_err(|e| {
        tracing::error!(error = %e, "file storage: a read failed midway");
        Error::Storage("the file could not be read".into())
    })? {
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

fn checked(key: &str) -> Result<&str> {
    if valid_key(key) {
        Ok(key)
    } else {
        Err(Error::Storage("not a storage key crm makes".into()))
    }
}

/// The mark of a file [`FsStorage::put`] is still writing (renamed into place when
/// whole); one a crash left behind is an orphan like any other.
const PARTIAL: &str = ".part-";

/// Objects as files under one directory (created when first written to, as its
/// subdirectories, with mode 0700 on Unix): the key
/// is the path below it. Writes go to a temporary file in the same directory,
/// flushed to disk and then renamed into place, so an object is whole or absent.
/// No signed URLs: crm serves the bytes itself.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage under `root`. Nothing is touched until the first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory it stores under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        Ok(self.root.join(checked(key)?))
    }
}

fn io_failed(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| {
        tracing::error!(error = %e, "file storage: {what} failed");
        Error::Storage(format!("the file could not be {what}"))
    }
}

impl Storage for FsStorage {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        bytes: Bytes,
        _info: ObjectInfo<'a>,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let path = self.path(key)?;
            let failed = io_failed("stored");
            if let Some(dir) = path.parent() {
                let mut builder = tokio::fs::DirBuilder::new();
                builder.recursive(true);
                // Only the server's user may list or read the files.
                #[cfg(unix)]
                builder.mode(0o700);
                builder.create(dir).await.map_err(&failed)?;
            }
            let mut partial = path.clone().into_os_string();
            partial.push(format!("{PARTIAL}{}", uuid::Uuid::now_v7().simple()));
            let partial = PathBuf::from(partial);
            let written = async {
                let mut file = tokio::fs::File::create(&partial).await?;
                file.write_all(&bytes).await?;
                file.sync_all().await?;
                tokio::fs::rename(&partial, &path).await?;
                // The rename is durable once its directory is: the row written next
                // must never outlive the bytes in a power cut.
                #[cfg(unix)]
                if let Some(dir) = path.parent() {
                    tokio::fs::File::open(dir).await?.sync_all().await?;
                }
                Ok::<(), std::io::Error>(())
            }
            .await;
            if let Err(e) = written {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(failed(e));
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ByteStream> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::File::open(&path).await {
                Ok(file) => {
                    let stream = tokio_util::io::ReaderStream::new(file);
                    Ok(Box::pin(stream) as ByteStream)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::NotFound { entity: "file" })
                }
                Err(e) => Err(io_failed("read")(e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_failed("deleted")(e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<StoredObject>> {
        Box::pin(async move {
            let root = self.root.clone();
            let prefix = prefix.to_owned();
            tokio::task::spawn_blocking(move || walk(&root, &prefix))
                .await
                .map_err(|_| Error::Storage("the file listing stopped".into()))?
                .map_err(io_failed("listed"))
        })
    }
}

/// Every file under `root` whose key starts with `prefix`.
fn walk(root: &Path, prefix: &str) -> std::io::Result<Vec<StoredObject>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // A file renamed or deleted while the walk goes by is no longer there.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let path = entry.path();
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if key.starts_with(prefix) {
                let modified = meta
                    .modified()
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_else(|_| Utc::now());
                out.push(StoredObject {
                    key,
                    size: meta.len(),
                    modified,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_crm_makes_are_valid_and_nothing_else_is() {
        assert!(valid_key(
            "0190a0b0-0000-7000-8000-000000000001/0190a0b0-0000-7000-8000-000000000002"
        ));
        for bad in [
            "", "/abs", "a//b", "../x", "a/../b", "a/./b", "a/", "A/b", "a b", "a\\b", "a\0b", "é",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(!valid_key(&"a".repeat(513)));
    }
}
