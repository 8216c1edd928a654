//! Basic authentication against `basic_auth_users` (bcrypt hashes), with a small cache of
//! verified credentials.
//!
//! bcrypt costs ~50-100 ms per check at the usual cost of 10, and Prometheus sends the same
//! credentials every few seconds, so a verified (user, password) pair is remembered, as the
//! exporter-toolkit does. Only successes are cached, so wrong guesses cannot evict the scraper's
//! entry, and the cache holds SHA-256 digests, never passwords. A miss runs bcrypt on the
//! blocking pool, one at a time, so a flood of bad guesses costs one core at most and never
//! stalls the (single-threaded) runtime.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::HeaderValue;
use base64::Engine;
use tokio::sync::Semaphore;

/// Verified credentials remembered at most (a handful of scrapers is the expected use).
pub const CACHE_CAPACITY: usize = 64;

/// What a check of credentials decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: the credentials were verified before and found in the cache.
    AllowedCached,
    /// Allowed: bcrypt verified the password now.
    AllowedVerified,
    /// Denied: no or malformed credentials, unknown user, or wrong password.
    Denied,
}

impl Verdict {
    /// Whether the request may go on.
    pub fn allowed(self) -> bool {
        self != Verdict::Denied
    }
}

/// The users allowed in and the cache of verified credentials.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A configured hash, checked for unknown users so that their answer takes as long as a
    /// known user's (no user enumeration by timing).
    decoy: String,
    verified: Mutex<VecDeque<[u8; 32]>>,
    one_bcrypt: Semaphore,
}

impl BasicAuth {
    /// Authentication for `users` (name to bcrypt hash); `None` when there are none, which
    /// means no authentication.
    pub fn new(users: BTreeMap<String, String>) -> Option<BasicAuth> {
        let decoy = users.values().next()?.clone();
        Some(BasicAuth {
            users,
            decoy,
            verified: Mutex::new(VecDeque::with_capacity(CACHE_CAPACITY)),
            one_bcrypt: Semaphore::new(1),
        })
    }

    /// Checks an `Authorization` header; bcrypt, when needed, runs on the blocking pool.
    pub async fn authorize(self: &Arc<Self>, header: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = header.and_then(|h| h.to_str().ok()).and_then(parse_basic)
        else {
            return Verdict::Denied;
        };
        if self.is_cached(&user, &password) {
            return Verdict::AllowedCached;
        }
        let Ok(_permit) = self.one_bcrypt.acquire().await else {
            return Verdict::Denied;
        };
        let auth = Arc::clone(self);
        tokio::task::spawn_blocking(move || auth.verify(&user, &password))
            .await
            .unwrap_or(Verdict::Denied)
    }

    /// Checks credentials now, running bcrypt on a cache miss (blocking: ~50-100 ms).
    pub fn verify(&self, user: &str, password: &str) -> Verdict {
        if self.is_cached(user, password) {
            return Verdict::AllowedCached;
        }
        let Some(hash) = self.users.get(user) else {
            let _ = bcrypt::verify(password, &self.decoy);
            return Verdict::Denied;
        };
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return Verdict::Denied;
        }
        let key = self.cache_key(user, password);
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if !verified.contains(&key) {
            if verified.len() >= CACHE_CAPACITY {
                verified.pop_front();
            }
            verified.push_back(key);
        }
        Verdict::AllowedVerified
    }

    /// Entries in the cache of verified credentials.
    pub fn cached(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn is_cached(&self, user: &str, password: &str) -> bool {
        let key = self.cache_key(user, password);
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
    }

    /// SHA-256 of the length-prefixed user, their hash and the password: the hash is part of
    /// the key so an entry can only ever vouch for the hash it was verified against.
    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let hash = self.users.get(user).map_or("", String::as_str);
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [user, hash, password] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part.as_bytes());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        key
    }
}

/// The user and password of an `Authorization: Basic <base64(user:password)>` header value.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(users: &[(&str, &str)]) -> BasicAuth {
        // Cost 4, the lowest: the tests check logic, not bcrypt's speed.
        let users = users
            .iter()
            .map(|(u, p)| (u.to_string(), bcrypt::hash(p, 4).unwrap()))
            .collect();
        BasicAuth::new(users).unwrap()
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[test]
    fn no_users_is_no_auth() {
        assert!(BasicAuth::new(BTreeMap::new()).is_none());
    }

    #[test]
    fn right_password_is_verified_once_then_cached() {
        let auth = auth(&[("alice", "s3cret"), ("bob", "other")]);
        assert_eq!(auth.verify("alice", "s3cret"), Verdict::AllowedVerified);
        assert_eq!(auth.verify("alice", "s3cret"), Verdict::AllowedCached);
        assert_eq!(auth.cached(), 1);
        assert_eq!(auth.verify("bob", "other"), Verdict::AllowedVerified);
        assert_eq!(auth.cached(), 2);
    }

    #[test]
    fn wrong_password_or_user_is_denied_and_not_cached() {
        let auth = auth(&[("alice", "s3cret")]);
        assert_eq!(auth.verify("alice", "wrong"), Verdict::Denied);
        assert_eq!(auth.verify("alice", "wrong"), Verdict::Denied);
        assert_eq!(auth.verify("mallory", "s3cret"), Verdict::Denied);
        assert_eq!(auth.verify("", ""), Verdict::Denied);
        assert_eq!(auth.cached(), 0);
        // Another user's password never passes for alice, cached or not.
        let auth = self::auth(&[("alice", "a"), ("bob", "b")]);
        assert_eq!(auth.verify("bob", "b"), Verdict::AllowedVerified);
        assert_eq!(auth.verify("alice", "b"), Verdict::Denied);
    }

    #[test]
    fn cache_is_bounded() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let users: BTreeMap<String, String> = (0..CACHE_CAPACITY + 5)
            .map(|i| (format!("user{i}"), hash.clone()))
            .collect();
        let auth = BasicAuth::new(users).unwrap();
        for i in 0..CACHE_CAPACITY + 5 {
            assert_eq!(
                auth.verify(&format!("user{i}"), "pw"),
                Verdict::AllowedVerified
            );
        }
        assert_eq!(auth.cached(), CACHE_CAPACITY);
        // The oldest entries went first; the newest is still there.
        assert_eq!(auth.verify("user0", "pw"), Verdict::AllowedVerified);
        let last = format!("user{}", CACHE_CAPACITY + 4);
        assert_eq!(auth.verify(&last, "pw"), Verdict::AllowedCached);
    }

    #[test]
    fn parses_basic_headers() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcjp0"),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(
            parse_basic("basic   YWxpY2U6"),
            Some(("alice".into(), String::new()))
        );
        for bad in [
            "",
            "Basic",
            "Bearer YWxpY2U6czNjcjp0",
            "Basic !!!",
            "Basic YWxpY2U=",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn authorize_reads_the_header() {
        let auth = Arc::new(auth(&[("alice", "s3cret")]));
        assert_eq!(auth.authorize(None).await, Verdict::Denied);
        let wrong = header("alice", "nope");
        assert_eq!(auth.authorize(Some(&wrong)).await, Verdict::Denied);
        let right = header("alice", "s3cret");
        assert_eq!(auth.authorize(Some(&right)).await, Verdict::AllowedVerified);
        assert_eq!(auth.authorize(Some(&right)).await, Verdict::AllowedCached);
        let garbage = HeaderValue::from_bytes(b"Basic \xff").unwrap();
        assert_eq!(auth.authorize(Some(&garbage)).await, Verdict::Denied);
    }
}
