//! Passwords, sessions and CSRF tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use rand::RngCore;
use subtle::ConstantTimeEq;

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

/// Whether two secrets (session ids, CSRF tokens) are equal, in time that
/// depends on their lengths only, so timing reveals nothing of a token.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A signed-in administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Every form of this session carries it.
    pub csrf: String,
    /// The second half of the session id, compared in constant time.
    secret: String,
    created: Instant,
    last_seen: Instant,
}

/// A session id is 64 hex digits: the first half finds the session in the
/// map (a lookup whose timing may depend on the key, so that half is not
/// secret on its own), the second half is the secret that is compared in
/// constant time.
fn split_id(id: &str) -> Option<(&str, &str)> {
    if id.len() != 64 || !id.is_ascii() {
        return None;
    }
    Some(id.split_at(32))
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
        let Some((handle, secret)) = split_id(&id) else {
            // random_token() is 64 hex digits, which split_id accepts.
            return id;
        };
        let session = Session {
            user: user.to_owned(),
            csrf: random_token(),
            secret: secret.to_owned(),
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
        map.insert(handle.to_owned(), session);
        id
    }

    /// The live session `id`, touching it; expired sessions are removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        let (handle, secret) = split_id(id)?;
        let mut map = self.lock();
        let session = map.get_mut(handle)?;
        if !constant_time_eq(&session.secret, secret) {
            return None;
        }
        if self.expired(session, now) {
            map.remove(handle);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends the session `id` (nothing happens for an id that is not one).
    pub fn remove(&self, id: &str) {
        let Some((handle, secret)) = split_id(id) else {
            return;
        };
        let mut map = self.lock();
        if map
            .get(handle)
            .is_some_and(|s| constant_time_eq(&s.secret, secret))
        {
            map.remove(handle);
        }
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

/// Limits of the sign-in [`Throttle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failed sign-ins for one name, within `name_window` of its first
    /// failure, that lock the name.
    pub failures_per_name: u32,
    pub name_window: Duration,
    /// How long a locked name is refused after the failure that locked it.
    pub lockout: Duration,
    /// Most names tracked at once (each key is at most 64 characters).
    pub max_names: usize,
    /// Password checks that may fail in a burst, over all names ...
    pub global_burst: u32,
    /// ... and the rate, per minute, at which that budget refills.
    pub global_per_minute: u32,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            failures_per_name: 5,
            name_window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_names: 10_000,
            global_burst: 30,
            global_per_minute: 30,
        }
    }
}

/// Why a sign-in attempt is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This name failed too often lately.
    NameLocked,
    /// Too many sign-ins failed lately, over all names.
    TooManyFailures,
}

#[derive(Debug, Clone, Copy)]
struct NameFailures {
    count: u32,
    first: Instant,
    last: Instant,
    locked_until: Option<Instant>,
}

impl NameFailures {
    fn locked_at(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Neither locked nor counting towards a lock any more.
    fn stale_at(&self, now: Instant, window: Duration) -> bool {
        !self.locked_at(now) && now.saturating_duration_since(self.first) >= window
    }
}

#[derive(Debug)]
struct ThrottleState {
    names: HashMap<String, NameFailures>,
    /// Global budget: a token bucket refilled continuously.
    tokens: f64,
    refilled: Instant,
}

/// Slows password guessing, with memory that stays bounded and that churning
/// through junk names cannot reset:
///
/// - per name: `failures_per_name` failures within `name_window` lock the
///   name for `lockout`. At most `max_names` names are tracked; when full,
///   the entries that matter least (fewest failures, then oldest) are
///   dropped, never a locked one.
/// - over all names: every password check takes a token from a bucket of
///   `global_burst`, refilled at `global_per_minute`; a successful sign-in
///   gives it back. While the bucket is empty, every attempt is refused
///   without checking its password, so an attacker can neither guess faster
///   than that, nor spend the host's CPU on Argon2, nor fill the name map
///   with locked entries (locking one takes `failures_per_name` tokens).
///
/// Time is passed in, so tests need no sleeping.
#[derive(Debug)]
pub struct Throttle {
    limits: ThrottleLimits,
    state: Mutex<ThrottleState>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(ThrottleLimits::default(), Instant::now())
    }
}

impl Throttle {
    pub fn new(limits: ThrottleLimits, now: Instant) -> Self {
        Self {
            limits,
            state: Mutex::new(ThrottleState {
                names: HashMap::new(),
                tokens: f64::from(limits.global_burst),
                refilled: now,
            }),
        }
    }

    /// Whether `user`'s password may be checked now. `Ok` takes a token of
    /// the global budget, so every `Ok` must be followed by [`Self::failed`]
    /// or [`Self::succeeded`] (which gives the token back).
    pub fn begin(&self, user: &str, now: Instant) -> Result<(), Refusal> {
        let mut state = self.lock();
        if let Some(record) = state.names.get(user) {
            if record.locked_at(now) {
                return Err(Refusal::NameLocked);
            }
            if record.stale_at(now, self.limits.name_window) {
                state.names.remove(user);
            }
        }
        self.refill(&mut state, now);
        if state.tokens < 1.0 {
            return Err(Refusal::TooManyFailures);
        }
        state.tokens -= 1.0;
        Ok(())
    }

    /// Records a failed password check of `user` (after an `Ok` from
    /// [`Self::begin`]; its token stays spent).
    pub fn failed(&self, user: &str, now: Instant) {
        let limits = self.limits;
        let mut state = self.lock();
        if !state.names.contains_key(user) && !make_room(&mut state.names, &limits, now) {
            // Only locked names are tracked, which the global budget keeps
            // from happening (see `ThrottleLimits`); this failure still
            // spent its global token.
            return;
        }
        let record = state.names.entry(user.to_owned()).or_insert(NameFailures {
            count: 0,
            first: now,
            last: now,
            locked_until: None,
        });
        if now.saturating_duration_since(record.first) >= limits.name_window {
            record.count = 0;
            record.first = now;
        }
        record.count = record.count.saturating_add(1);
        record.last = now;
        if record.count >= limits.failures_per_name {
            record.locked_until = Some(now + limits.lockout);
        }
    }

    /// Records a successful sign-in: forgets `user`'s failures and gives
    /// back the token its check took.
    pub fn succeeded(&self, user: &str, now: Instant) {
        let mut state = self.lock();
        state.names.remove(user);
        self.refill(&mut state, now);
        state.tokens = (state.tokens + 1.0).min(f64::from(self.limits.global_burst));
    }

    /// Names currently tracked.
    pub fn tracked_names(&self) -> usize {
        self.lock().names.len()
    }

    fn refill(&self, state: &mut ThrottleState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        let per_second = f64::from(self.limits.global_per_minute) / 60.0;
        state.tokens =
            (state.tokens + elapsed * per_second).min(f64::from(self.limits.global_burst));
        state.refilled = state.refilled.max(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        // Every mutation leaves the state consistent, so a poisoned lock is
        // still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Frees at least one slot in a full map: first the names whose window has
/// passed, then a tenth of the map, fewest failures and oldest first (one
/// sort per tenth keeps a flood of new names cheap). Locked names stay.
/// False when only locked names are left.
fn make_room(
    names: &mut HashMap<String, NameFailures>,
    limits: &ThrottleLimits,
    now: Instant,
) -> bool {
    if names.len() < limits.max_names {
        return true;
    }
    names.retain(|_, r| !r.stale_at(now, limits.name_window));
    if names.len() < limits.max_names {
        return true;
    }
    let mut unlocked: Vec<(u32, Instant, String)> = names
        .iter()
        .filter(|(_, r)| !r.locked_at(now))
        .map(|(k, r)| (r.count, r.last, k.clone()))
        .collect();
    unlocked.sort_unstable();
    let target = limits.max_names - (limits.max_names / 10).max(1);
    let excess = names.len().saturating_sub(target);
    for (_, _, name) in unlocked.into_iter().take(excess) {
        names.remove(&name);
    }
    names.len() < limits.max_names
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
    fn a_session_id_with_the_right_handle_and_a_forged_secret_is_refused() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let id = sessions.create("admin");
        let forged = format!("{}{}", &id[..32], "0".repeat(32));
        assert!(sessions.get(&forged).is_none());
        sessions.remove(&forged);
        assert!(sessions.get(&id).is_some(), "a forged id ends nothing");
        for odd in ["", &id[..63], &format!("{id}0"), &"é".repeat(32)] {
            assert!(sessions.get(odd).is_none(), "{odd:?}");
        }
    }

    /// Limits whose global budget never runs out, to test names alone.
    fn per_name_only() -> ThrottleLimits {
        ThrottleLimits {
            global_burst: u32::MAX,
            ..ThrottleLimits::default()
        }
    }

    fn fail(t: &Throttle, user: &str, now: Instant) {
        assert_eq!(t.begin(user, now), Ok(()), "{user}");
        t.failed(user, now);
    }

    #[test]
    fn five_failures_lock_a_name_until_the_lockout_passes() {
        let t0 = Instant::now();
        let t = Throttle::new(per_name_only(), t0);
        for _ in 0..5 {
            fail(&t, "x", t0);
        }
        assert_eq!(t.begin("x", t0), Err(Refusal::NameLocked));
        assert_eq!(
            t.begin("x", t0 + Duration::from_secs(59)),
            Err(Refusal::NameLocked)
        );
        assert_eq!(t.begin("y", t0), Ok(()));
        assert_eq!(t.begin("x", t0 + Duration::from_secs(60)), Ok(()));

        // Four failures, then success: the count starts again.
        fail(&t, "z", t0);
        for _ in 0..3 {
            fail(&t, "z", t0);
        }
        assert_eq!(t.begin("z", t0), Ok(()));
        t.succeeded("z", t0);
        fail(&t, "z", t0);
        assert_eq!(t.begin("z", t0), Ok(()));

        // Failures spread wider than the window do not add up.
        let t = Throttle::new(per_name_only(), t0);
        for i in 0..10 {
            fail(&t, "w", t0 + Duration::from_secs(15 * i));
        }
        assert_eq!(t.begin("w", t0 + Duration::from_secs(150)), Ok(()));
    }

    #[test]
    fn churning_other_names_neither_unlocks_a_name_nor_grows_memory() {
        let t0 = Instant::now();
        let limits = per_name_only();
        let t = Throttle::new(limits, t0);
        for _ in 0..5 {
            fail(&t, "admin", t0);
        }
        // A second name, four failures in: churn must not reset it either
        // while it still has company with fewer failures.
        for _ in 0..4 {
            fail(&t, "operator", t0);
        }
        for i in 0..20_000 {
            let now = t0 + Duration::from_millis(i);
            fail(&t, &format!("junk-{i}"), now);
            assert!(t.tracked_names() <= limits.max_names);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(t.begin("admin", later), Err(Refusal::NameLocked));
        assert_eq!(t.begin("operator", later), Ok(()));
        t.failed("operator", later);
        assert_eq!(t.begin("operator", later), Err(Refusal::NameLocked));
        assert!(t.tracked_names() <= limits.max_names);
        assert!(t.tracked_names() > limits.max_names / 2);
    }

    #[test]
    fn a_map_of_locked_names_stays_bounded() {
        let t0 = Instant::now();
        let limits = ThrottleLimits {
            max_names: 10,
            ..per_name_only()
        };
        let t = Throttle::new(limits, t0);
        for n in 0..20 {
            for _ in 0..5 {
                fail(&t, &format!("n{n}"), t0);
            }
        }
        assert_eq!(t.tracked_names(), 10);
        // The first ten stay locked; the untracked ones are held back by
        // the global budget instead.
        for n in 0..10 {
            assert_eq!(t.begin(&format!("n{n}"), t0), Err(Refusal::NameLocked));
        }
    }

    #[test]
    fn the_global_budget_engages_and_recovers_with_time() {
        let t0 = Instant::now();
        let limits = ThrottleLimits::default();
        let t = Throttle::new(limits, t0);
        for i in 0..limits.global_burst {
            fail(&t, &format!("guess-{i}"), t0);
        }
        // Empty: every name is refused, the real one with the right
        // password included, before any password is checked.
        assert_eq!(t.begin("admin", t0), Err(Refusal::TooManyFailures));
        assert_eq!(t.begin("fresh", t0), Err(Refusal::TooManyFailures));
        // 30 per minute: one token back every 2 s.
        let t1 = t0 + Duration::from_millis(1_999);
        assert_eq!(t.begin("admin", t1), Err(Refusal::TooManyFailures));
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(t.begin("admin", t2), Ok(()));
        assert_eq!(t.begin("admin", t2), Err(Refusal::TooManyFailures));
        // A success gives its token back.
        t.succeeded("admin", t2);
        assert_eq!(t.begin("admin", t2), Ok(()));
        t.succeeded("admin", t2);
        // A minute refills it whole, and no more than whole.
        let t3 = t2 + Duration::from_secs(600);
        for i in 0..limits.global_burst {
            assert_eq!(t.begin(&format!("later-{i}"), t3), Ok(()));
            t.failed(&format!("later-{i}"), t3);
        }
        assert_eq!(t.begin("admin", t3), Err(Refusal::TooManyFailures));
    }
}
