//! Passwords, sessions and CSRF tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use rand::RngCore;

/// Hashes `password` with Argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// True when `password` matches the PHC `hash`; false for a malformed hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A fresh 256-bit random token, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares without an early exit, so timing reveals nothing of a token.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Every form of this session carries it.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// Most sessions held at once; beyond it the oldest is dropped.
const MAX_SESSIONS: usize = 1024;

/// Server-side sessions with idle and absolute expiry.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    absolute: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self {
            idle,
            absolute,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `user`; returns its id.
    pub fn create(&self, user: &str) -> String {
        self.create_at(user, Instant::now())
    }

    fn create_at(&self, user: &str, now: Instant) -> String {
        let id = random_token();
        let session = Session {
            user: user.to_owned(),
            csrf: random_token(),
            created: now,
            last_seen: now,
        };
        let mut map = self.lock();
        map.retain(|_, s| !self.expired(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session `id`, touching it; expired sessions are removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        let expired = self.expired(map.get(id)?, now);
        if expired {
            map.remove(id);
            return None;
        }
        let session = map.get_mut(id)?;
        session.last_seen = now;
        Some(session.clone())
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last_seen) > self.idle
            || now.saturating_duration_since(s.created) > self.absolute
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (every
        // mutation is a single call), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Slows password guessing: after `MAX_FAILURES` failed sign-ins for one
/// name within `WINDOW`, that name is refused until the window passes.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);

impl Throttle {
    pub fn allowed(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, since)| now.saturating_duration_since(*since) < WINDOW);
        map.get(user).is_none_or(|(n, _)| *n < MAX_FAILURES)
    }

    pub fn failed(&self, user: &str) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.entry(user.to_owned()).or_insert((0, now)).0 += 1;
    }

    pub fn succeeded(&self, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("正确 horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "正确 horse battery"));
        assert!(!verify_password(&hash, "正确 horse batter"));
        assert!(!verify_password(&hash, ""));
        assert!(!verify_password("not a hash", "x"));
        // Salted: the same password hashes differently.
        assert_ne!(hash, hash_password("正确 horse battery").unwrap());
    }

    #[test]
    fn tokens_are_random_and_256_bit() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_token());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let id = sessions.create_at("admin", t0);
        let s = sessions.get_at(&id, t0 + Duration::from_secs(50)).unwrap();
        assert_eq!(s.user, "admin");
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(s.csrf, id);
        // Touched at 50 s, so 100 s is within the idle limit.
        assert!(
            sessions
                .get_at(&id, t0 + Duration::from_secs(100))
                .is_some()
        );
        // Idle for more than 60 s.
        assert!(
            sessions
                .get_at(&id, t0 + Duration::from_secs(161))
                .is_none()
        );
        // Gone for good.
        assert!(
            sessions
                .get_at(&id, t0 + Duration::from_secs(100))
                .is_none()
        );

        // Kept busy, it still ends at the absolute limit.
        let id = sessions.create_at("admin", t0);
        for s in (30..=300).step_by(30) {
            assert!(sessions.get_at(&id, t0 + Duration::from_secs(s)).is_some());
        }
        assert!(
            sessions
                .get_at(&id, t0 + Duration::from_secs(301))
                .is_none()
        );
        assert!(sessions.get("no such id").is_none());
    }

    #[test]
    fn sessions_are_removed_and_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let id = sessions.create("a");
        assert!(sessions.get(&id).is_some());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.create("b");
        }
        assert!(sessions.lock().len() <= MAX_SESSIONS);
    }

    #[test]
    fn throttle_blocks_after_repeated_failures() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES {
            assert!(t.allowed("x"));
            t.failed("x");
        }
        assert!(!t.allowed("x"));
        assert!(t.allowed("y"));
        t.succeeded("x");
        assert!(t.allowed("x"));
    }
}
