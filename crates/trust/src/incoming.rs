//! [`TlsIncoming`]: the accept loop of every mutual-TLS gRPC server.
//!
//! An idle socket must never keep an honest client out. So the loop accepts
//! continuously (a handshake slot is never a condition for `accept()`), reads
//! the ClientHello with a short timeout of its own before any TLS state is
//! built, and bounds the handshakes pending at once, overall and per source
//! address, by shedding the *oldest* pending one: whoever holds sockets open
//! loses them to newer arrivals, so every newcomer gets its turn.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use crate::server::{
    ReloadableServerConfig, TlsConnection, bind_listener, handshake_failure_reason,
};

/// Tuning for [`TlsIncoming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingOptions {
    /// The whole handshake, from `accept()` to an established connection,
    /// must finish within this time (default 10 s).
    pub handshake_timeout: Duration,
    /// The client's ClientHello must have arrived within this time of
    /// `accept()` (default 3 s; capped by `handshake_timeout`). Until then a
    /// connection holds no TLS state, only its socket.
    pub client_hello_timeout: Duration,
    /// Handshakes pending at once (default 1024). One more sheds the oldest
    /// pending handshake; `accept()` never waits for a slot.
    pub max_pending_handshakes: usize,
    /// Handshakes pending at once from one source IP address (default 128).
    /// One more from that address sheds that address's oldest pending
    /// handshake, so one host cannot take every slot.
    pub max_pending_handshakes_per_ip: usize,
    /// TCP keepalive idle time on accepted sockets, so dead peers are
    /// noticed by the kernel (default 60 s; `None` leaves the system default).
    pub tcp_keepalive: Option<Duration>,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            client_hello_timeout: Duration::from_secs(3),
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_ip: 128,
            tcp_keepalive: Some(Duration::from_secs(60)),
        }
    }
}

const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
const ESTABLISHED_QUEUE: usize = 128;
/// Warnings about sheds and failures before a ClientHello: at most one per
/// this period, carrying the count since the previous one (a flood of attack
/// sockets must not become a flood of log lines).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Refusals after a ClientHello (certificate problems an operator must see)
/// are warned one by one, up to this many per [`WARN_EVERY`].
const REFUSAL_WARNINGS_PER_PERIOD: u32 = 20;

/// Counts of what happened to accepted connections, from
/// [`IncomingStats::snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Handshakes completed and handed to the server.
    pub established: u64,
    /// Pending handshakes dropped to make room (overall or per address).
    pub shed: u64,
    /// Of `shed`, those dropped because their address had too many pending.
    pub shed_per_ip: u64,
    /// Connections that sent no complete ClientHello in time.
    pub client_hello_timeouts: u64,
    /// Handshakes that did not finish in time after their ClientHello.
    pub handshake_timeouts: u64,
    /// Handshakes refused or broken off (bad certificate, not TLS, closed).
    pub failed: u64,
    /// Handshakes pending now.
    pub pending: usize,
}

/// A handle on a [`TlsIncoming`]'s counters that outlives handing the
/// stream to tonic.
#[derive(Debug, Clone)]
pub struct IncomingStats {
    shared: Arc<Shared>,
}

impl IncomingStats {
    pub fn snapshot(&self) -> HandshakeCounts {
        let c = &self.shared.counters;
        HandshakeCounts {
            accepted: c.accepted.load(Ordering::Relaxed),
            established: c.established.load(Ordering::Relaxed),
            shed: c.shed.load(Ordering::Relaxed),
            shed_per_ip: c.shed_per_ip.load(Ordering::Relaxed),
            client_hello_timeouts: c.client_hello_timeouts.load(Ordering::Relaxed),
            handshake_timeouts: c.handshake_timeouts.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            pending: self.shared.lock().pending.len(),
        }
    }
}

/// Accepts TCP connections, runs each TLS handshake in its own task (with
/// the timeouts and bounds of [`IncomingOptions`]) and yields the
/// established connections. Feed it to
/// `tonic::transport::Server::builder()...serve_with_incoming(incoming)`.
/// Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsIncoming {
    established: mpsc::Receiver<TlsConnection>,
    accept_task: JoinHandle<()>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TlsIncoming {
    /// Starts accepting on `listener`. Must be called inside a tokio runtime.
    pub fn new(
        listener: TcpListener,
        config: impl Into<ReloadableServerConfig>,
        options: IncomingOptions,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, established) = mpsc::channel(ESTABLISHED_QUEUE);
        let shared = Arc::new(Shared::new(&options));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            config.into(),
            options,
            shared.clone(),
            tx,
        ));
        Ok(Self {
            established,
            accept_task,
            local_addr,
            shared,
        })
    }

    /// Binds `addr` and starts accepting.
    pub async fn bind(
        addr: SocketAddr,
        config: impl Into<ReloadableServerConfig>,
        options: IncomingOptions,
    ) -> io::Result<Self> {
        Self::new(bind_listener(addr)?, config, options)
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters, readable after the stream went to the server.
    pub fn stats(&self) -> IncomingStats {
        IncomingStats {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.established.poll_recv(cx).map(|next| next.map(Ok))
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    established: AtomicU64,
    shed: AtomicU64,
    shed_per_ip: AtomicU64,
    client_hello_timeouts: AtomicU64,
    handshake_timeouts: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    counters: Counters,
    state: Mutex<State>,
}

impl Shared {
    fn new(options: &IncomingOptions) -> Self {
        Self {
            counters: Counters::default(),
            state: Mutex::new(State {
                pending: Pending::new(
                    options.max_pending_handshakes,
                    options.max_pending_handshakes_per_ip,
                ),
                shed_warnings: WarnBudget::new(1),
                early_failure_warnings: WarnBudget::new(1),
                refusal_warnings: WarnBudget::new(REFUSAL_WARNINGS_PER_PERIOD),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain bookkeeping; a panic elsewhere leaves it consistent enough.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct State {
    pending: Pending,
    shed_warnings: WarnBudget,
    early_failure_warnings: WarnBudget,
    refusal_warnings: WarnBudget,
}

/// Why a pending handshake was dropped to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShedCause {
    TooManyPending,
    TooManyFromAddress,
}

/// The handshakes in progress, oldest first, with a way to stop each.
#[derive(Debug)]
struct Pending {
    max_total: usize,
    max_per_ip: usize,
    next_id: u64,
    /// Ids grow with arrival, so the first entry is the oldest.
    by_age: BTreeMap<u64, PendingEntry>,
    by_ip: HashMap<IpAddr, BTreeSet<u64>>,
}

#[derive(Debug)]
struct PendingEntry {
    peer: SocketAddr,
    /// Dropping it tells the handshake task it was shed.
    _stop: oneshot::Sender<Infallible>,
}

#[derive(Debug)]
struct Shed {
    peer: SocketAddr,
    cause: ShedCause,
}

impl Pending {
    fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            next_id: 0,
            by_age: BTreeMap::new(),
            by_ip: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Registers a new handshake from `peer`, first shedding the oldest
    /// pending one of its address or, failing that, the oldest of all, when
    /// the bound is reached.
    fn admit(&mut self, peer: SocketAddr) -> (u64, oneshot::Receiver<Infallible>, Option<Shed>) {
        let from_address = self.by_ip.get(&peer.ip()).map_or(0, BTreeSet::len);
        let victim = if from_address >= self.max_per_ip {
            self.by_ip
                .get(&peer.ip())
                .and_then(|ids| ids.first().copied())
                .map(|id| (id, ShedCause::TooManyFromAddress))
        } else if self.by_age.len() >= self.max_total {
            self.by_age
                .keys()
                .next()
                .copied()
                .map(|id| (id, ShedCause::TooManyPending))
        } else {
            None
        };
        let shed = victim.and_then(|(id, cause)| {
            self.remove(id).map(|entry| Shed {
                peer: entry.peer,
                cause,
            })
        });
        let id = self.next_id;
        self.next_id += 1;
        let (stop, stopped) = oneshot::channel();
        self.by_age.insert(id, PendingEntry { peer, _stop: stop });
        self.by_ip.entry(peer.ip()).or_default().insert(id);
        (id, stopped, shed)
    }

    fn remove(&mut self, id: u64) -> Option<PendingEntry> {
        let entry = self.by_age.remove(&id)?;
        let ip = entry.peer.ip();
        if let Some(ids) = self.by_ip.get_mut(&ip) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
        Some(entry)
    }
}

/// Lets `per_period` warnings through per [`WARN_EVERY`]; the rest are
/// counted, and the next warning says how many were held back.
#[derive(Debug)]
struct WarnBudget {
    per_period: u32,
    period_start: Option<Instant>,
    used: u32,
    held_back: u64,
}

impl WarnBudget {
    fn new(per_period: u32) -> Self {
        Self {
            per_period,
            period_start: None,
            used: 0,
            held_back: 0,
        }
    }

    /// `Some(n)`: warn now, mentioning `n` events held back since the last
    /// warning; `None`: log at debug only.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let expired = self
            .period_start
            .is_none_or(|start| now.duration_since(start) >= WARN_EVERY);
        if expired {
            self.period_start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_period {
            self.used += 1;
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ReloadableServerConfig,
    options: IncomingOptions,
    shared: Arc<Shared>,
    established: mpsc::Sender<TlsConnection>,
) {
    loop {
        let (tcp, remote_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually per-connection (reset before accept) or resource
                // exhaustion (EMFILE): back off briefly instead of spinning.
                tracing::warn!(%error, "accepting a TCP connection failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if established.is_closed() {
            return;
        }
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        tune_socket(&tcp, remote_addr, &options);
        let (id, shed_signal, shed) = shared.lock().pending.admit(remote_addr);
        if let Some(shed) = shed {
            record_shed(&shared, &shed);
        }
        tokio::spawn(handshake_task(
            tcp,
            remote_addr,
            id,
            shed_signal,
            config.clone(),
            options.clone(),
            shared.clone(),
            established.clone(),
        ));
    }
}

fn tune_socket(tcp: &TcpStream, peer: SocketAddr, options: &IncomingOptions) {
    // Small unary messages: never let Nagle hold a reply back.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
    }
    if let Some(idle) = options.tcp_keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        if let Err(error) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, %peer, "cannot set TCP keepalive");
        }
    }
}

fn record_shed(shared: &Shared, shed: &Shed) {
    shared.counters.shed.fetch_add(1, Ordering::Relaxed);
    let cause = match shed.cause {
        ShedCause::TooManyPending => "too many handshakes pending",
        ShedCause::TooManyFromAddress => {
            shared.counters.shed_per_ip.fetch_add(1, Ordering::Relaxed);
            "too many handshakes pending from this address"
        }
    };
    tracing::debug!(peer = %shed.peer, cause, "oldest pending TLS handshake shed");
    let warn = shared.lock().shed_warnings.admit(Instant::now());
    if let Some(held_back) = warn {
        tracing::warn!(
            peer = %shed.peer,
            cause,
            earlier_sheds_not_warned = held_back,
            "shedding the oldest pending TLS handshakes (a flood of idle or slow connections?); \
             further sheds in the next {WARN_EVERY:?} are logged at debug"
        );
    }
}

/// How one handshake ended, when it did not produce a connection.
enum Failure {
    /// Nothing TLS-worthy arrived: no or an incomplete ClientHello, closed,
    /// not TLS at all. Cheap for anyone to cause, so warned in summary.
    BeforeHello(String),
    HelloTimeout(Duration),
    /// After a ClientHello: refusals an operator must see.
    Refused(String),
    Timeout(Duration),
    Shed,
}

#[allow(clippy::too_many_arguments)]
async fn handshake_task(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    id: u64,
    shed_signal: oneshot::Receiver<Infallible>,
    config: ReloadableServerConfig,
    options: IncomingOptions,
    shared: Arc<Shared>,
    established: mpsc::Sender<TlsConnection>,
) {
    let outcome = tokio::select! {
        // The sender is dropped when this handshake is shed.
        _ = shed_signal => Err(Failure::Shed),
        outcome = handshake(tcp, remote_addr, &config, &options) => outcome,
    };
    shared.lock().pending.remove(id);
    let failure = match outcome {
        Ok(connection) => {
            shared.counters.established.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                peer = %remote_addr,
                identity = %connection.info().identity(),
                "TLS connection established"
            );
            // The receiver is gone only when the server stopped.
            let _ = established.send(connection).await;
            return;
        }
        Err(failure) => failure,
    };
    let now = Instant::now();
    let counters = &shared.counters;
    match failure {
        // Counted and logged where the shed was decided.
        Failure::Shed => {}
        Failure::BeforeHello(reason) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            early_failure(&shared, now, remote_addr, &reason);
        }
        Failure::HelloTimeout(after) => {
            counters
                .client_hello_timeouts
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!("no ClientHello within {after:?}");
            early_failure(&shared, now, remote_addr, &reason);
        }
        Failure::Refused(reason) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            refusal(&shared, now, remote_addr, &reason);
        }
        Failure::Timeout(after) => {
            counters.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            let reason = format!("handshake timed out after {after:?}");
            refusal(&shared, now, remote_addr, &reason);
        }
    }
}

fn early_failure(shared: &Shared, now: Instant, peer: SocketAddr, reason: &str) {
    tracing::debug!(%peer, %reason, "TLS handshake failed");
    let warn = shared.lock().early_failure_warnings.admit(now);
    if let Some(held_back) = warn {
        tracing::warn!(
            %peer,
            %reason,
            earlier_not_warned = held_back,
            "TLS handshake failed before a ClientHello; \
             further such failures in the next {WARN_EVERY:?} are logged at debug"
        );
    }
}

fn refusal(shared: &Shared, now: Instant, peer: SocketAddr, reason: &str) {
    let warn = shared.lock().refusal_warnings.admit(now);
    match warn {
        Some(0) => tracing::warn!(%peer, %reason, "TLS handshake failed"),
        Some(held_back) => tracing::warn!(
            %peer,
            %reason,
            earlier_not_warned = held_back,
            "TLS handshake failed"
        ),
        None => tracing::debug!(%peer, %reason, "TLS handshake failed"),
    }
}

async fn handshake(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    config: &ReloadableServerConfig,
    options: &IncomingOptions,
) -> Result<TlsConnection, Failure> {
    let started = Instant::now();
    let hello_within = options.client_hello_timeout.min(options.handshake_timeout);
    // Reads only the ClientHello: no TLS session exists until it is complete.
    let lazy = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout_at(started + hello_within, lazy).await {
        Err(_) => return Err(Failure::HelloTimeout(hello_within)),
        Ok(Err(error)) => return Err(Failure::BeforeHello(handshake_failure_reason(&error))),
        Ok(Ok(start)) => start,
    };
    let deadline = started + options.handshake_timeout;
    let stream = match tokio::time::timeout_at(deadline, start.into_stream(config.current())).await
    {
        Err(_) => return Err(Failure::Timeout(options.handshake_timeout)),
        Ok(Err(error)) => return Err(Failure::Refused(handshake_failure_reason(&error))),
        Ok(Ok(stream)) => stream,
    };
    // The reason is only logged (see `refusal`), as text like the others.
    TlsConnection::new(stream, remote_addr).map_err(|e| Failure::Refused(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn a_full_table_sheds_the_oldest_pending_handshake() {
        let mut pending = Pending::new(3, 10);
        let (first, _r1, shed) = pending.admit(peer([10, 0, 0, 1], 1));
        assert!(shed.is_none());
        pending.admit(peer([10, 0, 0, 2], 2));
        pending.admit(peer([10, 0, 0, 3], 3));
        let (_, _r4, shed) = pending.admit(peer([10, 0, 0, 4], 4));
        let shed = shed.unwrap();
        assert_eq!(shed.peer, peer([10, 0, 0, 1], 1));
        assert_eq!(shed.cause, ShedCause::TooManyPending);
        assert!(pending.remove(first).is_none(), "the oldest is gone");
        assert_eq!(pending.len(), 3);
    }

    #[test]
    fn one_address_sheds_its_own_oldest_not_others() {
        let mut pending = Pending::new(100, 2);
        pending.admit(peer([10, 0, 0, 9], 9));
        pending.admit(peer([10, 0, 0, 1], 1));
        pending.admit(peer([10, 0, 0, 1], 2));
        let (_, _, shed) = pending.admit(peer([10, 0, 0, 1], 3));
        let shed = shed.unwrap();
        assert_eq!(shed.peer, peer([10, 0, 0, 1], 1));
        assert_eq!(shed.cause, ShedCause::TooManyFromAddress);
        assert_eq!(pending.len(), 3);
        assert_eq!(pending.by_ip[&IpAddr::from([10, 0, 0, 9])].len(), 1);
    }

    #[tokio::test]
    async fn a_shed_handshake_hears_of_it() {
        let mut pending = Pending::new(1, 1);
        let (_, mut signal, _) = pending.admit(peer([10, 0, 0, 1], 1));
        assert!(
            signal
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        pending.admit(peer([10, 0, 0, 2], 2));
        assert!(signal.await.is_err(), "the sender was dropped");
    }

    #[test]
    fn warnings_are_budgeted_per_period_and_count_what_was_held_back() {
        let mut budget = WarnBudget::new(2);
        let t0 = Instant::now();
        assert_eq!(budget.admit(t0), Some(0));
        assert_eq!(budget.admit(t0), Some(0));
        assert_eq!(budget.admit(t0), None);
        assert_eq!(budget.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(budget.admit(t0 + WARN_EVERY), Some(2));
        assert_eq!(budget.admit(t0 + WARN_EVERY), Some(0));
        assert_eq!(budget.admit(t0 + WARN_EVERY), None);
    }
}
