//! Rate limiting with GCRA (the generic cell rate algorithm): one timestamp per key,
//! the "theoretical arrival time" (TAT), instead of a counter and a window. A policy
//! of `limit` per `period` admits a burst of `limit` and then one request every
//! `period / limit`; there are no window edges at which twice the budget gets through.
//!
//! Two stores behind [`RateLimitStore`]: [`MemoryStore`] (one process, bounded, idle
//! keys evicted) and, with the `postgres` feature, [`PostgresStore`], where the state
//! is one row per key updated by an atomic `INSERT … ON CONFLICT DO UPDATE … WHERE`,
//! so every app instance on the database draws from the same budget; a busy key
//! takes its budget in slices, so most requests cost no round trip (the bound on
//! the overshoot is in [`PostgresStore`]'s docs). A `Crm` on Postgres uses the
//! Postgres store; on SQLite, the memory store (SQLite is one machine; several
//! processes on one SQLite file each keep their own budget).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::store::Pool;
use crate::{Error, Result};

/// `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Requests admitted in a burst, and per period on average.
    pub limit: u32,
    /// The period.
    pub period: Duration,
}

impl Policy {
    /// `limit` per `period`; `None` unless `limit ≥ 1` and the period is at least
    /// one microsecond per request.
    pub fn new(limit: u32, period: Duration) -> Option<Self> {
        let p = Self { limit, period };
        (limit >= 1 && p.emission_micros() >= 1).then_some(p)
    }

    /// `limit` per minute.
    pub fn per_minute(limit: u32) -> Option<Self> {
        Self::new(limit, Duration::from_secs(60))
    }

    fn period_micros(self) -> i64 {
        i64::try_from(self.period.as_micros()).unwrap_or(i64::MAX / 4)
    }

    fn emission_micros(self) -> i64 {
        self.period_micros() / i64::from(self.limit.max(1))
    }
}

/// The rate-limit key of a client address: an IPv4 address as it is, the /64 network
/// of an IPv6 address (one host gets a whole /64 and could take a new address, and a
/// fresh budget, for every request), an IPv4-mapped IPv6 address as IPv4. Text that is
/// not an address is returned unchanged.
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(bits))
            }
        },
        _ => ip.to_owned(),
    }
}

/// The default policies: `api_key` 100/min, `anonymous_ip` 10/min, `login` 5 per 15
/// min (login attempts per account, see the auth service), `login_ip` 20/min (login
/// attempts per client IP), `password_reset` 5/hour (reset mails per account),
/// `lead_parse` 100/hour (metered lead parses, e.g. AI calls, per workspace),
/// `messages` 1,000/day (messages sent to leads through a provider, per workspace).
pub fn default_policies() -> Vec<(String, Policy)> {
    vec![
        (
            "login_ip".into(),
            Policy {
                limit: 20,
                period: Duration::from_secs(60),
            },
        ),
        (
            "api_key".into(),
            Policy {
                limit: 100,
                period: Duration::from_secs(60),
            },
        ),
        (
            "anonymous_ip".into(),
            Policy {
                limit: 10,
                period: Duration::from_secs(60),
            },
        ),
        (
            "login".into(),
            Policy {
                limit: 5,
                period: Duration::from_secs(15 * 60),
            },
        ),
        (
            "messages".into(),
            Policy {
                limit: 1000,
                period: Duration::from_secs(24 * 60 * 60),
            },
        ),
        (
            "lead_parse".into(),
            Policy {
                limit: 100,
                period: Duration::from_secs(60 * 60),
            },
        ),
        (
            "password_reset".into(),
            Policy {
                limit: 5,
                period: Duration::from_secs(60 * 60),
            },
        ),
        (
            "email_verification".into(),
            Policy {
                limit: 5,
                period: Duration::from_secs(60 * 60),
            },
        ),
    ]
}

/// One decision, with what an HTTP layer puts in `X-RateLimit-*` and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The policy's limit.
    pub limit: u32,
    /// Requests left right now (0 when refused).
    pub remaining: u32,
    /// When the full budget is back.
    pub reset_at: DateTime<Utc>,
    /// When a refused request may try again (`None` when allowed).
    pub retry_after: Option<Duration>,
}

/// A boxed future, so stores can sit behind `dyn RateLimitStore`.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(bool, i64)>> + Send + 'a>>;

/// Where GCRA state lives.
pub trait RateLimitStore: Send + Sync + 'static {
    /// One atomic GCRA step for `key` at `now` (µs since the epoch), with emission
    /// interval `t` and period `p` (µs): when `max(tat, now) + t - p <= now` the
    /// request is admitted and the stored TAT becomes `max(tat, now) + t`. Returns
    /// whether it was admitted and the TAT after the step (`max(tat, now)` when not).
    fn step<'a>(&'a self, key: &'a str, now: i64, t: i64, p: i64) -> StoreFuture<'a>;
}

fn gcra(stored: Option<i64>, now: i64, t: i64, p: i64) -> (bool, i64) {
    let tat = stored.map_or(now, |s| s.max(now));
    let next = tat.saturating_add(t);
    if next - p <= now {
        (true, next)
    } else {
        (false, tat)
    }
}

/// In-process GCRA state: at most `max_keys` keys; keys whose TAT has passed hold no
/// information (a fresh key behaves the same) and are evicted first.
#[derive(Debug)]
pub struct MemoryStore {
    tats: Mutex<lru::LruCache<String, i64>>,
}

impl MemoryStore {
    /// A store holding at most `max_keys` keys (at least 1). When it is full, the key
    /// used least recently goes (its client starts again with a full budget): one
    /// decision costs O(1) however many keys are held.
    pub fn new(max_keys: usize) -> Self {
        let cap = std::num::NonZeroUsize::new(max_keys).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            tats: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl RateLimitStore for MemoryStore {
    fn step<'a>(&'a self, key: &'a str, now: i64, t: i64, p: i64) -> StoreFuture<'a> {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        // `get` marks the key as just used; `put` evicts the least recently used key
        // when the store is full. Both are O(1): no scan under the lock.
        let (allowed, tat) = gcra(tats.get(key).copied(), now, t, p);
        if allowed {
            tats.put(key.to_owned(), tat);
        }
        Box::pin(std::future::ready(Ok((allowed, tat))))
    }
}

/// GCRA state in the `crm_rate_limits` table, shared by every process on the database.
///
/// A busy key does not cost a round trip per request: a process takes a *slice* of
/// the key's budget from the shared state in one statement (the shared TAT moves on
/// by the whole slice) and hands it out locally until it is used up or a second has
/// passed. A slice is as many requests as the key saw in this process in the last
/// second, at most 1% of the policy's limit and at most 100: a key seen once in a
/// while takes one request at a time (exact), and policies of fewer than 200 per
/// period always do (the default `api_key` policy, 100 a minute, is exact and costs
/// one round trip per request). Requests that arrive while a slice is being taken
/// wait for it (at most 100 ms) instead of each making a round trip of their own.
///
/// Accuracy: every request admitted was first counted in the shared state, and a
/// process holds at most one rest of a slice per key (while a slice is being taken,
/// no other is), so with N processes a key gets at
/// most N × slice requests more than the policy allows in any window (slices counted
/// before the window and spent in it). Rests that expire unused make a key get fewer
/// requests than allowed, never more. Near the limit a refused slice is followed by a
/// single-request step (two round trips).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[derive(Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
    slices: Arc<Mutex<lru::LruCache<String, Slice>>>,
}

#[cfg(feature = "postgres")]
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// What a process keeps of one key: requests already counted in the shared state
/// and not yet handed out, and how busy the key is here.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Default)]
struct Slice {
    left: i64,
    /// The shared TAT right after the slice was taken.
    tat: i64,
    /// When an unused rest is dropped (µs).
    until: i64,
    /// Until when a take of more than one request is on its way to the database
    /// (µs): others meanwhile wait for it (then take one at a time), so a process
    /// never holds two rests of a key. A time as well as the take's `Notify`, so a
    /// take that never ends blocks slices for a second at most.
    taking_until: i64,
    /// Wakes the requests waiting for the take on its way.
    taken: Option<Arc<tokio::sync::Notify>>,
    /// Requests for the key here in the current second, and in the one before.
    window: i64,
    seen: i64,
    seen_before: i64,
}

/// How long a process keeps an unused rest of a slice (µs).
#[cfg(feature = "postgres")]
const SLICE_LIFE: i64 = 1_000_000;

/// The most requests one round trip takes for a policy with emission interval `t`
/// and period `p`: 1% of the limit, at most 100, at least 1.
#[cfg(feature = "postgres")]
fn slice_size(t: i64, p: i64) -> i64 {
    (p / t.max(1) / 100).clamp(1, 100)
}

/// What to do for one request.
#[cfg(feature = "postgres")]
enum Step {
    /// Admitted from the slice, with this TAT for the headers.
    Local(i64),
    /// Take this many requests from the shared state; a take of more than one
    /// comes with what wakes the requests that wait for it.
    Take(i64, Option<Arc<tokio::sync::Notify>>),
    /// Wait for the take on its way, then plan again.
    Wait(tokio::sync::futures::OwnedNotified),
}

/// How long a request waits for another's take of its key before it takes alone.
#[cfg(feature = "postgres")]
const WAIT_FOR_TAKE: Duration = Duration::from_millis(100);

/// Ends a take of more than one request, however it ends (done, failed, or its
/// future dropped, even unpolled): the requests waiting for it are woken, and the
/// key may be taken again unless a newer take is already on its way.
#[cfg(feature = "postgres")]
struct TakeDone<'a> {
    store: &'a PostgresStore,
    key: &'a str,
    waiting: Arc<tokio::sync::Notify>,
}

#[cfg(feature = "postgres")]
impl Drop for TakeDone<'_> {
    fn drop(&mut self) {
        let mut slices = self.store.slices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slices.get_mut(self.key) {
            if s.taken
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(t, &self.waiting))
            {
                s.taking_until = 0;
                s.taken = None;
            }
        }
        self.waiting.notify_waiters();
    }
}

#[cfg(feature = "postgres")]
impl PostgresStore {
    /// A store on `pool` (whose database has crm's migrations).
    pub fn new(pool: sqlx::PgPool) -> Self {
        let cap = std::num::NonZeroUsize::new(100_000).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            pool,
            slices: Arc::new(Mutex::new(lru::LruCache::new(cap))),
        }
    }

    /// Deletes keys whose TAT has passed (they hold no information), in small
    /// batches; returns how many. [`crate::Crm::housekeep`] does this for the
    /// limiter of a `Crm` on Postgres.
    pub async fn purge_idle(&self, now: DateTime<Utc>) -> Result<u64> {
        let pool = crate::store::Pool::Postgres(self.pool.clone(), None);
        crate::store::housekeeping::rate_limits(&pool, now.timestamp_micros()).await
    }

    /// Serves the request from the key's slice when one is held and fresh (the TAT
    /// as if its rest were not yet counted, never before `now`), or says how many
    /// requests to take: as many as the key saw here in the last second (a slice
    /// that is likely spent before it expires), at most the policy's slice. While
    /// another take of the key is on its way the request waits for it, once
    /// (`waited`: it did, and now takes one alone if there is still nothing).
    fn plan(&self, key: &str, now: i64, t: i64, p: i64, waited: bool) -> Step {
        let mut slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
        let s = slices.get_or_insert_mut(key.to_owned(), Slice::default);
        if now - s.window >= SLICE_LIFE {
            s.seen_before = if now - s.window < 2 * SLICE_LIFE {
                s.seen
            } else {
                0
            };
            s.seen = 0;
            s.window = now;
        }
        if !waited {
            s.seen += 1;
        }
        if s.left > 0 && now < s.until {
            s.left -= 1;
            return Step::Local((s.tat - s.left * t).max(now));
        }
        s.left = 0;
        if now < s.taking_until {
            return match &s.taken {
                Some(take) if !waited => Step::Wait(take.clone().notified_owned()),
                _ => Step::Take(1, None),
            };
        }
        let n = s.seen.max(s.seen_before).clamp(1, slice_size(t, p));
        if n == 1 {
            return Step::Take(1, None);
        }
        let waiting = Arc::new(tokio::sync::Notify::new());
        s.taking_until = now + SLICE_LIFE;
        s.taken = Some(waiting.clone());
        Step::Take(n, Some(waiting))
    }

    /// Takes `n` requests (`done`: the end of a take of more than one, which wakes
    /// the requests waiting for it).
    async fn take(
        &self,
        key: &str,
        now: i64,
        t: i64,
        p: i64,
        n: i64,
        done: Option<TakeDone<'_>>,
    ) -> Result<(bool, i64)> {
        if n == 1 {
            return crate::store::rate_limits::step(&self.pool, key, now, t, p).await;
        }
        let taken = crate::store::rate_limits::step(&self.pool, key, now, n * t, p).await;
        {
            let mut slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
            let s = slices.get_or_insert_mut(key.to_owned(), Slice::default);
            if let Ok((true, tat)) = taken {
                // One request now, the rest for the next callers (woken when `done`
                // drops, after the lock).
                s.left = n - 1;
                s.tat = tat;
                s.until = now + SLICE_LIFE;
                return Ok((true, tat - (n - 1) * t));
            }
        }
        // Refused: the waiting requests go on alone while this one steps.
        drop(done);
        taken?;
        // Near the limit: one request at a time.
        crate::store::rate_limits::step(&self.pool, key, now, t, p).await
    }
}

#[cfg(feature = "postgres")]
impl RateLimitStore for PostgresStore {
    fn step<'a>(&'a self, key: &'a str, now: i64, t: i64, p: i64) -> StoreFuture<'a> {
        let done = |waiting: Option<Arc<tokio::sync::Notify>>| {
            waiting.map(|waiting| TakeDone {
                store: self,
                key,
                waiting,
            })
        };
        match self.plan(key, now, t, p, false) {
            Step::Local(tat) => Box::pin(std::future::ready(Ok((true, tat)))),
            Step::Take(n, waiting) => Box::pin(self.take(key, now, t, p, n, done(waiting))),
            Step::Wait(taken) => Box::pin(async move {
                let _ = tokio::time::timeout(WAIT_FOR_TAKE, taken).await;
                match self.plan(key, now, t, p, true) {
                    Step::Local(tat) => Ok((true, tat)),
                    Step::Take(n, waiting) => self.take(key, now, t, p, n, done(waiting)).await,
                    Step::Wait(_) => self.take(key, now, t, p, 1, None).await,
                }
            }),
        }
    }
}

/// Named policies over one store; from [`crate::Crm::rate_limiter`], or built
/// directly with [`RateLimiter::with_store`].
#[derive(Clone)]
pub struct RateLimiter {
    policies: Arc<HashMap<String, Policy>>,
    store: Arc<dyn RateLimitStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

/// Longest rate-limit key, in bytes.
pub const KEY_MAX: usize = 256;

impl RateLimiter {
    pub(crate) fn new(
        pool: &Pool,
        clock: Arc<dyn Clock>,
        overrides: Vec<(String, Policy)>,
    ) -> Result<Self> {
        let store: Arc<dyn RateLimitStore> = match pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(..) => Arc::new(MemoryStore::default()),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, _) => Arc::new(PostgresStore::new(p.clone())),
        };
        Self::with_store(store, clock, overrides)
    }

    /// A limiter over `store` with the default policies, replaced or extended by
    /// `policies`. Policy names are 1–64 characters without `:`.
    pub fn with_store(
        store: Arc<dyn RateLimitStore>,
        clock: Arc<dyn Clock>,
        policies: Vec<(String, Policy)>,
    ) -> Result<Self> {
        let mut all: HashMap<String, Policy> = default_policies().into_iter().collect();
        for (name, p) in policies {
            if name.is_empty() || name.len() > 64 || name.contains(':') {
                return Err(Error::Config(format!(
                    "rate-limit policy name {name:?} must be 1-64 characters without ':'"
                )));
            }
            if Policy::new(p.limit, p.period).is_none() {
                return Err(Error::Config(format!(
                    "rate-limit policy {name:?} needs a limit of at least 1"
                )));
            }
            all.insert(name, p);
        }
        Ok(Self {
            policies: Arc::new(all),
            store,
            clock,
        })
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.get(name).copied()
    }

    /// Decides one request for `key` (an API key id, an IP, an account) under the
    /// policy `policy`. Each policy counts separately. An unknown policy is a
    /// `Config` error; an empty key or one over 256 bytes a `Validation` error.
    pub async fn check(&self, policy: &str, key: &str) -> Result<Decision> {
        let p = self
            .policy(policy)
            .ok_or_else(|| Error::Config(format!("unknown rate-limit policy {policy:?}")))?;
        self.check_with(policy, p, key).await
    }

    /// As [`RateLimiter::check`], but a refusal is the error: `RateLimited` with the
    /// time to wait.
    pub async fn enforce(&self, policy: &str, key: &str) -> Result<Decision> {
        let d = self.check(policy, key).await?;
        match d.retry_after {
            Some(retry_after) => Err(Error::RateLimited { retry_after }),
            None => Ok(d),
        }
    }

    /// Decides one request for `key` under an ad-hoc policy `p` (e.g. a per-endpoint
    /// limit), counted under the name `name` (1–64 characters without `:`).
    pub async fn check_with(&self, name: &str, p: Policy, key: &str) -> Result<Decision> {
        let policy = name;
        if Policy::new(p.limit, p.period).is_none()
            || name.is_empty()
            || name.len() > 64
            || name.contains(':')
        {
            return Err(Error::Config(format!(
                "rate-limit policy {name:?} is not valid"
            )));
        }
        // No NUL: Postgres text cannot hold it (the key is a column of crm_rate_limits).
        if key.is_empty() || key.len() > KEY_MAX || key.contains('\0') {
            return Err(Error::invalid(
                "key",
                format!("must be 1-{KEY_MAX} bytes without NUL"),
            ));
        }
        let now_t = crate::clock::micros(self.clock.now());
        let now = now_t.timestamp_micros();
        let (t, period) = (p.emission_micros(), p.period_micros());
        let full_key = format!("{policy}:{key}");
        let (allowed, tat) = self.store.step(&full_key, now, t, period).await?;
        if !allowed {
            metrics::counter!("crm_rate_limit_rejected_total", "policy" => policy.to_owned())
                .increment(1);
        }
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let reset_at = now_t + chrono::Duration::microseconds(tat - now);
        Ok(if allowed {
            Decision {
                allowed,
                limit: p.limit,
                remaining: u32::try_from((period - (tat - now)) / t)
                    .unwrap_or(0)
                    .min(p.limit),
                reset_at,
                retry_after: None,
            }
        } else {
            Decision {
                allowed,
                limit: p.limit,
                remaining: 0,
                reset_at,
                retry_after: Some(micros(tat + t - period - now)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use chrono::TimeZone;

    fn limiter(clock: &ManualClock, store: Arc<dyn RateLimitStore>) -> RateLimiter {
        let policies = vec![(
            "test".to_string(),
            Policy {
                limit: 3,
                period: Duration::from_secs(60),
            },
        )];
        RateLimiter::with_store(store, Arc::new(clock.clone()), policies).expect("limiter")
    }

    fn clock() -> ManualClock {
        ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("date"),
        )
    }

    #[tokio::test]
    async fn burst_then_one_per_interval() {
        let clock = clock();
        let l = limiter(&clock, Arc::new(MemoryStore::default()));
        let remaining: Vec<u32> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                let d = l.check("test", "k").await.expect("check");
                assert!(d.allowed);
                v.push(d.remaining);
            }
            v
        };
        assert_eq!(remaining, [2, 1, 0]);
        let refused = l.check("test", "k").await.expect("check");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(20)));
        assert_eq!(
            refused.reset_at,
            clock.now() + chrono::Duration::seconds(60)
        );
        // One microsecond before the next slot: still refused; at the slot: admitted.
        clock.advance(chrono::Duration::seconds(20) - chrono::Duration::microseconds(1));
        assert!(!l.check("test", "k").await.expect("check").allowed);
        clock.advance(chrono::Duration::microseconds(1));
        let d = l.check("test", "k").await.expect("check");
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // Other keys and other policies have their own budgets.
        assert!(l.check("test", "other").await.expect("check").allowed);
        assert_eq!(l.check("login", "k").await.expect("check").remaining, 4);
        // A long pause restores the whole burst, not more.
        clock.advance(chrono::Duration::hours(1));
        assert_eq!(l.check("test", "k").await.expect("check").remaining, 2);
    }

    #[tokio::test]
    async fn bad_input() {
        let clock = clock();
        let l = limiter(&clock, Arc::new(MemoryStore::default()));
        assert!(matches!(l.check("nope", "k").await, Err(Error::Config(_))));
        assert!(matches!(
            l.check("test", "").await,
            Err(Error::Validation { .. })
        ));
        assert!(matches!(
            l.check("test", &"k".repeat(257)).await,
            Err(Error::Validation { .. })
        ));
        let zero = vec![(
            "z".to_string(),
            Policy {
                limit: 0,
                period: Duration::from_secs(1),
            },
        )];
        assert!(
            RateLimiter::with_store(Arc::new(MemoryStore::default()), Arc::new(clock), zero)
                .is_err()
        );
    }

    #[tokio::test]
    async fn memory_is_bounded_and_idle_keys_go_first() {
        let clock = clock();
        let store = Arc::new(MemoryStore::new(10));
        let l = limiter(&clock, store.clone());
        // A client that spends its budget and keeps asking stays tracked (still
        // refused) while fifty others come and go around it.
        for _ in 0..3 {
            l.check("test", "busy").await.expect("check");
        }
        assert!(!l.check("test", "busy").await.expect("check").allowed);
        for i in 0..50 {
            l.check("test", &format!("k{i}")).await.expect("check");
            assert!(store.len() <= 10);
            assert!(
                !l.check("test", "busy").await.expect("check").allowed,
                "{i}"
            );
        }
        assert_eq!(store.len(), 10);
        // The least recently used keys went first: the early ones, not the late ones.
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(l.check("test", "k0").await.expect("check").remaining, 2);
    }
}
