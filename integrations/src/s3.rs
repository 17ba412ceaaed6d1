//! S3-compatible file storage for attachments (feature `s3`): AWS S3, MinIO,
//! Cloudflare R2, Backblaze B2, … through the `object_store` crate.
//!
//! ```no_run
//! # async fn run() -> crm_core::Result<()> {
//! let storage = crm_integrations::s3::S3Storage::builder("crm-files")
//!     .region("eu-west-1")
//!     .credentials("AKIA…", "…")
//!     .prefix("prod/")
//!     .build()?;
//! let crm = crm_core::Crm::builder().storage(storage).connect().await?;
//! # Ok(()) }
//! ```
//!
//! Objects are kept under `{prefix}{workspace_id}/{uuid}` with their
//! `Content-Type` and `Content-Disposition: attachment` set, so a presigned download
//! ([`Storage::signed_url`]) is served as crm's own downloads are. Requests time out
//! after 30 s (connecting after 5 s) and are retried by `object_store` for at most
//! 10 s; a bucket that cannot be reached is `Error::Storage` (503 over HTTP).

use std::time::Duration;

use bytes::Bytes;
use crm_core::storage::{ByteStream, ObjectInfo, Storage, StorageFuture, StoredObject};
use crm_core::{Error, Result};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, ClientOptions, ObjectStore, PutOptions, RetryConfig};

/// Attachments in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {
    store: AmazonS3,
    prefix: String,
}

/// Settings of an [`S3Storage`]; from [`S3Storage::builder`]. Its `Debug` shows
/// the bucket and the prefix, never the credentials.
pub struct S3StorageBuilder {
    inner: AmazonS3Builder,
    prefix: String,
}

impl S3Storage {
    /// Settings for the bucket `bucket`: AWS's endpoint, credentials from
    /// [`S3StorageBuilder::credentials`] (or the `AWS_*` environment variables with
    /// [`S3StorageBuilder::from_env`]).
    pub fn builder(bucket: impl Into<String>) -> S3StorageBuilder {
        S3StorageBuilder {
            inner: limits(AmazonS3Builder::new()).with_bucket_name(bucket),
            prefix: String::new(),
        }
    }

    fn path(&self, key: &str) -> Result<Path> {
        if !crm_core::storage::valid_key(key) {
            return Err(Error::Storage("not a storage key crm makes".into()));
        }
        Ok(Path::from(format!("{}{key}", self.prefix)))
    }
}

impl std::fmt::Debug for S3StorageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3StorageBuilder")
            .field(
                "bucket",
                &self
                    .inner
                    .get_config_value(&object_store::aws::AmazonS3ConfigKey::Bucket),
            )
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3StorageBuilder {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT` and the other variables `object_store` knows; settings made
    /// after this call win.
    pub fn from_env(mut self) -> Self {
        let mut env = limits(AmazonS3Builder::from_env());
        if let Some(bucket) = self
            .inner
            .get_config_value(&object_store::aws::AmazonS3ConfigKey::Bucket)
        {
            env = env.with_bucket_name(bucket);
        }
        self.inner = env;
        self
    }

    /// The region (default `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.inner = self.inner.with_region(region);
        self
    }

    /// An access key and its secret.
    pub fn credentials(mut self, key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.inner = self
            .inner
            .with_access_key_id(key_id)
            .with_secret_access_key(secret);
        self
    }

    /// Another S3-compatible server (`http://127.0.0.1:9000` for MinIO, an R2
    /// account URL), addressed path-style; `http://` is allowed.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.inner = self
            .inner
            .with_allow_http(url.starts_with("http://"))
            .with_endpoint(url)
            .with_virtual_hosted_style_request(false);
        self
    }

    /// Keeps every object under this prefix (`prod/`, so one bucket can serve
    /// several deployments); lower-case ASCII letters, digits, `-`, `_`, `.`, `/`,
    /// ending in `/`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The storage; `Config` error for settings `object_store` refuses or a bad
    /// prefix. Nothing is asked of the bucket until the first file.
    pub fn build(self) -> Result<S3Storage> {
        let prefix_ok = self.prefix.is_empty()
            || self
                .prefix
                .strip_suffix('/')
                .is_some_and(crm_core::storage::valid_key);
        if !prefix_ok {
            return Err(Error::Config(
                "the S3 prefix must be parts of lower-case letters, digits, - _ . ending in /"
                    .into(),
            ));
        }
        let store = self
            .inner
            .build()
            .map_err(|e| Error::Config(format!("S3 storage: {e}")))?;
        Ok(S3Storage {
            store,
            prefix: self.prefix,
        })
    }
}

/// The timeouts and retries of every request (see the module docs).
fn limits(b: AmazonS3Builder) -> AmazonS3Builder {
    let options = ClientOptions::new()
        .with_timeout(Duration::from_secs(30))
        .with_connect_timeout(Duration::from_secs(5));
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    };
    b.with_client_options(options).with_retry(retry)
}

/// What a failed request becomes: `NotFound` for a missing object, else a
/// `Storage` error whose text names the operation (the cause, which can carry the
/// bucket's URL, goes to the log).
fn failed(what: &'static str) -> impl Fn(object_store::Error) -> Error {
    move |e| match e {
        object_store::Error::NotFound { .. } => Error::NotFound { entity: "file" },
        e => {
            tracing::error!(error = %e, "S3 storage: {what} failed");
            Error::Storage(format!("the file could not be {what}"))
        }
    }
}

impl Storage for S3Storage {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        bytes: Bytes,
        info: ObjectInfo<'a>,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(key)?;
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, info.content_type.to_owned().into());
            attributes.insert(
                Attribute::ContentDisposition,
                crm_core::attachments::content_disposition(info.file_name).into(),
            );
            let options = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            self.store
                .put_opts(&path, bytes.into(), options)
                .await
                .map_err(failed("stored"))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ByteStream> {
        Box::pin(async move {
            let path = self.path(key)?;
            let got = self.store.get(&path).await.map_err(failed("read"))?;
            let stream = got
                .into_stream()
                .map_err(|e| std::io::Error::other(e.to_string()));
            Ok(stream.boxed())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(key)?;
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(failed("deleted")(e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<StoredObject>> {
        Box::pin(async move {
            let all = format!("{}{prefix}", self.prefix);
            // `object_store` lists by whole path parts; the filter keeps a partial
            // last part exact.
            let under = all.rsplit_once('/').map(|(dir, _)| Path::from(dir));
            let objects: Vec<_> = self
                .store
                .list(under.as_ref())
                .try_collect()
                .await
                .map_err(failed("listed"))?;
            Ok(objects
                .into_iter()
                .filter_map(|o| {
                    let key = o.location.as_ref().strip_prefix(&self.prefix)?.to_owned();
                    key.starts_with(prefix).then_some(StoredObject {
                        key,
                        size: o.size,
                        modified: o.last_modified,
                    })
                })
                .collect())
        })
    }

    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        expires_in: Duration,
    ) -> StorageFuture<'a, Option<String>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let url = self
                .store
                .signed_url(http::Method::GET, &path, expires_in)
                .await
                .map_err(failed("signed"))?;
            Ok(Some(url.to_string()))
        })
    }
}
