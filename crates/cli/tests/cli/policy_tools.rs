//! The policy editors' tools and shell habits through the real binary:
//! `config check` on policies and catalogues, `policy explain`'s exit
//! status (0 allowed, 1 denied, 2 error), completions and the man page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/config")
        .join(file)
}

fn tongban(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_check_accepts_the_deployed_policy_and_catalogue_and_names_a_broken_line() {
    for (file, says) in [
        ("policy.toml", "valid policy"),
        ("catalogue.toml", "valid catalogue"),
    ] {
        let out = tongban(&["config", "check", deploy(file).to_str().unwrap()]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(says), "{}", text(&out.stdout));
    }
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("policy.toml");
    let good = std::fs::read_to_string(deploy("policy.toml")).unwrap();
    std::fs::write(
        &broken,
        good.replace("[[grant]]\ncallers", "[[grant]]\ncaller"),
    )
    .unwrap();
    let out = tongban(&["config", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:13:", broken.display())),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `caller`"), "{stderr}");
}

#[test]
fn policy_explain_exits_0_when_allowed_1_when_denied_2_on_error() {
    let policy = deploy("policy.toml");
    let explain = |caller: &str, matter: &str| {
        tongban(&[
            "policy",
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--caller",
            caller,
            "--matter",
            matter,
        ])
    };
    let community = "org/12510403TB0000060J/unit/dongli-community";
    let out = explain(community, "unemployment-benefit");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ALLOWED"));
    let out = explain(community, "temporary-id-card");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("DENIED"));
    let out = explain(community, "no-such-matter");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown matter"));
    // Missing both --policy and --config is a usage error (clap's 2).
    let out = tongban(&["policy", "explain", "--caller", community, "--matter", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = tongban(&["completions", "bash"]);
    assert!(out.status.success());
    let script = dir.path().join("tongban.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(check.success());
    for shell in ["zsh", "fish"] {
        let out = tongban(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(text(&out.stdout).contains("explain"), "{shell}");
    }
    let out = tongban(&["man"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(".TH tongban 1"));
    let pages = dir.path().join("man");
    let out = tongban(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(pages.join("tongban-config-check.1").is_file());
    assert!(text(&out.stdout).contains("tongban-policy-explain.1"));
}
