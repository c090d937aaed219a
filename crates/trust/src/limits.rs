//! [`ServerLimits`]: the one place a gRPC server's HTTP/2 and connection
//! limits are set, so the exchange, the adapters and their health ports are
//! hardened alike (stream floods, rapid reset, oversized headers, dead
//! peers, idle sockets).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::Server;

use crate::incoming::IncomingOptions;

/// HTTP/2 and connection limits of a gRPC server (`[server]` in the
/// exchange's and the adapters' configuration). Every field has a default;
/// times are in milliseconds, and 0 turns an optional one off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`: streams one connection may have
    /// open at once; more are refused with `REFUSED_STREAM` (default 128).
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before the server accepted them
    /// (the rapid-reset attack, CVE-2023-44487); one more gets `GOAWAY
    /// ENHANCE_YOUR_CALM` (default 20).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset because of the client's errors on one
    /// connection (MadeYouReset, CVE-2025-8671) before it sends `GOAWAY`
    /// (default 256).
    pub max_local_error_reset_streams: usize,
    /// Largest HTTP/2 frame the server accepts, 16 KiB to 16 MiB - 1
    /// (default 16 KiB, the protocol minimum).
    pub max_frame_size: u32,
    /// Largest request header block, decoded (default 16 KiB: gRPC metadata
    /// is small).
    pub max_header_list_size: u32,
    /// Flow-control window per stream: what one request may have in flight
    /// unread (default 256 KiB).
    pub initial_stream_window_size: u32,
    /// Flow-control window per connection: the most the server buffers for
    /// one connection (default 1 MiB).
    pub initial_connection_window_size: u32,
    /// Longest a handler may take to start answering; the caller's
    /// `grpc-timeout` applies when shorter (default 60 000; 0: none).
    pub request_timeout_ms: u64,
    /// How often an HTTP/2 PING checks that the client is still there
    /// (default 30 000; 0: no PINGs).
    pub http2_keepalive_interval_ms: u64,
    /// A PING unanswered this long closes the connection (default 10 000).
    pub http2_keepalive_timeout_ms: u64,
    /// TCP keepalive idle time on accepted sockets (default 60 000; 0: the
    /// system's setting).
    pub tcp_keepalive_ms: u64,
    /// A connection older than this is asked to go away (`GOAWAY`; clients
    /// reconnect), e.g. to rebalance behind a load balancer (default 0:
    /// never).
    pub max_connection_age_ms: u64,
    /// Whole TLS handshake, from accept to an established connection
    /// (default 10 000).
    pub handshake_timeout_ms: u64,
    /// The client's ClientHello must have arrived within this time of accept
    /// (default 3 000).
    pub client_hello_timeout_ms: u64,
    /// TLS handshakes pending at once; one more sheds the oldest (default
    /// 1024).
    pub max_pending_handshakes: usize,
    /// TLS handshakes pending at once from one IP address; one more sheds
    /// that address's oldest (default 128).
    pub max_pending_handshakes_per_ip: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        let incoming = IncomingOptions::default();
        Self {
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            max_frame_size: MIN_FRAME_SIZE,
            max_header_list_size: 16 * 1024,
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 1024 * 1024,
            request_timeout_ms: 60_000,
            http2_keepalive_interval_ms: 30_000,
            http2_keepalive_timeout_ms: 10_000,
            tcp_keepalive_ms: 60_000,
            max_connection_age_ms: 0,
            handshake_timeout_ms: millis(incoming.handshake_timeout),
            client_hello_timeout_ms: millis(incoming.client_hello_timeout),
            max_pending_handshakes: incoming.max_pending_handshakes,
            max_pending_handshakes_per_ip: incoming.max_pending_handshakes_per_ip,
        }
    }
}

const MIN_FRAME_SIZE: u32 = 16_384;
const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// A [`ServerLimits`] value the protocol or common sense does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("{field} must be between {min} and {max}, not {value}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

fn within(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), LimitsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LimitsError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

impl ServerLimits {
    /// Refuses values HTTP/2 does not allow (hyper would panic on some) and
    /// zero where zero would mean "refuse everything" or "no limit".
    pub fn check(&self) -> Result<(), LimitsError> {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let window = u64::from(MAX_WINDOW_SIZE);
        within(
            "max_concurrent_streams",
            self.max_concurrent_streams.into(),
            1,
            u32::MAX.into(),
        )?;
        within(
            "max_pending_accept_reset_streams",
            count(self.max_pending_accept_reset_streams),
            1,
            1 << 20,
        )?;
        within(
            "max_local_error_reset_streams",
            count(self.max_local_error_reset_streams),
            1,
            1 << 20,
        )?;
        within(
            "max_frame_size",
            self.max_frame_size.into(),
            MIN_FRAME_SIZE.into(),
            MAX_FRAME_SIZE.into(),
        )?;
        within(
            "max_header_list_size",
            self.max_header_list_size.into(),
            1024,
            1 << 20,
        )?;
        within(
            "initial_stream_window_size",
            self.initial_stream_window_size.into(),
            1024,
            window,
        )?;
        within(
            "initial_connection_window_size",
            self.initial_connection_window_size.into(),
            1024,
            window,
        )?;
        if self.http2_keepalive_interval_ms > 0 {
            within(
                "http2_keepalive_timeout_ms",
                self.http2_keepalive_timeout_ms,
                1,
                u64::MAX,
            )?;
        }
        within(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            1,
            u64::MAX,
        )?;
        within(
            "client_hello_timeout_ms",
            self.client_hello_timeout_ms,
            1,
            u64::MAX,
        )?;
        within(
            "max_pending_handshakes",
            count(self.max_pending_handshakes),
            1,
            u64::MAX,
        )?;
        within(
            "max_pending_handshakes_per_ip",
            count(self.max_pending_handshakes_per_ip),
            1,
            u64::MAX,
        )?;
        Ok(())
    }

    /// Whether every limit has its default (lets configs leave `[server]` out
    /// when rendered).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// `Server::builder()` with these limits; add layers and services to it.
    pub fn server_builder(&self) -> Result<Server, LimitsError> {
        self.check()?;
        let mut server = Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(self.max_local_error_reset_streams))
            .max_frame_size(self.max_frame_size)
            .http2_max_header_list_size(self.max_header_list_size)
            .initial_stream_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .http2_keepalive_interval(optional_ms(self.http2_keepalive_interval_ms))
            .http2_keepalive_timeout(optional_ms(self.http2_keepalive_timeout_ms))
            // Only for `serve()`; `serve_with_incoming` takes it from the
            // incoming stream (see `tcp_keepalive` and `incoming_options`).
            .tcp_keepalive(self.tcp_keepalive());
        if let Some(timeout) = optional_ms(self.request_timeout_ms) {
            server = server.timeout(timeout);
        }
        if let Some(age) = optional_ms(self.max_connection_age_ms) {
            server = server.max_connection_age(age);
        }
        Ok(server)
    }

    /// TCP keepalive idle time for accepted sockets (plaintext listeners
    /// set it on `TcpIncoming`; [`incoming_options`](Self::incoming_options)
    /// carries it for TLS).
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        optional_ms(self.tcp_keepalive_ms)
    }

    /// The TLS accept loop's options from these limits.
    pub fn incoming_options(&self) -> IncomingOptions {
        IncomingOptions {
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            client_hello_timeout: Duration::from_millis(self.client_hello_timeout_ms),
            max_pending_handshakes: self.max_pending_handshakes,
            max_pending_handshakes_per_ip: self.max_pending_handshakes_per_ip,
            tcp_keepalive: self.tcp_keepalive(),
        }
    }

    /// The configuration keys, for `TONGBAN_<SECTION>_<KEY>` overrides:
    /// every one is an integer.
    pub const KEYS: [&'static str; 16] = [
        "max_concurrent_streams",
        "max_pending_accept_reset_streams",
        "max_local_error_reset_streams",
        "max_frame_size",
        "max_header_list_size",
        "initial_stream_window_size",
        "initial_connection_window_size",
        "request_timeout_ms",
        "http2_keepalive_interval_ms",
        "http2_keepalive_timeout_ms",
        "tcp_keepalive_ms",
        "max_connection_age_ms",
        "handshake_timeout_ms",
        "client_hello_timeout_ms",
        "max_pending_handshakes",
        "max_pending_handshakes_per_ip",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_check_and_match_the_accept_loop() {
        let limits = ServerLimits::default();
        limits.check().unwrap();
        assert_eq!(limits.incoming_options(), IncomingOptions::default());
        limits.server_builder().unwrap();
    }

    #[test]
    fn every_key_is_a_field_and_partial_tables_keep_defaults() {
        let text = ServerLimits::KEYS
            .iter()
            .map(|k| format!("{k} = 20000\n"))
            .collect::<String>();
        let all: ServerLimits = toml::from_str(&text).unwrap();
        assert_eq!(all.max_frame_size, 20_000);
        let some: ServerLimits = toml::from_str("max_concurrent_streams = 8").unwrap();
        assert_eq!(
            some,
            ServerLimits {
                max_concurrent_streams: 8,
                ..ServerLimits::default()
            }
        );
        assert!(toml::from_str::<ServerLimits>("max_streams = 8").is_err());
    }

    #[test]
    fn values_hyper_would_panic_on_are_refused() {
        let bad = |limits: ServerLimits| limits.check().unwrap_err().to_string();
        let small_frames = bad(ServerLimits {
            max_frame_size: 1000,
            ..ServerLimits::default()
        });
        assert_eq!(
            small_frames,
            "max_frame_size must be between 16384 and 16777215, not 1000"
        );
        let huge_window = bad(ServerLimits {
            initial_connection_window_size: u32::MAX,
            ..ServerLimits::default()
        });
        assert!(
            huge_window.starts_with("initial_connection_window_size"),
            "{huge_window}"
        );
        assert!(
            ServerLimits {
                max_concurrent_streams: 0,
                ..ServerLimits::default()
            }
            .server_builder()
            .is_err()
        );
    }
}
