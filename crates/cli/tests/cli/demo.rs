//! The README's first command, `tongban demo`, end to end: the real binary
//! starts its deployment, plays every scene, proves a receipt and verifies
//! the log, and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

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
        "✓ The Dongli clerk proves her receipt",
        "`tongban audit verify`:",
        "— intact.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}
