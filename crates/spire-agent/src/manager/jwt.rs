//! JWT-SVIDs for workloads: minted by the server (`NewJWTSVID`) and cached per (SPIFFE ID,
//! sorted audiences) until half of their lifetime has passed. Entries with
//! `jwt_svid_include_jti` are never cached. When the server cannot be reached a cached token
//! that has not expired yet is returned instead of an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use spire_spiffe::{Clock, SpiffeId};

use crate::client::ServerApi;
use crate::identity::{EntryView, JwtSvid, JwtSvidError, JwtSvidSource};

type CacheKey = (SpiffeId, Vec<String>);

#[derive(Clone)]
struct Cached {
    svid: JwtSvid,
    issued_at: SystemTime,
    last_used: SystemTime,
}

impl Cached {
    fn fresh(&self, now: SystemTime) -> bool {
        let life = self
            .svid
            .expires_at
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO);
        now < self.issued_at + life / 2
    }

    fn valid(&self, now: SystemTime) -> bool {
        now < self.svid.expires_at
    }
}

/// Something that mints JWT-SVIDs (the server, or a fake in tests).
pub trait JwtMinter: Send + Sync + 'static {
    /// Mints a token for `entry_id` with `audience`: (token, issued_at, expires_at), times in
    /// Unix seconds.
    fn mint(
        &self,
        entry_id: String,
        audience: Vec<String>,
    ) -> BoxFuture<'static, Result<(String, i64, i64), String>>;
}

impl JwtMinter for Arc<dyn ServerApi> {
    fn mint(
        &self,
        entry_id: String,
        audience: Vec<String>,
    ) -> BoxFuture<'static, Result<(String, i64, i64), String>> {
        let client = self.clone();
        Box::pin(async move {
            let s = client
                .new_jwt_svid(entry_id, audience)
                .await
                .map_err(|e| e.to_string())?;
            Ok((s.token, s.issued_at, s.expires_at))
        })
    }
}

/// The agent's [`JwtSvidSource`].
pub struct JwtCache {
    minter: Arc<dyn JwtMinter>,
    clock: Arc<dyn Clock>,
    max_size: usize,
    cache: Arc<Mutex<HashMap<CacheKey, Cached>>>,
}

impl std::fmt::Debug for JwtCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtCache")
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl JwtCache {
    /// A cache of at most `max_size` tokens (0 = 1000, SPIRE's default) in front of `minter`.
    pub fn new(minter: Arc<dyn JwtMinter>, clock: Arc<dyn Clock>, max_size: usize) -> Self {
        JwtCache {
            minter,
            clock,
            max_size: if max_size == 0 { 1000 } else { max_size },
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl JwtSvidSource for JwtCache {
    fn cached_count(&self) -> usize {
        self.len()
    }

    fn fetch_jwt_svid(
        &self,
        entry: Arc<EntryView>,
        audiences: Vec<String>,
    ) -> BoxFuture<'static, Result<JwtSvid, JwtSvidError>> {
        let mut aud = audiences;
        aud.sort();
        aud.dedup();
        let key: CacheKey = ((*entry.spiffe_id).clone(), aud.clone());
        let cacheable = !entry.jwt_svid_include_jti;
        let minter = self.minter.clone();
        let clock = self.clock.clone();
        let cache = self.cache.clone();
        let max_size = self.max_size;
        Box::pin(async move {
            let now = clock.now();
            let cached = if cacheable {
                let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
                c.get_mut(&key).map(|e| {
                    e.last_used = now;
                    e.clone()
                })
            } else {
                None
            };
            if let Some(c) = &cached
                && c.fresh(now)
            {
                return Ok(c.svid.clone());
            }
            match minter.mint(entry.entry_id.to_string(), aud).await {
                Ok((token, issued_at, expires_at)) => {
                    let issued = if issued_at > 0 {
                        spire_spiffe::from_unix_secs(issued_at)
                    } else {
                        now
                    };
                    let svid = JwtSvid {
                        spiffe_id: (*entry.spiffe_id).clone(),
                        token,
                        expires_at: spire_spiffe::from_unix_secs(expires_at),
                        hint: entry.hint.clone(),
                    };
                    if cacheable {
                        let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
                        if c.len() >= max_size && !c.contains_key(&key) {
                            // Drop the least recently used token to stay under the limit.
                            if let Some(oldest) = c
                                .iter()
                                .min_by_key(|(_, v)| v.last_used)
                                .map(|(k, _)| k.clone())
                            {
                                c.remove(&oldest);
                            }
                        }
                        c.insert(
                            key,
                            Cached {
                                svid: svid.clone(),
                                issued_at: issued,
                                last_used: now,
                            },
                        );
                    }
                    Ok(svid)
                }
                Err(e) => match cached {
                    Some(c) if c.valid(now) => {
                        tracing::warn!(spiffe_id = %entry.spiffe_id, error = %e, "Could not renew JWT-SVID; returning the cached one");
                        Ok(c.svid)
                    }
                    _ => Err(JwtSvidError::Unavailable(e)),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spire_spiffe::FakeClock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Fake {
        clock: FakeClock,
        calls: AtomicUsize,
        fail: AtomicBool,
    }

    impl JwtMinter for Arc<Fake> {
        fn mint(
            &self,
            entry_id: String,
            audience: Vec<String>,
        ) -> BoxFuture<'static, Result<(String, i64, i64), String>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            let now = self.clock.now_unix();
            Box::pin(async move {
                if fail {
                    return Err("server down".into());
                }
                Ok((
                    format!("{entry_id}|{}|{n}", audience.join(",")),
                    now,
                    now + 100,
                ))
            })
        }
    }

    fn entry(jti: bool) -> Arc<EntryView> {
        Arc::new(EntryView {
            entry_id: "e1".into(),
            spiffe_id: "spiffe://td/w".parse().unwrap(),
            parent_id: "spiffe://td/p".parse().unwrap(),
            selectors: Default::default(),
            federates_with: vec![],
            hint: "h".into(),
            created_at: 0,
            revision_number: 0,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            jwt_svid_include_jti: jti,
            disable_x509_svid_prefetch: false,
            admin: false,
            downstream: false,
        })
    }

    fn setup() -> (Arc<Fake>, JwtCache, FakeClock) {
        let clock = FakeClock::at_unix(1_000);
        let fake = Arc::new(Fake {
            clock: clock.clone(),
            calls: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        });
        let cache = JwtCache::new(Arc::new(fake.clone()), Arc::new(clock.clone()), 0);
        (fake, cache, clock)
    }

    #[tokio::test]
    async fn cached_until_half_life_with_sorted_audiences() {
        let (fake, cache, clock) = setup();
        let a = cache
            .fetch_jwt_svid(entry(false), vec!["b".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(a.token, "e1|a,b|0");
        assert_eq!(a.hint, "h");
        clock.advance(Duration::from_secs(49));
        let b = cache
            .fetch_jwt_svid(entry(false), vec!["a".into(), "b".into()])
            .await
            .unwrap();
        assert_eq!(
            b.token, a.token,
            "same audiences in another order hit the cache"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(1));
        let c = cache
            .fetch_jwt_svid(entry(false), vec!["a".into(), "b".into()])
            .await
            .unwrap();
        assert_ne!(c.token, a.token, "past half-life a new token is minted");
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn jti_entries_are_not_cached() {
        let (fake, cache, _clock) = setup();
        let a = cache
            .fetch_jwt_svid(entry(true), vec!["x".into()])
            .await
            .unwrap();
        let b = cache
            .fetch_jwt_svid(entry(true), vec!["x".into()])
            .await
            .unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn server_failure_returns_valid_cached_token_only() {
        let (fake, cache, clock) = setup();
        let a = cache
            .fetch_jwt_svid(entry(false), vec!["x".into()])
            .await
            .unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        clock.advance(Duration::from_secs(60));
        let b = cache
            .fetch_jwt_svid(entry(false), vec!["x".into()])
            .await
            .unwrap();
        assert_eq!(a.token, b.token);
        clock.advance(Duration::from_secs(40));
        let err = cache
            .fetch_jwt_svid(entry(false), vec!["x".into()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("server down"));
        let err = cache
            .fetch_jwt_svid(entry(false), vec!["other".into()])
            .await;
        assert!(err.is_err());
    }
}
