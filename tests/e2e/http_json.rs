//! The exchange's HTTP/JSON front door, called with curl — a plain HTTP
//! client that knows nothing of gRPC or protobuf — presenting a party's
//! client certificate, over HTTP/1.1 and HTTP/2 on the gRPC port: every
//! route, a refusal whose JSON carries the ErrorInfo and a receipt that
//! proves, and the attacks (bad JSON, unknown fields, oversize bodies,
//! wrong methods and paths, no certificate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use prost::Message;
use serde_json::{Value, json};
use tongban_devkit::local::LocalDeployment;
use tongban_devkit::reference::stories;
use tongban_proto::json as pjson;
use tongban_proto::v1;
use tongban_tests::shared_deployment;

fn local() -> &'static LocalDeployment {
    shared_deployment(env!("CARGO_TARGET_TMPDIR"))
}

/// What curl got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `HTTP/1.1` or `HTTP/2`.
    version: String,
    /// Lower-cased header lines.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `google.rpc` detail of this type in an error body.
    fn detail(&self, kind: &str) -> Value {
        let json = self.json();
        json["details"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|d| d["@type"] == format!("type.googleapis.com/google.rpc.{kind}"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {json}"))
    }
}

#[derive(Clone, Copy)]
enum Http {
    One,
    Two,
}

/// One request with curl as `party` (no certificate with `None`).
fn curl(
    party: Option<&str>,
    http: Http,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    let local = local();
    let pki = local.pki();
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("headers");
    let out = dir.path().join("body");
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "30"])
        .arg("--cacert")
        .arg(&pki.ca_cert)
        .arg("--dump-header")
        .arg(&head)
        .arg("--output")
        .arg(&out)
        .args(["--write-out", "%{http_code} %{http_version}"])
        .arg(match http {
            Http::One => "--http1.1",
            Http::Two => "--http2",
        })
        .args(["--request", method]);
    if let Some(party) = party {
        let who = pki.get(party).unwrap();
        command
            .arg("--cert")
            .arg(&who.cert)
            .arg("--key")
            .arg(&who.key);
    }
    for h in headers {
        command.args(["--header", h]);
    }
    if let Some(body) = body {
        let file = dir.path().join("request");
        std::fs::write(&file, body).unwrap();
        command
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
    }
    command.arg(format!("{}{path}", local.exchange_url()));
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, version) = written.split_once(' ').unwrap();
    let headers = std::fs::read_to_string(&head)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status: status.parse().unwrap(),
        version: match version {
            "2" => "HTTP/2".into(),
            v => format!("HTTP/{v}"),
        },
        headers,
        body: std::fs::read_to_string(&out).unwrap_or_default(),
    })
}

fn get(party: &str, http: Http, path: &str) -> Answer {
    curl(Some(party), http, "GET", path, &[], None).unwrap()
}

fn post(party: &str, http: Http, path: &str, body: &Value) -> Answer {
    post_raw(party, http, path, body.to_string().as_bytes())
}

fn post_raw(party: &str, http: Http, path: &str, body: &[u8]) -> Answer {
    curl(
        Some(party),
        http,
        "POST",
        path,
        &["content-type: application/json"],
        Some(body),
    )
    .unwrap()
}

const COMMUNITY: &str = "dongli-community";

fn lookup_body(matter: &str, story: &stories::Story, evidence_type: &str) -> Value {
    json!({
        "case": {"matter": matter, "caseNumber": "XQ-DL-HTTP-1", "operatorId": "clerk-he"},
        "subject": {"idNumber": story.id_number, "name": story.name},
        "evidenceType": evidence_type,
    })
}

/// Proves `receipt` (its JSON) through `POST /v1/receipts:prove` as
/// `party`, and checks the proof offline against the node's key.
fn prove(party: &str, receipt: &Value) {
    let local = local();
    // The proof needs a signed checkpoint covering the entry.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(local.exchange().audit_log().unwrap().flush())
        .unwrap();
    let answer = post(
        party,
        Http::One,
        "/v1/receipts:prove",
        &json!({"receipt": receipt}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let proof_json = answer.json();
    assert_eq!(proof_json["node"], receipt["node"]);
    assert_eq!(proof_json["index"], receipt["index"]);
    // Back to the message through the JSON mapping, then checked as the CLI does.
    let descriptor = pjson::pool()
        .get_message_by_name("tongban.v1.InclusionProof")
        .unwrap();
    let bytes = pjson::json_to_protobuf(&descriptor, answer.body.as_bytes()).unwrap();
    let p = v1::InclusionProof::decode(bytes.as_slice()).unwrap();
    let hash = |b: &[u8]| -> [u8; 32] { b.try_into().unwrap() };
    let proof = tongban_audit::InclusionProof {
        node: p.node.clone(),
        index: p.index,
        tree_size: p.tree_size,
        leaf_hash: hash(&p.leaf_hash),
        proof: p.proof.iter().map(|h| hash(h)).collect(),
        checkpoint: p.checkpoint.clone(),
    };
    let keyring = tongban_audit::Keyring::parse(&local.log_key().unwrap()).unwrap();
    let checkpoint = proof.verify(&keyring).unwrap();
    assert!(checkpoint.size > p.index);
}

#[test]
fn every_route_answers_proto3_json_over_http1_and_http2() {
    for http in [Http::One, Http::Two] {
        let matters = get(COMMUNITY, http, "/v1/matters");
        assert_eq!(matters.status, 200, "{}", matters.body);
        assert_eq!(
            matters.version,
            match http {
                Http::One => "HTTP/1.1",
                Http::Two => "HTTP/2",
            }
        );
        assert_eq!(matters.header("content-type"), Some("application/json"));
        assert_eq!(matters.header("cache-control"), Some("no-store"));
        let codes: Vec<String> = matters.json()["matters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["code"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            codes.contains(&"unemployment-benefit".to_owned()),
            "{codes:?}"
        );
        assert!(
            !codes.contains(&"temporary-id-card".to_owned()),
            "only granted matters: {codes:?}"
        );

        let described = get(COMMUNITY, http, "/v1/matters/unemployment-benefit");
        assert_eq!(described.status, 200, "{}", described.body);
        let described = described.json();
        assert_eq!(described["matter"]["code"], "unemployment-benefit");
        assert_eq!(
            described["matter"]["titleZh"].as_str().map(str::is_empty),
            Some(false)
        );
        assert!(
            described["evidenceTypes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == "hrss.unemployment")
        );

        let hrss = get(COMMUNITY, http, "/v1/evidence-types?department=hrss");
        assert_eq!(hrss.status, 200, "{}", hrss.body);
        let types = hrss.json()["evidenceTypes"].as_array().unwrap().clone();
        assert!(!types.is_empty());
        assert!(types.iter().all(|t| t["department"] == "hrss"), "{types:?}");
        let all = get(COMMUNITY, http, "/v1/evidence-types").json();
        assert!(all["evidenceTypes"].as_array().unwrap().len() > types.len());

        // Where a matter is handled (the community centre holds a grant of it).
        let points = get(
            COMMUNITY,
            http,
            "/v1/service-points?matter=unemployment-benefit&region_code=510403",
        );
        assert_eq!(points.status, 200, "{}", points.body);
        let points = points.json();
        assert_eq!(points["level"], "township");
        assert_eq!(points["cityWide"], true);
        assert!(
            points["servicePoints"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["regionCode"] == "510403"),
            "{points}"
        );
        let bad_region = get(
            COMMUNITY,
            http,
            "/v1/service-points?matter=unemployment-benefit&region_code=51x",
        );
        assert_eq!(bad_region.status, 400, "{}", bad_region.body);

        let worker = stories::LAID_OFF_WORKER;
        let looked_up = post(
            COMMUNITY,
            http,
            "/v1/lookup",
            &lookup_body("unemployment-benefit", &worker, "hrss.unemployment"),
        );
        assert_eq!(looked_up.status, 200, "{}", looked_up.body);
        let looked_up = looked_up.json();
        let evidence = &looked_up["evidence"];
        assert_eq!(evidence["evidenceType"], "hrss.unemployment");
        assert_eq!(evidence["department"], "hrss");
        assert!(evidence["currentAsOf"].as_str().unwrap().ends_with('Z'));
        let field = |name: &str| {
            evidence["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {evidence}"))
                .clone()
        };
        assert_eq!(field("eligible")["boolValue"], true);
        assert_eq!(
            field("insured_months")["intValue"],
            "86",
            "int64 as a string"
        );
        assert_eq!(looked_up["receipt"]["node"], "exchange-1");
        prove(COMMUNITY, &looked_up["receipt"]);

        // A field mask in its JSON form: the named fields only.
        let mut masked = lookup_body("unemployment-benefit", &worker, "hrss.unemployment");
        masked["fields"] = json!("eligible");
        let masked = post(COMMUNITY, http, "/v1/lookup", &masked).json();
        let names: Vec<&str> = masked["evidence"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["eligible"]);

        let retiree = stories::CERTIFIED_RETIREE;
        let gathered = post(
            COMMUNITY,
            http,
            "/v1/gather",
            &json!({
                "case": {"matter": "pension-qualification", "caseNumber": "XQ-DL-HTTP-2", "operatorId": "clerk-he"},
                "subject": {"idNumber": retiree.id_number, "name": retiree.name},
            }),
        );
        assert_eq!(gathered.status, 200, "{}", gathered.body);
        let gathered = gathered.json();
        assert_eq!(gathered["matter"], "pension-qualification");
        let items = gathered["items"].as_array().unwrap();
        assert!(items.len() >= 2, "{gathered}");
        for item in items {
            assert!(
                item.get("evidence").is_some() || item.get("error").is_some(),
                "{item}"
            );
            assert_eq!(item["receipt"]["node"], "exchange-1", "{item}");
        }
        prove(COMMUNITY, &items[0]["receipt"]);
    }

    // The document is served, and is the committed one.
    let served = get(COMMUNITY, Http::Two, "/v1/openapi.json");
    assert_eq!(served.status, 200);
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .unwrap();
    assert!(
        served.body == committed,
        "the served document is not docs/openapi.json"
    );
}

#[test]
fn a_refusal_is_its_grpc_status_as_json_with_error_info_and_a_provable_receipt() {
    // Community centres are not granted the temporary ID card matter.
    let refused = post(
        COMMUNITY,
        Http::One,
        "/v1/lookup",
        &lookup_body(
            "temporary-id-card",
            &stories::MOSUO_VILLAGER,
            "police.identity",
        ),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["code"], 7, "PERMISSION_DENIED: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("temporary-id-card"),
        "{body}"
    );
    let info = refused.detail("ErrorInfo");
    assert_eq!(info["reason"], "MATTER_NOT_GRANTED");
    assert_eq!(info["domain"], "tongban.gov");
    assert_eq!(
        info["metadata"]["missing_grant"], "matter:temporary-id-card",
        "{info}"
    );
    assert_eq!(
        info["metadata"]["caller"]
            .as_str()
            .map(|c| c.ends_with("/unit/dongli-community")),
        Some(true),
        "{info}"
    );
    // The refusal was audited; its receipt proves like an answer's.
    assert_eq!(body["receipt"]["node"], "exchange-1", "{body}");
    prove(COMMUNITY, &body["receipt"]);
    // …and only to the caller it was handed to.
    let other = post(
        "hotline-96196",
        Http::One,
        "/v1/receipts:prove",
        &json!({"receipt": body["receipt"]}),
    );
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(other.json()["code"], 5);

    // A matter the caller may not see: the pipeline's own refusal.
    let hidden = get(COMMUNITY, Http::Two, "/v1/matters/temporary-id-card");
    assert_eq!(hidden.status, 403, "{}", hidden.body);
    assert_eq!(hidden.detail("ErrorInfo")["reason"], "MATTER_NOT_GRANTED");

    // Invalid input from the pipeline's validation: BadRequest names the field.
    let mut invalid = lookup_body(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    );
    invalid["subject"]["idNumber"] = json!("510403198507220466");
    let invalid = post(COMMUNITY, Http::Two, "/v1/lookup", &invalid);
    assert_eq!(invalid.status, 400, "{}", invalid.body);
    assert_eq!(invalid.json()["code"], 3);
    let violations = invalid.detail("BadRequest")["fieldViolations"].clone();
    assert_eq!(violations[0]["field"], "subject.id_number", "{violations}");
    assert!(
        !invalid.body.contains("510403198507220466"),
        "{}",
        invalid.body
    );
}

#[test]
fn malformed_requests_get_a_json_error_saying_what_is_wrong() {
    let bad = |answer: Answer, status: u16, says: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let json = answer.json();
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says:?} not in {json}");
        json
    };
    let body = |json: &str| post_raw(COMMUNITY, Http::One, "/v1/lookup", json.as_bytes());

    let json = bad(body(r#"{"case": {"matter": "x""#), 400, "EOF while parsing");
    assert_eq!(json["code"], 3);
    let violation = &json["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap()["fieldViolations"][0];
    assert_eq!(violation["field"], "body");
    bad(
        body(r#"{"evidenceType": "x", "caller": "org/1"}"#),
        400,
        "unrecognized field name 'caller'",
    );
    bad(body(r#"{"evidenceType": 42}"#), 400, "line 1 column");
    bad(
        body(r#"{"fields": {"paths": 1}}"#),
        400,
        "tongban.v1.LookupRequest",
    );
    bad(
        body(r#"["not", "an", "object"]"#),
        400,
        "tongban.v1.LookupRequest",
    );
    bad(body(r#"{} trailing"#), 400, "trailing characters");
    bad(body(""), 400, "EOF");
    bad(body(&"[".repeat(10_000)), 400, "tongban.v1.LookupRequest");
    bad(
        body(&format!("{}1{}", "{\"case\":".repeat(64), "}".repeat(64))),
        400,
        "unrecognized field name",
    );

    let plain = curl(
        Some(COMMUNITY),
        Http::One,
        "POST",
        "/v1/lookup",
        &["content-type: text/plain"],
        Some(b"{}"),
    )
    .unwrap();
    bad(plain, 415, "takes application/json");

    let wrong_method = curl(Some(COMMUNITY), Http::Two, "GET", "/v1/lookup", &[], None).unwrap();
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    bad(wrong_method, 405, "answers POST, not GET");
    let delete = curl(
        Some(COMMUNITY),
        Http::One,
        "DELETE",
        "/v1/matters/x",
        &[],
        None,
    )
    .unwrap();
    bad(delete, 405, "not DELETE");

    for path in [
        "/v1/nothing",
        "/",
        "/v1/matters/a/b",
        "/tongban.v1.Exchange/Lookup",
    ] {
        let json = bad(get(COMMUNITY, Http::One, path), 404, "no route");
        assert_eq!(json["code"], 5);
    }

    let unknown_query = get(COMMUNITY, Http::Two, "/v1/evidence-types?dept=hrss");
    bad(unknown_query, 400, "accepted: department");
    let twice = get(
        COMMUNITY,
        Http::Two,
        "/v1/evidence-types?department=a&department=b",
    );
    bad(twice, 400, "twice");
    let body_on_get = curl(
        Some(COMMUNITY),
        Http::One,
        "GET",
        "/v1/matters",
        &["content-type: application/json"],
        Some(b"{}"),
    )
    .unwrap();
    bad(body_on_get, 400, "takes no body");
    bad(get(COMMUNITY, Http::One, "/v1/matters/%FF"), 400, "UTF-8");

    let lookup = lookup_body(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    );
    let with_deadline = |header: &str| {
        curl(
            Some(COMMUNITY),
            Http::Two,
            "POST",
            "/v1/lookup",
            &["content-type: application/json", header],
            Some(lookup.to_string().as_bytes()),
        )
        .unwrap()
    };
    bad(
        with_deadline("tongban-timeout: soon"),
        400,
        "is not a timeout",
    );
    bad(with_deadline("grpc-timeout: 5S"), 400, "tongban-timeout");
    assert_eq!(with_deadline("tongban-timeout: 20S").status, 200);
    // A deadline too short for any department: refused by the pipeline, as JSON.
    let hurried = with_deadline("tongban-timeout: 1m");
    assert!(
        [400, 504].contains(&hurried.status),
        "{} {}",
        hurried.status,
        hurried.body
    );
    assert!(hurried.json()["code"].is_number());
}

#[test]
fn an_oversize_body_is_refused_413_audited_like_grpc() {
    let limit = 16 * 1024;
    // Valid JSON, one string over the policy's max_request_bytes.
    let mut body = lookup_body(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    );
    body["case"]["caseNumber"] = json!("X".repeat(limit + 1));
    for http in [Http::One, Http::Two] {
        let refused = post(COMMUNITY, http, "/v1/lookup", &body);
        assert_eq!(refused.status, 413, "{}", refused.body);
        let json = refused.json();
        assert_eq!(json["code"], 8, "RESOURCE_EXHAUSTED: {json}");
        assert_eq!(refused.detail("ErrorInfo")["reason"], "REQUEST_TOO_LARGE");
        assert!(
            json["message"].as_str().unwrap().contains("16384"),
            "{json}"
        );
        // Audited, as the size guard audits a gRPC one.
        prove(COMMUNITY, &json["receipt"]);
    }
    // Streamed without a length: refused once the limit is passed.
    let chunked = curl(
        Some(COMMUNITY),
        Http::One,
        "POST",
        "/v1/gather",
        &[
            "content-type: application/json",
            "transfer-encoding: chunked",
        ],
        Some(body.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(chunked.status, 413, "{}", chunked.body);
    assert_eq!(chunked.detail("ErrorInfo")["reason"], "REQUEST_TOO_LARGE");
}

#[test]
fn without_a_client_certificate_the_handshake_is_refused() {
    for http in [Http::One, Http::Two] {
        // The handshake fails (curl words it after its TLS library).
        let refused = curl(None, http, "GET", "/v1/matters", &[], None);
        assert!(refused.is_err(), "{refused:?}");
    }
    // A certificate from another CA does not get in either.
    let dir = tempfile::tempdir().unwrap();
    let other = tongban_devkit::pki::init_dev_pki(dir.path(), &Default::default()).unwrap();
    let who = other.get(COMMUNITY).unwrap();
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .arg("--cacert")
        .arg(&local().pki().ca_cert)
        .arg("--cert")
        .arg(&who.cert)
        .arg("--key")
        .arg(&who.key)
        .arg(format!("{}/v1/matters", local().exchange_url()))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
