//! A page of audit search results, each entry as large as the log lets it
//! be, stays well under tonic's 4 MiB default message limit, so an
//! administrator's client can always decode its own answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use prost::Message;
use tongban_audit::read::MAX_PAGE;
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, LogSigner, PageRequest, SearchFilter,
    SqliteStore, origin_for_node,
};
use tongban_exchange::wire::record_to_proto;
use tongban_proto::v1::AuditSearchResponse;

/// tonic's default limit on a decoded message.
const TONIC_DEFAULT_MAX: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_largest_entries_is_well_under_the_message_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn AuditStore> =
        Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
    let mut config = AuditConfig::new("n1");
    // One batch of about 8 MB in an unoptimised build.
    config.append_timeout = std::time::Duration::from_secs(60);
    let log = AuditLog::open(
        store.clone(),
        LogSigner::generate(&origin_for_node("n1")).unwrap(),
        config,
    )
    .await
    .unwrap();
    // Four-byte characters: the most bytes per allowed character (an escape
    // is at most 10 bytes for 10 characters).
    // Longer than every limit (the log cuts it).
    let huge = "𝄞".repeat(2048);
    let entries: Vec<AuditEntry> = (0..MAX_PAGE)
        .map(|_| {
            let mut e = AuditEntry::new(EntryKind::AdminAction, chrono::Utc::now());
            for field in [
                &mut e.caller_org,
                &mut e.caller_unit,
                &mut e.operator,
                &mut e.matter,
                &mut e.case_number,
                &mut e.evidence_type,
                &mut e.department,
                &mut e.subject,
                &mut e.outcome_reason,
                &mut e.trace_id,
                &mut e.released_fields_hash,
                &mut e.detail,
                &mut e.policy_version,
            ] {
                *field = huge.clone();
            }
            e.outcome_code = i32::MIN;
            e.latency_us = u64::MAX;
            e
        })
        .collect();
    for r in log.append_all(entries).await {
        r.unwrap();
    }
    let page = tongban_audit::search(
        store.as_ref(),
        &SearchFilter::default(),
        &PageRequest {
            limit: MAX_PAGE,
            after: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(page.entries.len(), MAX_PAGE as usize);
    let response = AuditSearchResponse {
        records: page.entries.into_iter().map(record_to_proto).collect(),
        next_page_token: "9223372036854775807:18446744073709551615:n1".into(),
    };
    let size = response.encoded_len();
    assert!(
        size <= TONIC_DEFAULT_MAX / 2,
        "a page of {MAX_PAGE} entries is {size} bytes"
    );
    log.shutdown().await.unwrap();
}
