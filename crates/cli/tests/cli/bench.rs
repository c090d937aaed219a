//! `tongban bench` as users run it: the exchange as a child `tongban serve`
//! process, JSON on stdout. Very short and light: it checks that every
//! measured path answers without errors, never how fast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_the_exchange_as_a_child_process() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args([
            "bench",
            "--only",
            "a,c,d",
            "--duration",
            "200ms",
            "--warmup",
            "50ms",
            "--connections",
            "1",
            "--concurrency",
            "2",
            "--no-gather",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the bench is bounded")
        .expect("tongban runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let paths = report["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    for p in paths {
        let name = p["path"].as_str().unwrap();
        for run in ["load", "single"] {
            let stats = &p[run];
            assert!(stats["requests"].as_u64().unwrap() > 0, "{name} {run}");
            assert_eq!(stats["errors"].as_u64(), Some(0), "{name} {run}: {stats}");
        }
        if name != "a" {
            // A child process of its own: its memory and CPU are measured apart.
            assert_eq!(p["peak_rss"]["scope"], "exchange process", "{name}");
            assert!(p["peak_rss"]["mib"].as_f64().unwrap() > 1.0);
            assert!(p["proxy_cpu_us_per_request"].is_number(), "{name}");
            assert_eq!(
                p["load"]["audited"], p["load"]["requests"],
                "{name}: every answer carries its audit receipt"
            );
        }
    }
    assert!(
        report["settings"]["exchange"]
            .as_str()
            .unwrap()
            .contains("child process")
    );
}
