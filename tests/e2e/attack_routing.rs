//! Attacks on routing, over real mTLS on 127.0.0.1: one service point
//! flooding with deadlines too short to answer in must not take a department
//! offline for the others, and a department that is down must not show
//! callers the exchange's transport errors (addresses, OS errors).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tongban_devkit::local::LocalOptions;
use tongban_devkit::reference::{Dept, stories};
use tongban_tests::{capture_logs, error_info, lookup_request, own_deployment};
use tonic::Code;

/// One scenario at a time: the flood must not share the CPU with another.
static SERIAL: Mutex<()> = Mutex::const_new(());

const COMMUNITY: &str = "dongli-community";
const HOTLINE: &str = "hotline-96196";

fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// The one matter the hotline is granted; it needs police.identity.
fn hotline_lookup() -> tongban_proto::v1::LookupRequest {
    lookup_request(
        "social-insurance-record",
        &stories::LAID_OFF_WORKER,
        "police.identity",
    )
}

fn honest_lookup() -> tongban_proto::v1::LookupRequest {
    lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "police.identity",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_deadlines_does_not_take_a_department_offline() {
    let _serial = SERIAL.lock().await;
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let police = local
        .exchange()
        .exchange()
        .departments()
        .get("police")
        .unwrap()
        .clone();
    let mut honest = local.client(COMMUNITY).await.unwrap();
    let hotline = local.client(HOTLINE).await.unwrap();
    // Both callers work before the flood.
    honest
        .lookup(with_deadline(honest_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    hotline
        .clone()
        .lookup(with_deadline(hotline_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();

    // The hotline: 2,000 lookups, 32 at a time, with 3 ms deadlines (and
    // every fourth with 20 ms: enough to be asked, too little to count as
    // the department's slowness), well under its rate limit.
    // Bounded by count, not time: every call ends within its own deadline.
    let sent = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..32)
        .map(|_| {
            let mut client = hotline.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut unavailable = Vec::new();
                loop {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= 2000 {
                        break;
                    }
                    let deadline = if n % 4 == 3 { 20 } else { 3 };
                    let answer = client
                        .lookup(with_deadline(
                            hotline_lookup(),
                            Duration::from_millis(deadline),
                        ))
                        .await;
                    if let Err(status) = answer
                        && status.code() == Code::Unavailable
                    {
                        unavailable.push(status);
                    }
                }
                unavailable
            })
        })
        .collect();

    // Meanwhile the honest caller keeps working, with a normal deadline.
    let mut honest_errors = Vec::new();
    let mut honest_calls = 0;
    while honest_calls < 500 && sent.load(Ordering::Relaxed) < 2000 {
        honest_calls += 1;
        if let Err(status) = honest
            .lookup(with_deadline(honest_lookup(), Duration::from_secs(5)))
            .await
        {
            honest_errors.push(status);
        }
    }
    let mut hotline_unavailable = Vec::new();
    for flooder in flooders {
        hotline_unavailable.extend(flooder.await.unwrap());
    }
    // Seconds later (the old code was still failing then), still fine.
    for _ in 0..50 {
        honest_calls += 1;
        if let Err(status) = honest
            .lookup(with_deadline(honest_lookup(), Duration::from_secs(5)))
            .await
        {
            honest_errors.push(status);
        }
    }
    eprintln!(
        "{} hotline lookups sent, {honest_calls} honest lookups beside them",
        sent.load(Ordering::Relaxed).min(2000)
    );
    assert!(
        honest_errors.is_empty(),
        "{} of {honest_calls} honest lookups failed, first: {:?}",
        honest_errors.len(),
        honest_errors.first()
    );
    assert_eq!(police.ejections(), 0, "no police endpoint was ejected");
    assert!(
        hotline_unavailable.is_empty(),
        "the hotline itself saw the department as down: {:?}",
        hotline_unavailable.first()
    );

    // (What the hotline is told, DEADLINE_TOO_SHORT, is checked by the
    // routing unit tests: a 3 ms deadline runs out in its own client before
    // the audited refusal can arrive.)
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_that_is_down_shows_callers_no_transport_errors() {
    let _serial = SERIAL.lock().await;
    let logs = capture_logs();
    let (_dir, mut local) = own_deployment(LocalOptions::default()).await.unwrap();
    let mut client = local.client(COMMUNITY).await.unwrap();
    client
        .lookup(with_deadline(honest_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    // The log is the whole test process's: the police endpoint's address
    // tells this deployment's line from another test's.
    let police_addr = local
        .adapter_url(Dept::Police)
        .unwrap()
        .trim_start_matches("https://")
        .to_owned();
    local.stop_department(Dept::Police).await.unwrap();
    let from = logs.len();

    let status = client
        .lookup(with_deadline(honest_lookup(), Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "department police is unavailable; retry later"
    );
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "DEPARTMENT_UNAVAILABLE");
    for (key, value) in &meta {
        assert!(!value.contains("127.0.0.1"), "{key}={value}");
    }

    // The operators still see what happened, with the endpoint.
    let line = logs
        .wait_for(
            from,
            &["DEPARTMENT_UNAVAILABLE", "police", &police_addr],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.to_lowercase().contains("connect") || line.contains("os error"),
        "the transport error is in the log: {line}"
    );
    assert!(
        !line.contains(stories::LAID_OFF_WORKER.id_number),
        "no identity number in the log: {line}"
    );
    // (LocalDeployment::shutdown expects every department running.)
    local.restart_department(Dept::Police).await.unwrap();
    local.shutdown().await.unwrap();
}
