//! API keys: scoped, stored as SHA-256 hashes, shown once, verified fast.
//!
//! Verification first checks the key's format and checksum (no database), then a
//! small in-process cache of recently verified keys (at most the builder's
//! `api_key_cache_ttl`, 10 s by default and at most), then the database. Revoking or
//! rotating a key clears this process's cache entry at once; other processes see the
//! revoke when their entry ages out, within the TTL. An expiry is checked on every
//! verify, cached or not. `last_used_at` is written at most once a minute per key, in
//! a spawned task, never on the request path.
//!
//! Rotation issues a new key with the same name, scopes and expiry; the old key stays
//! valid for a grace period (24 h by default) and then stops, as if expired.

pub mod format;
pub(crate) mod model;
pub mod scope;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

pub use model::{ApiKey, ApiKeyPatch, CreatedApiKey, NewApiKey};
pub use scope::{allows, Scope, ACTIONS, RESOURCES};

use crate::audit::AuditEntry;
use crate::error::{AuthFailure, Errors};
use crate::ids::{ApiKeyId, WorkspaceId};
use crate::leads::parse::ACTOR_MAX;
use crate::secret::SecretString;
use crate::store::{self, api_keys::KeyChange};
use crate::{Crm, Error, Result};

/// Longest key name, in characters.
pub const NAME_MAX: usize = 100;
/// Most scopes on a key.
pub const SCOPES_MAX: usize = 32;
/// Default rotation grace period.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::hours(24);

/// What a verified key may do; cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedKey {
    /// The key's id.
    pub key_id: ApiKeyId,
    /// The workspace the key acts in.
    pub workspace_id: WorkspaceId,
    /// Its scopes.
    pub scopes: Arc<[Scope]>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

impl VerifiedKey {
    /// Whether the key may do `required` (`resource:action`).
    pub fn allows(&self, required: &str) -> bool {
        allows(&self.scopes, required)
    }

    /// `Ok` when the key may do `required`, else [`Error::Forbidden`].
    pub fn require(&self, required: &str) -> Result<()> {
        if self.allows(required) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

/// Most keys the verify cache holds; past it, aged entries go, then all.
const CACHE_MAX: usize = 10_000;

struct Cached {
    key: VerifiedKey,
    cached_at: DateTime<Utc>,
    touched_at: Option<DateTime<Utc>>,
}

/// The positive cache of verified keys, keyed by the SHA-256 of the key.
pub(crate) struct KeyCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

/// The cached keys, and a generation that every `forget` moves on: a verify that read
/// the database before a revoke cannot cache what it read after the revoke forgot it.
#[derive(Default)]
struct Entries {
    generation: u64,
    keys: HashMap<[u8; 32], Cached>,
}

impl KeyCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation to hand back to [`KeyCache::insert`], read before the database.
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A fresh entry, and whether `last_used_at` is due (then marked as written).
    fn get(&self, hash: &[u8; 32], now: DateTime<Utc>) -> Option<(VerifiedKey, bool)> {
        let mut entries = self.lock();
        let e = entries.keys.get_mut(hash)?;
        if now - e.cached_at >= self.ttl || now < e.cached_at {
            entries.keys.remove(hash);
            return None;
        }
        let due = touch_due(e.touched_at, now);
        if due {
            e.touched_at = Some(now);
        }
        Some((e.key.clone(), due))
    }

    /// Caches what a verify read, unless a key was forgotten since `generation` was
    /// read (the read may predate a revoke; the next verify reads anew).
    fn insert(
        &self,
        generation: u64,
        hash: [u8; 32],
        key: VerifiedKey,
        now: DateTime<Utc>,
        touched_at: Option<DateTime<Utc>>,
    ) {
        let mut entries = self.lock();
        if entries.generation != generation {
            return;
        }
        if entries.keys.len() >= CACHE_MAX {
            let ttl = self.ttl;
            entries.keys.retain(|_, e| now - e.cached_at < ttl);
            if entries.keys.len() >= CACHE_MAX {
                entries.keys.clear();
            }
        }
        entries.keys.insert(
            hash,
            Cached {
                key,
                cached_at: now,
                touched_at,
            },
        );
    }

    pub(crate) fn forget(&self, id: ApiKeyId) {
        let mut entries = self.lock();
        entries.generation = entries.generation.wrapping_add(1);
        entries.keys.retain(|_, e| e.key.key_id != id);
    }
}

/// A revoked key is frozen: no update or rotation rewrites the record its audit
/// trail describes.
fn frozen(k: &ApiKey) -> Result<()> {
    match k.revoked_at {
        Some(_) => Err(Error::InvalidState {
            code: "key_revoked",
            message: "the API key is revoked; a revoked key cannot be changed".into(),
        }),
        None => Ok(()),
    }
}

/// `last_used_at` is written at most once a minute per key.
fn touch_due(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last.is_none_or(|t| now - t >= Duration::minutes(1))
}

fn check_name(e: &mut Errors, name: &str) -> Option<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > NAME_MAX || n.contains('\0') {
        e.add("name", format!("must be 1-{NAME_MAX} characters"));
        return None;
    }
    Some(n.to_owned())
}

fn check_scopes(e: &mut Errors, scopes: &[String]) -> Vec<Scope> {
    if scopes.is_empty() {
        e.add("scopes", "at least one scope is required");
    }
    if scopes.len() > SCOPES_MAX {
        e.add("scopes", format!("at most {SCOPES_MAX} scopes"));
        return Vec::new();
    }
    let mut out: Vec<Scope> = Vec::new();
    for (i, s) in scopes.iter().enumerate() {
        if let Some(s) = e.take(&format!("scopes[{i}]"), Scope::parse(s)) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// The API-key service of one workspace; from [`crate::Workspace::api_keys`].
#[derive(Clone, Debug)]
pub struct ApiKeys {
    crm: Crm,
    ws: WorkspaceId,
    actor: Option<String>,
}

impl ApiKeys {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self {
            crm,
            ws,
            actor: None,
        }
    }

    /// The same service, recording `actor` (up to 200 characters) as `created_by` and
    /// in the audit log.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    fn actor(&self) -> Result<Option<&str>> {
        match &self.actor {
            Some(a) if a.trim().is_empty() || a.chars().count() > ACTOR_MAX || a.contains('\0') => {
                Err(Error::invalid(
                    "actor",
                    format!("must be 1-{ACTOR_MAX} characters"),
                ))
            }
            a => Ok(a.as_deref()),
        }
    }

    fn audit(
        &self,
        action: &str,
        key: &ApiKey,
        details: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<AuditEntry> {
        Ok(AuditEntry::new(
            self.ws,
            self.actor()?,
            action,
            ("api_key", key.id.to_string()),
            details,
            now,
        ))
    }

    /// Makes a key. Its secret is in the result and nowhere else.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create(&self, input: NewApiKey) -> Result<CreatedApiKey> {
        let now = self.crm.now();
        let mut e = Errors::default();
        let name = check_name(&mut e, &input.name);
        let scopes = check_scopes(&mut e, &input.scopes);
        if input.expires_at.is_some_and(|t| t <= now) {
            e.add("expires_at", "must be in the future");
        }
        let actor = self.actor();
        e.finish()?;
        let (key, secret, hash) = self.new_key(
            name.unwrap_or_default(),
            scopes,
            input.expires_at,
            actor?,
            now,
        );
        let audit = self.audit(
            "api_key.created",
            &key,
            json!({ "name": key.name, "scopes": key.scopes }),
            now,
        )?;
        store::api_keys::create_api_key(
            self.crm.pool(),
            &key,
            &hash,
            &audit,
            self.crm.quotas().api_keys,
        )
        .await?;
        Ok(CreatedApiKey { key, secret })
    }

    fn new_key(
        &self,
        name: String,
        scopes: Vec<Scope>,
        expires_at: Option<DateTime<Utc>>,
        actor: Option<&str>,
        now: DateTime<Utc>,
    ) -> (ApiKey, SecretString, String) {
        let prefix = self.crm.api_key_prefix();
        let secret = format::generate(prefix);
        let key = ApiKey {
            id: ApiKeyId::new(),
            workspace_id: self.ws,
            name,
            display_prefix: format::display_prefix(&secret, prefix),
            scopes,
            created_by: actor.map(str::to_owned),
            created_at: now,
            updated_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        };
        let hash = format::hex(&format::hash(&secret));
        (key, SecretString::new(secret), hash)
    }

    /// Every key of the workspace, oldest first, without secrets.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self) -> Result<Vec<ApiKey>> {
        store::api_keys::list_api_keys(self.crm.pool(), self.ws).await
    }

    /// One key.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, api_key_id = %id))]
    pub async fn get(&self, id: ApiKeyId) -> Result<ApiKey> {
        store::api_keys::get_api_key(self.crm.pool(), self.ws, id).await
    }

    /// Renames or re-scopes a key. A scope change applies to this process at once and
    /// to others within the cache TTL. A revoked key is frozen: `InvalidState`
    /// (`key_revoked`).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, api_key_id = %id))]
    pub async fn update(&self, id: ApiKeyId, patch: ApiKeyPatch) -> Result<ApiKey> {
        let mut e = Errors::default();
        let name = patch.name.as_deref().and_then(|n| check_name(&mut e, n));
        let scopes = patch.scopes.as_deref().map(|s| check_scopes(&mut e, s));
        let actor = self.actor();
        e.finish()?;
        actor?;
        let now = self.crm.now();
        let key = self
            .change(id, |mut k| {
                frozen(&k)?;
                if let Some(n) = name {
                    k.name = n;
                }
                if let Some(s) = scopes {
                    k.scopes = s;
                }
                k.updated_at = now;
                let audit = self.audit(
                    "api_key.updated",
                    &k,
                    json!({ "name": k.name, "scopes": k.scopes }),
                    now,
                )?;
                Ok(KeyChange {
                    key: k,
                    new_key: None,
                    audit,
                })
            })
            .await?;
        Ok(key.0)
    }

    /// Revokes a key: it stops working at once in this process and within the cache
    /// TTL elsewhere. The audit entry records what the key was (name, scopes, expiry);
    /// from then on the key is frozen: updating or rotating it is `InvalidState`
    /// (`key_revoked`, 409 over HTTP), and revoking it again returns it unchanged
    /// (no second audit entry).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, api_key_id = %id))]
    pub async fn revoke(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.actor()?;
        // Revoking a revoked key answers with it as it is (a retried DELETE); only a
        // revoke racing another one meets the frozen key below.
        let current = self.get(id).await?;
        if current.revoked_at.is_some() {
            return Ok(current);
        }
        let now = self.crm.now();
        let (key, _) = self
            .change(id, |mut k| {
                frozen(&k)?;
                k.revoked_at = Some(now);
                // What the key was when revoked: its record is frozen from now on.
                let audit = self.audit(
                    "api_key.revoked",
                    &k,
                    json!({ "name": k.name, "scopes": k.scopes, "expires_at": k.expires_at }),
                    now,
                )?;
                Ok(KeyChange {
                    key: k,
                    new_key: None,
                    audit,
                })
            })
            .await?;
        Ok(key)
    }

    /// Issues a new key with the same name, scopes and expiry; the old one keeps
    /// working for `grace` (default 24 h; zero stops it at once). Returns the new key.
    /// `InvalidState` for a revoked key (`key_revoked`) and for one rotated already
    /// (`key_rotated`: rotate its replacement); a rotation is not counted against
    /// the workspace's quota of keys.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, api_key_id = %id))]
    pub async fn rotate(&self, id: ApiKeyId, grace: Option<Duration>) -> Result<CreatedApiKey> {
        let grace = grace.unwrap_or(DEFAULT_ROTATION_GRACE);
        if grace < Duration::zero() || grace > Duration::days(30) {
            return Err(Error::invalid("grace", "must be between 0 and 30 days"));
        }
        let actor = self.actor()?;
        let now = self.crm.now();
        let mut secret = None;
        let (_, new_key) = self
            .change(id, |mut old| {
                frozen(&old)?;
                if old.replaced_by.is_some() {
                    // One replacement per key: rotating the old key again would mint
                    // keys past the workspace's quota.
                    return Err(Error::InvalidState {
                        code: "key_rotated",
                        message: "the API key was rotated already; rotate its replacement".into(),
                    });
                }
                let (new, s, hash) = self.new_key(
                    old.name.clone(),
                    old.scopes.clone(),
                    old.expires_at,
                    actor,
                    now,
                );
                let end = now + grace;
                old.expires_at = Some(old.expires_at.map_or(end, |t| t.min(end)));
                old.replaced_by = Some(new.id);
                secret = Some(s);
                let audit = self.audit(
                    "api_key.rotated",
                    &old,
                    json!({ "new_key_id": new.id, "grace_seconds": grace.num_seconds() }),
                    now,
                )?;
                Ok(KeyChange {
                    key: old,
                    new_key: Some((new, hash)),
                    audit,
                })
            })
            .await?;
        match (new_key, secret) {
            (Some(key), Some(secret)) => Ok(CreatedApiKey { key, secret }),
            _ => Err(Error::Config("rotation produced no key".into())),
        }
    }

    async fn change<F>(&self, id: ApiKeyId, f: F) -> Result<(ApiKey, Option<ApiKey>)>
    where
        F: FnOnce(ApiKey) -> Result<KeyChange> + Send,
    {
        let r = store::api_keys::change_api_key(self.crm.pool(), self.ws, id, f).await;
        // Whatever happened, this process forgets the key; the next verify reads it anew.
        self.crm.key_cache().forget(id);
        r
    }
}

impl Crm {
    /// Verifies an API key: its workspace, id and scopes, or
    /// [`Error::Unauthorized`] with [`AuthFailure::MalformedKey`] (decided without
    /// the database), `UnknownKey`, `RevokedKey` or `ExpiredKey`.
    #[tracing::instrument(skip_all)]
    pub async fn verify_api_key(&self, key: &str) -> Result<VerifiedKey> {
        if !format::well_formed(key, self.api_key_prefix()) {
            return Err(Error::unauthorized(AuthFailure::MalformedKey));
        }
        let hash = format::hash(key);
        let now = self.now();
        let cache = self.key_cache();
        if let Some((verified, touch)) = cache.get(&hash, now) {
            if verified.expires_at.is_some_and(|t| t <= now) {
                return Err(Error::unauthorized(AuthFailure::ExpiredKey));
            }
            if touch {
                self.touch_api_key(verified.key_id, now);
            }
            return Ok(verified);
        }
        let generation = cache.generation();
        let hex = format::hex(&hash);
        let stored = store::api_keys::find_api_key(self.pool(), &hex)
            .await?
            .ok_or(Error::unauthorized(AuthFailure::UnknownKey))?;
        if stored.revoked_at.is_some() {
            return Err(Error::unauthorized(AuthFailure::RevokedKey));
        }
        if stored.expires_at.is_some_and(|t| t <= now) {
            return Err(Error::unauthorized(AuthFailure::ExpiredKey));
        }
        let verified = VerifiedKey {
            key_id: stored.id,
            workspace_id: stored.workspace_id,
            scopes: stored.scopes.into(),
            expires_at: stored.expires_at,
        };
        let touch = touch_due(stored.last_used_at, now);
        cache.insert(
            generation,
            hash,
            verified.clone(),
            now,
            if touch {
                Some(now)
            } else {
                stored.last_used_at
            },
        );
        if touch {
            self.touch_api_key(verified.key_id, now);
        }
        Ok(verified)
    }

    /// What a key may do (for `GET /api/v1/me`): its metadata, after verifying it.
    #[tracing::instrument(skip_all)]
    pub async fn api_key_me(&self, key: &str) -> Result<ApiKey> {
        let v = self.verify_api_key(key).await?;
        self.workspace(v.workspace_id)
            .api_keys()
            .get(v.key_id)
            .await
    }

    /// Writes `last_used_at` in a task of its own, so verify never waits for it. A
    /// failure is logged and otherwise ignored: the next due verify writes again.
    fn touch_api_key(&self, id: ApiKeyId, now: DateTime<Utc>) {
        let crm = self.clone();
        tokio::spawn(async move {
            let r = store::api_keys::touch_api_key(crm.pool(), id, now).await;
            if let Err(err) = r {
                tracing::warn!(key_id = %id, error = %err, "could not record API key use");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15, item 23: a verify that read the key just before a revoke cached it
    /// just after the revoke cleared the cache, so the revoked key kept working for
    /// the cache's TTL. What was read before a `forget` is not cached any more.
    #[test]
    fn a_verify_that_read_before_a_revoke_cannot_cache_the_key() {
        let cache = KeyCache::new(Duration::seconds(10));
        let now = Utc::now();
        let key = VerifiedKey {
            key_id: ApiKeyId::new(),
            workspace_id: WorkspaceId::DEFAULT,
            scopes: Arc::from(Vec::new()),
            expires_at: None,
        };
        let hash = [7u8; 32];
        let read_at = cache.generation(); // the verify reads the database…
        cache.forget(key.key_id); // …the revoke commits and forgets…
        cache.insert(read_at, hash, key.clone(), now, None); // …then the verify caches
        assert!(
            cache.get(&hash, now).is_none(),
            "the revoked key was cached"
        );
        // Without a revoke in between, the key is cached as before.
        let read_at = cache.generation();
        cache.insert(read_at, hash, key, now, None);
        assert!(cache.get(&hash, now).is_some());
    }
}
