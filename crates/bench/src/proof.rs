//! `tongban bench --transparency-proof`: what one person's access history
//! costs to prove, in a log of a realistic size.
//!
//! Builds an audit log of `--proof-entries` entries on SQLite in a temporary
//! directory through the real writer (`AuditLog` with transparency on, so
//! every checkpoint commits to the subject map), about `--proof-people`
//! synthetic people, one of whom — a real identity number — is accessed
//! exactly `--proof-accesses` times, spread through the log. A witness
//! cosigns the final checkpoint. Then, for that person, it reads the first
//! page as the `Transparency` service does (`first_page`), encodes the
//! `ListAccessesResponse` the service would send, and reports its size part
//! by part; and it times the portal's offline check (`verify_history`) with
//! pinned keys: the node's checkpoint key, the witness's key and the VRF key.
//!
//! The other people's subject keys are written as random hex directly (a VRF
//! evaluation each would only slow the build); only the measured person's
//! key comes from the VRF, with its proof.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt as _;
use prost::Message as _;
use serde::Serialize;
use tongban_audit::map::{EMPTY, MapNode, MapPath};
use tongban_audit::store::LoggedEntry;
use tongban_audit::transparency::{
    CheckOptions, History, TrustAnchors, first_page, verify_history,
};
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, LogSigner, SqliteStore,
    SubjectPseudonymizer, WitnessSigner, origin_for_node,
};
use tongban_core::Catalogue;
use tongban_devkit::pki::{
    DevOrganisation, ORG_DONGLI_COMMUNITY, ORG_MIYI_POLICE, ORG_SALIAN_TOWN,
};
use tongban_devkit::reference::stories;
use tongban_proto::v1::{self as pb, ListAccessesResponse};

use crate::BenchError;
use crate::report::{Machine, median};

/// The node of the measured log.
const NODE: &str = "bench-proof";
/// The witness that cosigns its final checkpoint.
const WITNESS: &str = "witness.bench";
/// Entries per `append_all`: the writer's default `max_batch`.
const BATCH: usize = 1024;
/// `append_all` calls in flight, so the writer always has the next batch.
const IN_FLIGHT: usize = 4;
/// Most entries the service puts on one page (`MAX_PAGE` there).
const MAX_PAGE: u64 = 500;
/// Map paths asked for in one store read while counting the map.
const MAP_READ_CHUNK: usize = 256;
/// Timed reads of the first page.
const PAGE_READS: usize = 20;
/// Time between consecutive synthetic entries: a million of them span
/// about 174 days.
const ENTRY_SPACING_MS: i64 = 15_000;

/// `--transparency-proof` and its sizes.
#[derive(Debug, Clone, Args)]
pub struct ProofArgs {
    /// Instead of the paths: build an audit log (SQLite, transparency on)
    /// and measure one person's access-history proof: its size as the
    /// Transparency service sends it, and how long the portal's offline
    /// check takes. The other flags of the paths do not apply.
    #[arg(long)]
    pub transparency_proof: bool,
    /// Entries in that log.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub proof_entries: u64,
    /// People the entries are about (the measured person included).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    pub proof_people: u64,
    /// Accesses to the measured person, spread through the log (one page:
    /// at most 500).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=MAX_PAGE))]
    pub proof_accesses: u64,
    /// Timed runs of the offline check.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub proof_runs: u64,
}

impl Default for ProofArgs {
    fn default() -> Self {
        Self {
            transparency_proof: false,
            proof_entries: 1_000_000,
            proof_people: 100_000,
            proof_accesses: 100,
            proof_runs: 200,
        }
    }
}

/// What `--transparency-proof` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    pub machine: Machine,
    pub log: LogBuild,
    pub map: MapSize,
    pub person: Person,
    /// `first_page` (one store snapshot and the map proof), repeated.
    pub first_page: Timing,
    /// The page's entries' inclusion proofs, read after it, repeated.
    pub inclusion_proofs: Timing,
    pub response: ResponseBytes,
    /// `verify_history` on the decoded answer, with pinned keys.
    pub verify: Timing,
    /// Decoding the protobuf answer, converting it and verifying it: what a
    /// portal does with the bytes it receives.
    pub decode_and_verify: Timing,
}

/// How the log was built.
#[derive(Debug, Clone, Serialize)]
pub struct LogBuild {
    pub entries: u64,
    pub people: u64,
    pub store: String,
    /// From the first append until the final checkpoint (with the map
    /// update it commits to) was signed.
    pub build_seconds: f64,
    pub entries_per_sec: f64,
    pub batch: usize,
    pub batches_in_flight: usize,
    pub checkpoints_signed: u64,
    /// The database files (main, WAL, shared memory) afterwards.
    pub database_bytes: u64,
}

/// The subject map's rows in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MapSize {
    /// One per person the log names.
    pub leaves: u64,
    pub internal_nodes: u64,
    pub rows: u64,
}

/// The measured person.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub accesses: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// Levels of the map proof (siblings on the path to the leaf).
    pub map_proof_levels: usize,
}

/// The answer's size, part by part (payload bytes; `framing` is the rest:
/// protobuf tags and lengths, the node's name, the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResponseBytes {
    pub total: usize,
    pub subject_key: usize,
    pub vrf_proof: usize,
    /// The signed note: body, the node's signature, the witness's
    /// cosignature.
    pub checkpoint: usize,
    pub map_proof: usize,
    /// The encoded `AccessEntry` messages.
    pub entries: usize,
    pub entry_count: usize,
    pub framing: usize,
}

/// Wall-clock times of repeated runs, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub runs: usize,
    pub median_us: f64,
    /// Nearest rank.
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

impl Timing {
    /// From the measured durations; none of nothing.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let n = us.len();
        let rank = |p: f64| {
            let r = (p * n as f64).ceil() as usize;
            us.get(r.clamp(1, n) - 1).copied()
        };
        Some(Self {
            runs: n,
            median_us: median(us.iter().copied())?,
            p99_us: rank(0.99)?,
            min_us: *us.first()?,
            max_us: *us.last()?,
        })
    }
}

/// The indexes of the measured person's accesses: `accesses` of them, one
/// in the middle of each equal stretch of the log.
pub fn access_indexes(entries: u64, accesses: u64) -> Vec<u64> {
    if accesses == 0 || accesses > entries {
        return Vec::new();
    }
    (0..accesses)
        .map(|j| {
            // (j + ½) × entries / accesses, in integers; below `entries`.
            ((2 * j + 1) * entries) / (2 * accesses)
        })
        .collect()
}

/// A small, fast, deterministic generator (SplitMix64): the synthetic
/// population needs spread, not secrecy.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn hex(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes * 2);
        for _ in 0..bytes.div_ceil(8) {
            out.push_str(&format!("{:016x}", self.next()));
        }
        out.truncate(bytes * 2);
        out
    }

    fn below(&mut self, n: u64) -> u64 {
        // The modulo bias is immaterial for picking among people.
        self.next() % n.max(1)
    }
}

/// Who asks, in turn: the service points of the development PKI.
const CALLERS: [(&DevOrganisation, &str); 3] = [
    (&ORG_DONGLI_COMMUNITY, "dongli-community"),
    (&ORG_SALIAN_TOWN, "salian-town"),
    (&ORG_MIYI_POLICE, "miyi-police"),
];

/// The synthetic log: who each entry is about and what it says.
struct Population {
    others: Vec<String>,
    person: String,
    person_at: Vec<u64>,
    start: DateTime<Utc>,
}

impl Population {
    fn new(people: u64, person: String, person_at: Vec<u64>) -> Self {
        let mut rng = SplitMix(0x7467_6261_6e31_3300);
        let others = (1..people).map(|_| rng.hex(32)).collect();
        Self {
            others,
            person,
            person_at,
            // A fixed start: the run is the same every time.
            start: DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
        }
    }

    /// Entry `index`, as the exchange would have written it for a Lookup.
    fn entry(&self, index: u64, rng: &mut SplitMix) -> AuditEntry {
        let ms = i64::try_from(index)
            .unwrap_or(i64::MAX / ENTRY_SPACING_MS)
            .saturating_mul(ENTRY_SPACING_MS);
        let time = self.start + chrono::Duration::milliseconds(ms);
        let mut e = AuditEntry::new(EntryKind::Lookup, time);
        let subject = if self.person_at.binary_search(&index).is_ok() {
            self.person.clone()
        } else {
            let i = rng.below(self.others.len() as u64) as usize;
            self.others.get(i).cloned().unwrap_or_default()
        };
        let (org, unit) = CALLERS[(index % CALLERS.len() as u64) as usize];
        let (evidence, dept) =
            crate::GATHER_EVIDENCE[(index % crate::GATHER_EVIDENCE.len() as u64) as usize];
        e.caller_org = org.credit_code.into();
        e.caller_unit = unit.into();
        e.operator = format!("clerk-{:04}", rng.below(10_000));
        e.matter = crate::MATTER.into();
        e.case_number = format!("PZH-2026-{:08}", index);
        e.evidence_type = evidence.into();
        e.department = dept.id().into();
        e.subject = subject;
        e.latency_us = 2_000 + rng.below(20_000);
        e.trace_id = rng.hex(16);
        e.released_fields_hash = rng.hex(32);
        e.policy_version = rng.hex(32);
        e
    }
}

/// Runs the proof benchmark (progress on stderr unless `quiet`).
pub async fn run(args: &ProofArgs, quiet: bool) -> Result<ProofReport, BenchError> {
    let progress = |line: &str| crate::progress(quiet, line);
    let setup = |what: &str, e: &dyn std::fmt::Display| BenchError::Setup(format!("{what}: {e}"));
    if args.proof_accesses > args.proof_entries.min(MAX_PAGE) || args.proof_accesses == 0 {
        return Err(BenchError::Invalid(format!(
            "--proof-accesses must be between 1 and {} (one page, at most the log's entries)",
            args.proof_entries.min(MAX_PAGE)
        )));
    }
    let machine = Machine::read();
    let dir = tempfile::Builder::new()
        .prefix("tongban-bench-proof-")
        .tempdir()
        .map_err(|e| BenchError::io("creating a temporary directory", e))?;

    // Real keys, as a node and a portal hold them.
    let pseudonymizer = SubjectPseudonymizer::from_bytes(b"tongban bench: proof pseudonyms!")
        .map_err(|e| setup("pseudonym key", &e))?;
    let signer = LogSigner::generate(&origin_for_node(NODE)).map_err(|e| setup("log key", &e))?;
    let witness = WitnessSigner::generate(WITNESS).map_err(|e| setup("witness key", &e))?;
    let id_number = stories::CERTIFIED_RETIREE.id_number;
    let person_key = pseudonymizer.subject_key(id_number);

    let db = dir.path().join("audit.db");
    let store: Arc<dyn AuditStore> = Arc::new(
        SqliteStore::open(&db)
            .await
            .map_err(|e| setup("audit store", &e))?,
    );
    let mut config = AuditConfig::new(NODE);
    config.transparency = Some(pseudonymizer.vrf_public_key());
    // Batches wait behind each other and the map updates; the writer's own
    // tuning is left as the exchange runs it.
    config.append_timeout = Duration::from_secs(300);
    let log = AuditLog::open(store.clone(), signer.clone(), config)
        .await
        .map_err(|e| setup("audit log", &e))?;

    let person_at = access_indexes(args.proof_entries, args.proof_accesses);
    let population = Population::new(args.proof_people, hex_of(&person_key), person_at.clone());
    progress(&format!(
        "building an audit log of {} entries about {} people (SQLite, transparency on) in {}",
        args.proof_entries,
        args.proof_people,
        dir.path().display()
    ));
    let built = build(&log, &population, args.proof_entries, quiet).await;
    let build_time = match built {
        Ok(t) => t,
        Err(e) => {
            let _ = log.shutdown().await;
            return Err(e);
        }
    };
    let stats = log.stats();
    log.shutdown()
        .await
        .map_err(|e| setup("closing the audit log", &e))?;

    // The witness cosigns the checkpoint the answer is made against.
    let latest = store
        .latest_checkpoint(NODE)
        .await
        .map_err(|e| setup("reading the checkpoint", &e))?
        .ok_or_else(|| BenchError::Setup("the log signed no checkpoint".into()))?;
    let body = latest.note.split("\n\n").next().unwrap_or_default();
    let cosigned_at = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let line = witness
        .cosign(&format!("{body}\n"), cosigned_at)
        .map_err(|e| setup("cosigning", &e))?;
    store
        .add_cosignature(NODE, latest.tree_size, &line)
        .await
        .map_err(|e| setup("storing the cosignature", &e))?;

    progress("counting the subject map's rows");
    let map = map_size(store.as_ref()).await?;

    progress(&format!(
        "reading the person's first page {PAGE_READS} times"
    ));
    let limit = u32::try_from(args.proof_accesses).unwrap_or(u32::MAX);
    let mut page_times = Vec::with_capacity(PAGE_READS);
    let mut inclusion_times = Vec::with_capacity(PAGE_READS);
    let mut page = None;
    let mut inclusion = Vec::new();
    for _ in 0..PAGE_READS {
        let started = Instant::now();
        let p = first_page(store.as_ref(), NODE, &person_key, limit)
            .await
            .map_err(|e| setup("first_page", &e))?;
        page_times.push(started.elapsed());
        // What the service reads next: each entry's inclusion proof.
        let size = p.checkpoint.as_ref().map_or(0, |c| c.tree_size);
        let indexes: Vec<u64> = p.entries.iter().map(|e| e.index).collect();
        let started = Instant::now();
        inclusion =
            tongban_audit::transparency::inclusion_proofs(store.as_ref(), NODE, &indexes, size)
                .await
                .map_err(|e| setup("inclusion proofs", &e))?;
        inclusion_times.push(started.elapsed());
        page = Some(p);
    }
    let page = page.ok_or_else(|| BenchError::Setup("no page read".into()))?;
    if page.count != args.proof_accesses || page.entries.len() as u64 != args.proof_accesses {
        return Err(BenchError::Setup(format!(
            "the map counts {} accesses and the page lists {}, not the {} written",
            page.count,
            page.entries.len(),
            args.proof_accesses
        )));
    }
    let map_proof_levels = page.map_proof.siblings.len();
    let first_index = page.entries.first().map_or(0, |e| e.index);
    let last_index = page.entries.last().map_or(0, |e| e.index);

    let catalogue = Catalogue::embedded();
    let subject = pseudonymizer.prove(id_number);
    let checkpoint = page
        .checkpoint
        .as_ref()
        .ok_or_else(|| BenchError::Setup("the page has no checkpoint".into()))?;
    let response = ListAccessesResponse {
        subject_key: subject.key.to_vec(),
        vrf_proof: subject.proof.clone(),
        nodes: vec![pb::NodeHistory {
            node: NODE.into(),
            checkpoint: checkpoint.note.clone(),
            map_proof: page.map_proof.to_bytes(),
            count: page.count,
            pruned: None,
            entries: page
                .entries
                .iter()
                .zip(&inclusion)
                .map(|(e, proof)| disclosed(e, proof, &catalogue))
                .collect(),
        }],
        next_page_token: String::new(),
    };
    let bytes = response.encode_to_vec();
    let sizes = response_bytes(&response);

    let anchors = TrustAnchors {
        logs: vec![signer.verifier()],
        witnesses: vec![witness.verifier()],
        quorum: 1,
        vrf_key: Some(pseudonymizer.vrf_public_key()),
    };
    let options = CheckOptions::default();
    let history = history_of(&bytes)?;
    let verified = verify_history(&history, id_number, &anchors, &options)
        .map_err(|e| BenchError::Setup(format!("the proof does not verify: {e}")))?;
    let listed: usize = verified.nodes.iter().map(|n| n.entries.len()).sum();
    if listed as u64 != args.proof_accesses {
        return Err(BenchError::Setup(format!(
            "the verified history lists {listed} accesses, not {}",
            args.proof_accesses
        )));
    }

    progress(&format!(
        "timing verify_history, {} runs each without and with decoding",
        args.proof_runs
    ));
    let runs = usize::try_from(args.proof_runs).unwrap_or(usize::MAX);
    let mut verify_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let ok = verify_history(&history, id_number, &anchors, &options).is_ok();
        verify_times.push(started.elapsed());
        std::hint::black_box(ok);
    }
    let mut decode_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let ok = history_of(std::hint::black_box(&bytes))
            .map(|h| verify_history(&h, id_number, &anchors, &options).is_ok())
            .unwrap_or(false);
        decode_times.push(started.elapsed());
        std::hint::black_box(ok);
    }
    let database_bytes = database_bytes(dir.path());
    let timing = |samples: &[Duration]| {
        Timing::of(samples).ok_or_else(|| BenchError::Setup("nothing was timed".into()))
    };
    let mut machine = machine;
    machine.load_average_after = crate::report::load_average();
    Ok(ProofReport {
        machine,
        log: LogBuild {
            entries: args.proof_entries,
            people: args.proof_people,
            store: "SQLite, WAL, synchronous=FULL".into(),
            build_seconds: build_time.as_secs_f64(),
            entries_per_sec: args.proof_entries as f64 / build_time.as_secs_f64().max(1e-9),
            batch: BATCH,
            batches_in_flight: IN_FLIGHT,
            checkpoints_signed: stats.checkpoints_signed,
            database_bytes,
        },
        map,
        person: Person {
            accesses: args.proof_accesses,
            first_index,
            last_index,
            map_proof_levels,
        },
        first_page: timing(&page_times)?,
        inclusion_proofs: timing(&inclusion_times)?,
        response: sizes,
        verify: timing(&verify_times)?,
        decode_and_verify: timing(&decode_times)?,
    })
}

/// Appends every entry through the writer, [`IN_FLIGHT`] batches at a time,
/// then flushes (the final checkpoint and its map update). Returns the time
/// it took.
async fn build(
    log: &AuditLog,
    population: &Population,
    entries: u64,
    quiet: bool,
) -> Result<Duration, BenchError> {
    let batches = entries.div_ceil(BATCH as u64);
    let report_every = (batches / 10).max(1);
    let mut rng = SplitMix(0x6175_6469_7400_0001);
    let started = Instant::now();
    let mut appended = futures::stream::iter(0..batches)
        .map(|b| {
            let from = b * BATCH as u64;
            let to = (from + BATCH as u64).min(entries);
            let batch: Vec<AuditEntry> =
                (from..to).map(|i| population.entry(i, &mut rng)).collect();
            log.append_all(batch)
        })
        .buffered(IN_FLIGHT);
    let mut done = 0u64;
    while let Some(results) = appended.next().await {
        for r in results {
            r.map_err(|e| BenchError::Setup(format!("appending: {e}")))?;
        }
        done += 1;
        if done.is_multiple_of(report_every) {
            crate::progress(
                quiet,
                &format!(
                    "  {} of {entries} entries committed ({:.0} s)",
                    (done * BATCH as u64).min(entries),
                    started.elapsed().as_secs_f64()
                ),
            );
        }
    }
    log.flush()
        .await
        .map_err(|e| BenchError::Setup(format!("signing the final checkpoint: {e}")))?;
    Ok(started.elapsed())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store's map rows, counted by walking the map from its root through
/// the store's own reads (the bench holds no SQL).
async fn map_size(store: &dyn AuditStore) -> Result<MapSize, BenchError> {
    let read = |e: tongban_audit::StoreError| BenchError::Setup(format!("reading the map: {e}"));
    if store.map_single_leaf(NODE).await.map_err(read)?.is_some() {
        return Ok(MapSize {
            leaves: 1,
            internal_nodes: 0,
            rows: 1,
        });
    }
    let mut level = vec![MapPath::ROOT];
    let (mut leaves, mut internal) = (0u64, 0u64);
    while !level.is_empty() {
        let mut next = Vec::new();
        for chunk in level.chunks(MAP_READ_CHUNK) {
            let nodes = store.map_nodes(NODE, chunk).await.map_err(read)?;
            if nodes.len() != chunk.len() {
                return Err(BenchError::Setup(format!(
                    "the map store lacks {} of {} internal nodes its parents name",
                    chunk.len() - nodes.len(),
                    chunk.len()
                )));
            }
            internal += nodes.len() as u64;
            for node in &nodes {
                let (l, children) = children_of(node);
                leaves += l;
                next.extend(children);
            }
        }
        level = next;
    }
    Ok(MapSize {
        leaves,
        internal_nodes: internal,
        rows: leaves + internal,
    })
}

/// A node's leaf children (counted) and internal children (their paths).
fn children_of(node: &MapNode) -> (u64, Vec<MapPath>) {
    let mut leaves = 0;
    let mut paths = Vec::new();
    for bit in [0u8, 1] {
        let child = node.child(bit);
        if child.leaf_key.is_some() {
            leaves += 1;
        } else if child.hash != EMPTY {
            let depth = usize::from(node.path.depth());
            let mut prefix = *node.path.prefix();
            if bit == 1
                && let Some(byte) = prefix.get_mut(depth / 8)
            {
                *byte |= 0x80 >> (depth % 8);
            }
            // An internal child lies above depth 256 (`MapNode::check`).
            if let Some(p) = MapPath::of_key(&prefix, node.path.depth() + 1) {
                paths.push(p);
            }
        }
    }
    (leaves, paths)
}

/// One entry as the service discloses it (names and titles for display
/// from the directory and the catalogue).
fn disclosed(
    logged: &LoggedEntry,
    inclusion: &[tongban_audit::Hash],
    catalogue: &Catalogue,
) -> pb::AccessEntry {
    let public = logged.entry.public();
    let org_name = CALLERS
        .iter()
        .find(|(o, _)| o.credit_code == public.caller_org)
        .map_or("", |(o, _)| o.name_zh);
    let matter = catalogue.matter(&public.matter);
    pb::AccessEntry {
        index: logged.index,
        access: Some(pb::access_entry::Access::Disclosed(
            tongban_exchange::wire::disclosed_access(public, org_name, matter),
        )),
        inclusion_proof: inclusion.iter().map(|h| h.to_vec()).collect(),
    }
}

/// The answer's size, part by part.
pub fn response_bytes(response: &ListAccessesResponse) -> ResponseBytes {
    let total = response.encoded_len();
    let nodes = &response.nodes;
    let checkpoint = nodes.iter().map(|n| n.checkpoint.len()).sum();
    let map_proof = nodes.iter().map(|n| n.map_proof.len()).sum();
    let entries = nodes
        .iter()
        .flat_map(|n| &n.entries)
        .map(|e| e.encoded_len())
        .sum();
    let entry_count = nodes.iter().map(|n| n.entries.len()).sum();
    let payload =
        response.subject_key.len() + response.vrf_proof.len() + checkpoint + map_proof + entries;
    ResponseBytes {
        total,
        subject_key: response.subject_key.len(),
        vrf_proof: response.vrf_proof.len(),
        checkpoint,
        map_proof,
        entries,
        entry_count,
        framing: total.saturating_sub(payload),
    }
}

/// What a portal makes of the answer's bytes: the history to verify. The
/// entries' subject is the answer's subject key, never read from them (the
/// leaf hash commits to it).
pub fn history_of(bytes: &[u8]) -> Result<History, BenchError> {
    let bad = |what: &str| BenchError::Invalid(format!("the answer: {what}"));
    let response = ListAccessesResponse::decode(bytes).map_err(|e| bad(&e.to_string()))?;
    let mut pages = tongban_exchange::wire::HistoryPages::new();
    pages.add(response).map_err(|e| bad(&e.to_string()))?;
    Ok(pages.finish().0)
}

/// Bytes of the files in `dir` (the database, its WAL and shared memory).
fn database_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl ProofReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let m = &self.machine;
        let l = &self.log;
        let r = &self.response;
        let load = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2}"));
        let _ = writeln!(
            out,
            "\ntongban bench --transparency-proof — {} CPUs ({}), load average {} before / {} after",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("unknown CPU"),
            load(m.load_average_before),
            load(m.load_average_after),
        );
        let _ = writeln!(
            out,
            "\nAudit log: {} entries about {} people, one node, {}, transparency on",
            l.entries, l.people, l.store
        );
        let _ = writeln!(
            out,
            "  built through AuditLog::append_all ({} entries per call, {} calls in flight) in {:.1} s: {:.0} entries/s; {} checkpoints signed",
            l.batch, l.batches_in_flight, l.build_seconds, l.entries_per_sec, l.checkpoints_signed
        );
        let _ = writeln!(
            out,
            "  database files: {:.1} MiB",
            l.database_bytes as f64 / (1024.0 * 1024.0)
        );
        let _ = writeln!(
            out,
            "  subject map: {} leaves + {} internal nodes = {} rows",
            self.map.leaves, self.map.internal_nodes, self.map.rows
        );
        let p = &self.person;
        let _ = writeln!(
            out,
            "\nOne person: {} accesses, log indexes {} … {}; first_page (limit {}): median {}, p99 {}; their inclusion proofs: median {}, p99 {}; over {} reads",
            p.accesses,
            p.first_index,
            p.last_index,
            p.accesses,
            micros(self.first_page.median_us),
            micros(self.first_page.p99_us),
            micros(self.inclusion_proofs.median_us),
            micros(self.inclusion_proofs.p99_us),
            self.first_page.runs
        );
        let _ = writeln!(
            out,
            "\nListAccessesResponse as the Transparency service sends it: {} bytes",
            r.total
        );
        let mut part = |name: &str, bytes: usize, note: String| {
            let _ = writeln!(out, "  {name:<28} {bytes:>8} B  {note}");
        };
        part("subject key", r.subject_key, String::new());
        part("VRF proof", r.vrf_proof, String::new());
        part(
            "checkpoint note",
            r.checkpoint,
            "signed by the node, cosigned by one witness".into(),
        );
        part(
            "map proof",
            r.map_proof,
            format!("{} levels", p.map_proof_levels),
        );
        part(
            &format!("{} entries", r.entry_count),
            r.entries,
            format!(
                "{:.0} B each",
                r.entries as f64 / (r.entry_count.max(1)) as f64
            ),
        );
        part(
            "protobuf framing",
            r.framing,
            "tags, lengths, node name, count".into(),
        );
        let _ = writeln!(
            out,
            "\nOffline check (verify_history; pinned node key, witness key, VRF key), {} runs:",
            self.verify.runs
        );
        for (name, t) in [
            ("verify_history", &self.verify),
            ("decode + convert + verify", &self.decode_and_verify),
        ] {
            let _ = writeln!(
                out,
                "  {name:<28} median {:>9}  p99 {:>9}  min {:>9}  max {:>9}",
                micros(t.median_us),
                micros(t.p99_us),
                micros(t.min_us),
                micros(t.max_us)
            );
        }
        out
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn accesses_are_spread_through_the_log_once_each() {
        let at = access_indexes(1_000_000, 100);
        assert_eq!(at.len(), 100);
        assert_eq!(at[0], 5_000);
        assert_eq!(at[99], 995_000);
        assert!(at.windows(2).all(|w| w[1] - w[0] == 10_000));
        let at = access_indexes(7, 7);
        assert_eq!(at, (0..7).collect::<Vec<_>>());
        let at = access_indexes(10, 3);
        assert_eq!(at, [1, 5, 8]);
        assert!(access_indexes(3, 4).is_empty() && access_indexes(3, 0).is_empty());
    }

    #[test]
    fn timings_take_the_median_and_nearest_rank_p99() {
        let samples: Vec<Duration> = (1..=200).map(Duration::from_micros).collect();
        let t = Timing::of(&samples).unwrap();
        assert_eq!(t.runs, 200);
        assert!((t.median_us - 100.5).abs() < 1e-6);
        assert!((t.p99_us - 198.0).abs() < 1e-6);
        assert!((t.min_us - 1.0).abs() < 1e-6 && (t.max_us - 200.0).abs() < 1e-6);
        let one = Timing::of(&[Duration::from_micros(7)]).unwrap();
        assert!((one.p99_us - 7.0).abs() < 1e-6 && (one.median_us - 7.0).abs() < 1e-6);
        assert!(Timing::of(&[]).is_none());
    }

    #[test]
    fn synthetic_subjects_are_distinct_hex_keys() {
        let p = Population::new(1000, "ab".repeat(32), vec![3]);
        assert_eq!(p.others.len(), 999);
        let distinct: HashSet<&String> = p.others.iter().collect();
        assert_eq!(distinct.len(), 999);
        assert!(
            p.others
                .iter()
                .all(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        let mut rng = SplitMix(1);
        assert_eq!(p.entry(3, &mut rng).subject, "ab".repeat(32));
        assert_ne!(p.entry(4, &mut rng).subject, "ab".repeat(32));
        // Entries are ordered in time.
        assert!(p.entry(5, &mut rng).time < p.entry(6, &mut rng).time);
    }

    /// The whole measurement on a small log: it must verify, and every
    /// figure must agree with what was written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_log_gives_a_verified_proof_and_consistent_figures() {
        let args = ProofArgs {
            transparency_proof: true,
            proof_entries: 3_000,
            proof_people: 300,
            proof_accesses: 12,
            proof_runs: 3,
        };
        let report = run(&args, true).await.expect("the proof bench runs");
        // Every one of the 299 others is drawn with near certainty from
        // 2,988 entries, but the draw is fixed: count the people written.
        let population = Population::new(300, "00".repeat(32), access_indexes(3_000, 12));
        let mut rng = SplitMix(0x6175_6469_7400_0001);
        let people: HashSet<String> = (0..3_000)
            .map(|i| population.entry(i, &mut rng).subject)
            .collect();
        assert_eq!(report.map.leaves, people.len() as u64);
        assert_eq!(
            report.map.rows,
            report.map.leaves + report.map.internal_nodes
        );
        // A binary trie with n leaves has at least n - 1 internal nodes.
        assert!(report.map.internal_nodes >= report.map.leaves - 1);
        assert_eq!(report.person.accesses, 12);
        assert_eq!(report.person.first_index, 125);
        assert_eq!(report.person.last_index, 2_875);
        let r = report.response;
        assert_eq!((r.subject_key, r.vrf_proof, r.entry_count), (32, 80, 12));
        assert_eq!(
            r.total,
            r.subject_key + r.vrf_proof + r.checkpoint + r.map_proof + r.entries + r.framing
        );
        assert!(r.checkpoint > 100 && r.map_proof > 0 && r.framing > 0);
        assert_eq!(report.verify.runs, 3);
        assert_eq!(report.decode_and_verify.runs, 3);
        assert!(report.log.checkpoints_signed >= 1);
        assert!(report.log.database_bytes > 0);
        let text = report.render();
        assert!(text.contains("3000 entries about 300 people"), "{text}");
        assert!(text.contains("12 entries"), "{text}");
        assert!(text.contains("VRF proof"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["response"]["vrf_proof"], 80);
    }

    #[test]
    fn an_answer_that_is_not_protobuf_is_refused() {
        assert!(history_of(&[0xff, 0xff, 0xff]).is_err());
        let short_key = ListAccessesResponse {
            subject_key: vec![1; 31],
            ..Default::default()
        };
        assert!(history_of(&short_key.encode_to_vec()).is_err());
    }
}
