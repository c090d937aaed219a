//! The README's first command, `tongban demo`, end to end: the real binary
//! starts its deployment, plays every scene, proves a receipt and verifies
//! the log, shows 陈晓燕 her history verified complete on the citizens'
//! portal, then shows the portal's check failing after an entry about her
//! is deleted behind the exchange's back (then puts the row back) — and
//! exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

/// Where the portal's part of the transcript begins.
const PORTAL_SCENE: &str = "Scene 11 ·";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_every_scene_and_exits_zero() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .arg("demo")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the demo finishes within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("The demo failed"), "{stdout}");
    for expected in [
        "通办 tongban — handled anywhere in Panzhihua",
        "· exchange",
        "Scene 1 ·",
        "Scene 8 ·",
        "Scene 10 ·",
        // The hotline, refused evidence, says where the matter is handled.
        "What the hotline can do is tell the caller where to go",
        "· 米易县公安局撒莲派出所 (township, 米易县)",
        "✓ The Dongli clerk proves her receipt",
        "`tongban audit verify`:",
        "— intact.",
        PORTAL_SCENE,
        "The demo ran to the end.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }

    // The enterprise at the Salian township hall: market regulation about
    // the company, the police about its legal representative, grouped by
    // subject; then the household of three, one member's answer referring
    // the review.
    let enterprise_at = stdout.find("Scene 8 ·").unwrap();
    let household_at = stdout.find("Scene 9 ·").unwrap();
    let police_at = stdout.find("Scene 10 ·").unwrap();
    let enterprise = &stdout[enterprise_at..household_at];
    for expected in [
        "Employer social insurance registration · 单位参保登记",
        "● 米易县撒莲芒果种植有限公司 (91510421TB6A1B2C3G) · enterprise 企业",
        "▸ market.registration",
        "▸ market.abnormal",
        "● 李建华 · legal-representative 法定代表人",
        "▸ police.identity",
        "the company is registered as an employer",
    ] {
        assert!(
            enterprise.contains(expected),
            "missing {expected:?} in scene 8:\n{enterprise}"
        );
    }
    let household = &stdout[household_at..police_at];
    for expected in [
        "Subsistence allowance annual review · 最低生活保障年度复核",
        "● 黄玉梅 · applicant 申请人",
        "● 黄思雨 · household-member 家庭成员",
        "● 杨秀英 · household-member 家庭成员",
        "insured months 2 · registered unemployed no",
        "allowance: 720 yuan a month",
        "3 members checked, 13 answers",
        "refers the review",
    ] {
        assert!(
            household.contains(expected),
            "missing {expected:?} in scene 9:\n{household}"
        );
    }
    // The clerk sees names she typed, never an identity number.
    for story in [
        tongban_devkit::reference::stories::DIBAO_DAUGHTER,
        tongban_devkit::reference::stories::SALIAN_ENTREPRENEUR,
    ] {
        assert!(!stdout.contains(story.id_number), "{stdout}");
    }

    // The log is verified whole before the tamper, not after it.
    let intact = stdout.find("— intact.").unwrap();
    let portal_at = stdout.find(PORTAL_SCENE).unwrap();
    assert!(intact < portal_at, "{stdout}");

    // The portal's part: her history verified complete against the
    // witnessed checkpoint, the police access sealed; then the deletion,
    // and the check failing, naming what is missing.
    let portal = &stdout[portal_at..];
    let cosigned = format!(
        "cosigned by the witness {}",
        tongban_devkit::local::WITNESS_NAME
    );
    for expected in [
        "陈晓燕 opens 天府通办",
        "✓ Verified complete against checkpoint",
        &cosigned,
        "已验证完整 / Verified complete",
        "失业保险金申领 Unemployment benefit claim",
        "1 sealed access, disclosed after",
        "An operator deletes one entry about her directly in the audit database",
        "verification FAILED / 验证失败",
        "1 missing",
        "`tongban audit verify`, run by the administrators or an inspector, now fails too",
        "The demo puts the row back from its copy: the log verifies again",
    ] {
        assert!(
            portal.contains(expected),
            "missing {expected:?} in the portal's part:\n{portal}"
        );
    }
    // The success comes before the tamper, the failure after it.
    let verified = portal.find("✓ Verified complete").unwrap();
    let deleted = portal.find("An operator deletes").unwrap();
    let failed = portal.find("verification FAILED").unwrap();
    assert!(verified < deleted && deleted < failed, "{portal}");
    // The sealed access is shown only as sealed: not its matter, its
    // officer or its case.
    assert!(!portal.contains("刑事案件侦查协查"), "{portal}");
    // No clerk, officer, administrator or case number of hers is shown
    // to her (the clerks and the auditor saw theirs in the scenes before).
    for secret in [
        "clerk-he",
        "XQ-DL-2026-0317",
        "agent-07",
        "96196-20261126-88",
        "officer-wang",
        "MY-XZ-2026-0093",
        "auditor-zhao",
        "96196-20261126-90",
        tongban_devkit::reference::stories::LAID_OFF_WORKER.id_number,
    ] {
        assert!(
            !portal.contains(secret),
            "{secret:?} shown in the portal's part:\n{portal}"
        );
    }
}

/// The tamper is undone before the demo ends: run again on the same state
/// directory (as `--state-dir` and `--serve` invite), the audit log still
/// verifies and the demo still plays to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_again_on_its_state_directory() {
    let dir = tempfile::Builder::new()
        .prefix("tongban-demo-again-")
        .tempdir()
        .unwrap();
    for run in 1..=2 {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
            .arg("demo")
            .arg("--state-dir")
            .arg(dir.path())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(180), output)
            .await
            .expect("the demo finishes within 3 minutes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("— intact."), "run {run}:\n{stdout}");
        assert!(stdout.contains("1 missing"), "run {run}:\n{stdout}");
    }
}

/// `tongban demo --serve` prints the exchange's HTTP/JSON base URL and a
/// curl command line that works as printed: run through `sh`, it gets the
/// laid-off worker's unemployment evidence as proto3 JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_demo_prints_a_curl_line_that_works_as_printed() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::Builder::new()
        .prefix("tongban-demo-serve-")
        .tempdir()
        .unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .arg("demo")
        .arg("--serve")
        .arg("--state-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut base, mut curl) = (None::<String>, None::<String>);
    let read = async {
        // The command's lines, from `curl` to the first not continued by `\`.
        let mut continued = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            let trimmed = line.trim();
            if let Some(url) = trimmed.strip_prefix("http/json:") {
                base = Some(url.trim().to_owned());
            } else if trimmed.starts_with("curl ") || continued {
                let command = curl.get_or_insert_with(String::new);
                command.push_str(&line);
                command.push('\n');
                continued = trimmed.ends_with('\\');
                if !continued {
                    return;
                }
            }
        }
        panic!("the demo ended without printing a curl command");
    };
    tokio::time::timeout(Duration::from_secs(240), read)
        .await
        .expect("the demo serves within 4 minutes");
    let base = base.expect("an http/json: line");
    let curl = curl.unwrap();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    assert!(curl.contains(&format!("{base}/v1/lookup")), "{curl}");

    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&curl)
            .output(),
    )
    .await
    .expect("curl answers within 30 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{curl}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        answer["evidence"]["evidenceType"], "hrss.unemployment",
        "{answer}"
    );
    assert_eq!(answer["receipt"]["node"], "exchange-1", "{answer}");
    demo.kill().await.unwrap();
}
