//! The scale benchmark of issue 6 (`tests/scale/mod.rs`): N ExternalSecrets synced by the
//! release binary, measured from the outside. Ignored in the default test run; run it with
//! `hack/bench.sh [N...]`, which builds the release binary and runs this test inside a fresh
//! test environment once per N:
//!
//! ```sh
//! SECRET_RELAY_BENCH_N=1000 python3 hack/testenv/testenv.py run -- \
//!     cargo test --release --test bench_scale -- --ignored --nocapture
//! ```
//!
//! Settings (environment variables): `SECRET_RELAY_BENCH_N` (default 1000),
//! `SECRET_RELAY_BENCH_NAMESPACES` (100), `SECRET_RELAY_BENCH_STORES` (`namespaced` or
//! `cluster`), `SECRET_RELAY_BENCH_REFRESH_SECS` (60), `SECRET_RELAY_BENCH_CREATE_CONCURRENCY`
//! (16), `SECRET_RELAY_BENCH_OPERATOR_CONCURRENCY` (16), `SECRET_RELAY_BENCH_READY_TIMEOUT_SECS`
//! (1800), `SECRET_RELAY_BENCH_INITIAL_ONLY` (`true`: stop after the initial sync, for quick
//! experiments; write those reports elsewhere), `SECRET_RELAY_BENCH_BIN` (the operator binary; default: this build's),
//! `SECRET_RELAY_BENCH_OUT` (where BENCHMARKS.json and BENCHMARKS.md go; default: the repo).
//!
//! The test fails only when the benchmark cannot run (set-up errors); whether the operator met
//! the targets is a result, written to the reports.

mod common;
mod scale;

use std::{path::PathBuf, time::Duration};

use common::TestEnv;

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
        _ => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the scale benchmark: run by hack/bench.sh"]
async fn scale_benchmark() {
    let env = TestEnv::get("scale_benchmark")
        .await
        .expect("the benchmark needs the test environment (run it with hack/bench.sh)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let stores: String = var("SECRET_RELAY_BENCH_STORES", "namespaced".to_string());
    assert!(
        stores == "namespaced" || stores == "cluster",
        "SECRET_RELAY_BENCH_STORES: namespaced or cluster"
    );
    let p = scale::Params {
        n: var("SECRET_RELAY_BENCH_N", 1000),
        namespaces: var("SECRET_RELAY_BENCH_NAMESPACES", 100),
        cluster_stores: stores == "cluster",
        refresh_secs: var("SECRET_RELAY_BENCH_REFRESH_SECS", 60),
        create_concurrency: var("SECRET_RELAY_BENCH_CREATE_CONCURRENCY", 16),
        operator_concurrency: var("SECRET_RELAY_BENCH_OPERATOR_CONCURRENCY", 16),
        operator_bin: var(
            "SECRET_RELAY_BENCH_BIN",
            PathBuf::from(env!("CARGO_BIN_EXE_secret-relay")),
        ),
        scoped: false,
        ready_timeout: Duration::from_secs(var("SECRET_RELAY_BENCH_READY_TIMEOUT_SECS", 1800)),
        log_dir: root.join("target/bench"),
        initial_only: var("SECRET_RELAY_BENCH_INITIAL_ONLY", false),
    };
    let out = var("SECRET_RELAY_BENCH_OUT", root.clone());
    let r = scale::run(&env, &p).await.expect("the benchmark ran");
    scale::report::write_reports(&out, &r).expect("writing the reports");
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        println!(
            "target: {verdict:7} {}: {} (bound {})",
            t.name, t.value, t.bound
        );
    }
    println!(
        "wrote {} and {}",
        out.join("BENCHMARKS.json").display(),
        out.join("BENCHMARKS.md").display()
    );
}
