//! Generic gRPC tools work unmodified: server reflection as both
//! `grpc.reflection.v1` and `v1alpha` on the exchange and the adapters, over
//! mutual TLS, listing exactly the services each serves and describing them;
//! and Python's grpcio-reflection (v1alpha only) builds a Lookup from the
//! reflected descriptors alone. The Python part needs `python3` with
//! `grpcio` and `grpcio-reflection` (tests/setup.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use tongban_devkit::local::LocalDeployment;
use tongban_devkit::reference::{Dept, stories};
use tongban_tests::shared_deployment;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};

fn local() -> &'static LocalDeployment {
    shared_deployment(env!("CARGO_TARGET_TMPDIR"))
}

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Services listed, and the file descriptors answering `symbol`, over v1.
async fn ask_v1(
    channel: &Channel,
    symbol: &str,
) -> (Vec<String>, Vec<prost_types::FileDescriptorProto>) {
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    ]
    .map(|m| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut services = Vec::new();
    let mut files = Vec::new();
    while let Some(answer) = stream.message().await.unwrap() {
        match answer.message_response.unwrap() {
            MessageResponse::ListServicesResponse(list) => {
                services = list.service.into_iter().map(|s| s.name).collect();
            }
            MessageResponse::FileDescriptorResponse(fds) => {
                files = fds
                    .file_descriptor_proto
                    .iter()
                    .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
                    .collect();
            }
            other => panic!("unexpected v1 answer {other:?}"),
        }
    }
    services.sort();
    (services, files)
}

/// The same over v1alpha, which older tools speak.
async fn ask_v1alpha(
    channel: &Channel,
    symbol: &str,
) -> (Vec<String>, Vec<prost_types::FileDescriptorProto>) {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    ]
    .map(|m| v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut stream =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
    let mut services = Vec::new();
    let mut files = Vec::new();
    while let Some(answer) = stream.message().await.unwrap() {
        match answer.message_response.unwrap() {
            MessageResponse::ListServicesResponse(list) => {
                services = list.service.into_iter().map(|s| s.name).collect();
            }
            MessageResponse::FileDescriptorResponse(fds) => {
                files = fds
                    .file_descriptor_proto
                    .iter()
                    .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
                    .collect();
            }
            other => panic!("unexpected v1alpha answer {other:?}"),
        }
    }
    services.sort();
    (services, files)
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

fn declares_service(
    files: &[prost_types::FileDescriptorProto],
    package: &str,
    service: &str,
) -> bool {
    files.iter().any(|f| {
        f.package.as_deref() == Some(package)
            && f.service.iter().any(|s| s.name.as_deref() == Some(service))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_and_adapters_reflect_exactly_their_services_as_v1_and_v1alpha() {
    let local = local();
    // A service point's certificate is enough to ask the exchange.
    let exchange = local.channel("dongli-community").await.unwrap();
    let want = sorted(&[
        "tongban.v1.Exchange",
        "tongban.v1.Audit",
        "tongban.v1.Transparency",
        HEALTH,
        REFLECTION_V1,
        REFLECTION_V1ALPHA,
    ]);
    assert_eq!(
        want,
        sorted(&tongban_exchange::server::served_services(true)),
        "the node's own list"
    );
    let (v1_services, v1_files) = ask_v1(&exchange, "tongban.v1.Exchange").await;
    assert_eq!(v1_services, want);
    assert!(declares_service(&v1_files, "tongban.v1", "Exchange"));
    let (alpha_services, alpha_files) = ask_v1alpha(&exchange, "tongban.v1.Exchange").await;
    assert_eq!(alpha_services, want);
    assert_eq!(alpha_files, v1_files);
    // Every listed service can be described, over either version.
    for service in &want {
        let (_, files) = ask_v1alpha(&exchange, service).await;
        let (package, name) = service.rsplit_once('.').unwrap();
        assert!(declares_service(&files, package, name), "{service}");
        let (_, files) = ask_v1(&exchange, service).await;
        assert!(declares_service(&files, package, name), "{service}");
    }
    // A symbol of a service the exchange does not serve is still a type it
    // could name, but the Adapter service is not listed.
    assert!(!v1_services.iter().any(|s| s == "tongban.v1.Adapter"));
    // An unknown symbol is NOT_FOUND.
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "tongban.v1.NoSuchThing".into(),
            ),
        ),
    };
    let mut stream =
        v1alpha::server_reflection_client::ServerReflectionClient::new(exchange.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("tongban.v1.NoSuchThing"),
        "{status:?}"
    );

    // An adapter, asked as the exchange (the only caller it accepts).
    let pki = local.pki();
    let tls = pki.client_config("exchange").unwrap();
    let police = pki.get("police").unwrap().identity.clone();
    let adapter = tongban_trust::connect_channel(
        &local.adapter_url(Dept::Police).unwrap(),
        &tls,
        Some(&police),
    )
    .await
    .unwrap();
    let want = sorted(&[
        "tongban.v1.Adapter",
        HEALTH,
        REFLECTION_V1,
        REFLECTION_V1ALPHA,
    ]);
    assert_eq!(want, sorted(&tongban_adapter::server::SERVED_SERVICES));
    let (services, files) = ask_v1(&adapter, "tongban.v1.Adapter").await;
    assert_eq!(services, want);
    assert!(declares_service(&files, "tongban.v1", "Adapter"));
    let (services, files) = ask_v1alpha(&adapter, "tongban.v1.Adapter.Query").await;
    assert_eq!(services, want);
    assert!(declares_service(&files, "tongban.v1", "Adapter"));
}

/// Oversize and malformed reflection requests are never answered — over
/// either version; tonic-reflection ends the stream when a request does
/// not decode (the size limit, `REFLECTION_MAX_REQUEST_BYTES`, is enforced
/// by the decoder before the message is buffered whole) — and the
/// connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_malformed_reflection_requests_are_refused() {
    let local = local();
    let exchange = local.channel("dongli-community").await.unwrap();
    let huge = "tongban.v1.".to_owned()
        + &"X".repeat(tongban_exchange::server::REFLECTION_MAX_REQUEST_BYTES);
    // The first answer of a stream: `Ok(None)` when it ended unanswered.
    async fn first<T>(
        call: impl std::future::Future<
            Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
        >,
    ) -> Result<Option<T>, tonic::Status> {
        call.await?.into_inner().message().await
    }
    fn unanswered<T: std::fmt::Debug>(outcome: Result<Option<T>, tonic::Status>, what: &str) {
        match outcome {
            Ok(None) => {}
            Err(status) => assert!(
                matches!(
                    status.code(),
                    tonic::Code::OutOfRange
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Internal
                ),
                "{what}: {status:?}"
            ),
            Ok(Some(answer)) => panic!("{what} was answered: {answer:?}"),
        }
    }
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(huge.clone()),
        ),
    };
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(exchange.clone());
    unanswered(
        first(alpha.server_reflection_info(tokio_stream::iter([request]))).await,
        "an oversize v1alpha request",
    );
    // Just under the limit, the same kind of request is read and answered
    // (NOT_FOUND: no such symbol).
    let fits = "tongban.v1.".to_owned()
        + &"X".repeat(tongban_exchange::server::REFLECTION_MAX_REQUEST_BYTES - 64);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(fits),
        ),
    };
    let status = first(alpha.server_reflection_info(tokio_stream::iter([request])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::FileByFilename(huge)),
    };
    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(exchange.clone());
    let outcome = first(v1_client.server_reflection_info(tokio_stream::iter([request]))).await;
    unanswered(outcome, "an oversize v1 request");

    // A message that does not decode as a reflection request (a symbol
    // that is not UTF-8).
    let mut grpc = tonic::client::Grpc::new(exchange.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    );
    let codec =
        tonic_prost::ProstCodec::<NotUtf8Symbol, v1alpha::ServerReflectionResponse>::default();
    let request = NotUtf8Symbol {
        symbol: vec![0xff, 0xfe, 0xfd],
    };
    let outcome = first(grpc.streaming(
        tonic::Request::new(tokio_stream::iter([request])),
        path,
        codec,
    ))
    .await;
    unanswered(outcome, "a request that does not decode");

    // The same connection still answers.
    let (services, _) = ask_v1alpha(&exchange, "tongban.v1.Exchange").await;
    assert!(services.iter().any(|s| s == "tongban.v1.Exchange"));
}

/// `ServerReflectionRequest` with `file_containing_symbol` (field 4) as
/// raw bytes, so it can carry what no string may.
#[derive(Clone, PartialEq, prost::Message)]
struct NotUtf8Symbol {
    #[prost(bytes = "vec", tag = "4")]
    symbol: Vec<u8>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn python_grpcio_reflection_lists_services_and_calls_lookup_from_reflected_descriptors() {
    let local = local();
    let pki = local.pki();
    let who = pki.get("dongli-community").unwrap();
    let target = local
        .exchange_url()
        .trim_start_matches("https://")
        .to_owned();
    let worker = stories::LAID_OFF_WORKER;
    let output = Command::new("python3")
        .arg(workspace_root().join("tests/python/reflection_client.py"))
        .arg(target)
        .arg(&pki.ca_cert)
        .arg(&who.cert)
        .arg(&who.key)
        .args([
            "unemployment-benefit",
            "hrss.unemployment",
            worker.id_number,
            worker.name,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e})"));
    assert!(
        output.status.success(),
        "the Python reflection client failed ({}): {}{}\n(needs `pip install grpcio grpcio-reflection`; tests/setup.sh)",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let out: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        out["services"],
        serde_json::json!([
            HEALTH,
            REFLECTION_V1,
            REFLECTION_V1ALPHA,
            "tongban.v1.Audit",
            "tongban.v1.Exchange",
            "tongban.v1.Transparency",
        ]),
        "{out}"
    );
    assert_eq!(out["request_type"], "tongban.v1.LookupRequest");
    assert!(
        out["methods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "Gather"),
        "{out}"
    );
    assert_eq!(out["tongban_modules"], serde_json::json!([]), "{out}");
    assert_eq!(out["ok"], true, "{out}");
    let evidence = &out["response"]["evidence"];
    assert_eq!(evidence["evidence_type"], "hrss.unemployment", "{out}");
    assert_eq!(evidence["department"], "hrss");
    let eligible = evidence["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "eligible")
        .unwrap_or_else(|| panic!("no eligible in {evidence}"));
    assert_eq!(eligible["bool_value"], true);
    assert_eq!(out["response"]["receipt"]["node"], "exchange-1");
}
