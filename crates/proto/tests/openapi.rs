//! The committed OpenAPI document (`docs/openapi.json`) is the one generated
//! from the protos, and it is a valid OpenAPI 3.1 document.
//!
//! `TONGBAN_BLESS=1 cargo test -p tongban-proto --test openapi` rewrites it
//! after a deliberate change to the protos or the routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_openapi_document_is_the_generated_one() {
    let path = committed_path();
    let generated = tongban_proto::openapi::openapi_json();
    if std::env::var_os("TONGBAN_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with TONGBAN_BLESS=1 cargo test -p tongban-proto --test openapi",
        path.display()
    );
}

/// Validated by Python's openapi-spec-validator (`tests/setup.sh` installs
/// it), an implementation that shares nothing with the generator.
#[test]
fn the_openapi_document_validates_as_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, tongban_proto::openapi::openapi_json()).unwrap();
    let script = "import json, sys\n\
        from openapi_spec_validator import validate\n\
        from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
        spec = json.load(open(sys.argv[1]))\n\
        validate(spec, cls=OpenAPIV31SpecValidator)\n\
        print('valid', spec['openapi'])\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); tests/setup.sh installs openapi-spec-validator")
        });
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document (needs `pip install openapi-spec-validator`, see tests/setup.sh):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid 3.1.0");

    // And it refuses a broken one, so the check above can fail.
    let mut broken = tongban_proto::openapi::openapi_document();
    broken["paths"]["/v1/lookup"]["post"]["responses"] = serde_json::json!("none");
    std::fs::write(&file, broken.to_string()).unwrap();
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken document passed");
}
