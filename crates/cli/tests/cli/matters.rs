//! `tongban matters` as people run it: the real binary, its exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn tongban(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tongban"))
        .arg("matters")
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap()
}

#[test]
fn lists_the_catalogue_for_people_and_machines() {
    let out = tongban(&[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let n = tongban_core::Catalogue::embedded().matters().len();
    assert!(text.ends_with(&format!("{n} matters.\n")), "{text}");
    assert!(
        text.contains("temporary-id-card  临时居民身份证办理 · Temporary resident identity card")
    );

    let out = tongban(&["--json", "--level", "county", "--department", "police"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let matters = v["matters"].as_array().unwrap();
    assert!(!matters.is_empty());
    for m in matters {
        assert_eq!(m["level"], "county");
        assert!(
            m["departments"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("police")),
            "{m}"
        );
    }
}

#[test]
fn bad_arguments_and_files_fail_with_a_message() {
    let out = tongban(&["--level", "province"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown level \"province\""), "{err}");

    let out = tongban(&["--department", "tax"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown department \"tax\""), "{err}");

    let out = tongban(&["--catalogue", "/nonexistent/catalogue.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/catalogue.toml"));

    let out = tongban(&["--json", "--markdown"]);
    assert!(!out.status.success(), "--json and --markdown conflict");
}
