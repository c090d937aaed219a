//! A very short benchmark run: every path must produce numbers and no call
//! may fail. No performance assertions: this machine is shared.

use std::time::Duration;

use tongban_bench::{BenchArgs, PathId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_measures_every_path_without_errors() {
    let args = BenchArgs {
        // The one-in-flight phase gets half of each: long enough that a
        // slow first call (a fresh audit store's first commit) still leaves
        // completed requests in the window.
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        connections: 2,
        concurrency: 2,
        // One round keeps it short; the next test runs two.
        rounds: 1,
        json: true,
        // The test binary is not `tongban`, so the exchange cannot be a child.
        in_process: true,
        ..BenchArgs::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(120), tongban_bench::run(args))
        .await
        .expect("the run is bounded")
        .expect("the benchmark runs");

    let nginx = tongban_bench::nginx::find().is_some();
    for id in PathId::ALL {
        let path = report.path(id).expect("every path is reported");
        if id == PathId::B && !nginx {
            assert!(path.skipped.as_deref().unwrap().contains("nginx"));
            continue;
        }
        assert!(path.skipped.is_none(), "{id:?} skipped: {:?}", path.skipped);
        for stats in [path.load.as_ref(), path.single.as_ref()] {
            let stats = stats.unwrap_or_else(|| panic!("{id:?} has load and latency runs"));
            assert_eq!(
                (stats.errors, stats.warmup_errors),
                (0, 0),
                "{id:?}: {:?}",
                stats.first_error
            );
            assert!(stats.requests > 0, "{id:?} completed no request");
            assert!(stats.throughput_rps > 0.0 && stats.p50_us > 0.0);
            assert!(stats.p50_us <= stats.p99_us && stats.p99_us <= stats.p999_us);
        }
        assert!(path.added_p50_us.is_some(), "{id:?} latency over (a)");
        assert!(path.bench_cpu_us_per_request.is_some(), "{id:?} CPU");
        // Only nginx has processes of its own here (the exchange is in-process).
        assert_eq!(path.proxy_cpu_us_per_request.is_some(), id == PathId::B);
    }
    // Every exchange answer carries the receipt of its durable audit entry.
    for id in [PathId::C, PathId::C0, PathId::D] {
        let load = report.path(id).unwrap().load.as_ref().unwrap();
        assert_eq!(load.audited, load.requests, "{id:?}");
        assert!(report.path(id).unwrap().peak_rss.is_some());
    }
    assert!(report.ratios.c_over_a.is_some() && report.ratios.d_over_a.is_some());
    // What transparency costs: (c) with the subject map over (c0) without.
    assert!(report.ratios.c_over_c0.is_some());
    assert_eq!(report.ratios.c_over_b.is_some(), nginx);

    assert_eq!(report.gather.len(), 2);
    for g in &report.gather {
        assert_eq!(g.lookups.len(), 3);
        assert!(g.gather.requests > 0 && g.gather.errors == 0);
        assert!(g.ratio_p50.is_some());
    }
    assert_eq!(report.total_errors(), 0);

    let table = report.render();
    assert!(table.contains("(c)/(b)") && table.contains("Gather"));
    assert!(
        table.contains("What transparency costs: (c)/(c0)"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert!(json["paths"][0]["load"]["throughput_rps"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_departments_answer_through_every_hop() {
    let args = BenchArgs {
        duration: Duration::from_millis(200),
        warmup: Duration::from_millis(50),
        connections: 1,
        concurrency: 2,
        only: vec![PathId::A, PathId::D],
        // The mTLS exchange starts twice, in directories of its own.
        rounds: 2,
        memory_departments: true,
        json: true,
        in_process: true,
        ..BenchArgs::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(120), tongban_bench::run(args))
        .await
        .expect("the run is bounded")
        .expect("the benchmark runs");
    assert_eq!(report.paths.len(), 2);
    for p in &report.paths {
        let load = p.load.as_ref().unwrap();
        assert!(
            load.requests > 0 && load.errors == 0,
            "{:?}",
            load.first_error
        );
        assert_eq!(p.rounds.iter().map(|r| r.round).collect::<Vec<_>>(), [1, 2]);
        for r in &p.rounds {
            assert!(r.requests_per_sec > 0.0 && r.errors == 0, "{:?}", r.load);
            assert!(r.bench_cpu_us_per_request.is_some());
        }
        assert!(p.median_round.is_some());
        // Latency (e) once, in round 1.
        assert!(p.single.as_ref().is_some_and(|s| s.requests > 0));
    }
    let d = report.path(PathId::D).unwrap();
    for r in &d.rounds {
        assert_eq!(r.load.audited, r.load.requests, "round {}", r.round);
    }
    assert_eq!(report.ratios.per_round.len(), 2);
    assert!(report.ratios.per_round.iter().all(|r| r.d_over_a.is_some()));
    assert!(report.ratios.d_over_a.is_some() && report.ratios.c_over_a.is_none());
    assert_eq!(report.settings.rounds, 2);
    assert!(report.render().contains("median-throughput round of 2"));
    // Gather over mTLS reaches all three in-memory departments, in round 1 only.
    assert_eq!(report.gather.len(), 1);
    assert_eq!(report.gather[0].gather.errors, 0);
    assert!(report.gather[0].gather.requests > 0);
    assert_eq!(report.total_errors(), 0);
    assert!(report.settings.departments.contains("memory"));
}
