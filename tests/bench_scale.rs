//! The scale benchmark of issues 6 and 14 (`tests/scale/`): N ExternalSecrets synced by the
//! release binary (one process, or one per shard), measured from the outside. Ignored in the
//! default test run; run it with `hack/bench.sh [N...]`, which builds the release binary and
//! runs this test inside a fresh test environment once per N:
//!
//! ```sh
//! SECRET_RELAY_BENCH_N=1000 python3 hack/testenv/testenv.py run -- \
//!     cargo test --release --test bench_scale -- --ignored --nocapture
//! ```
//!
//! Settings (environment variables): `SECRET_RELAY_BENCH_N` (default 1000),
//! `SECRET_RELAY_BENCH_NAMESPACES` (100), `SECRET_RELAY_BENCH_STORES` (`namespaced` or
//! `cluster`), `SECRET_RELAY_BENCH_REFRESH_SECS` (60), `SECRET_RELAY_BENCH_CREATE_CONCURRENCY`
//! (16), `SECRET_RELAY_BENCH_OPERATOR_CONCURRENCY` (16, per instance),
//! `SECRET_RELAY_BENCH_SHARDS` (1: K operator instances, one per shard label),
//! `SECRET_RELAY_BENCH_EVENTS` (`changes`, the operator's default, or `failures`: its
//! `--events`), `SECRET_RELAY_BENCH_PPROF_SECS` (0; S: kube-apiserver's CPU profile of S
//! seconds in the floor and in the initial sync, `tests/scale/pprof.rs`),
//! `SECRET_RELAY_BENCH_PPROF_WHOLE` (`true`: profiles of the whole phases, back to back in
//! chunks of S seconds, instead of one window of S seconds in each),
//! `SECRET_RELAY_BENCH_READY_TIMEOUT_SECS` (1800; 3600 from N = 100,000),
//! `SECRET_RELAY_BENCH_INITIAL_ONLY` (`true`: stop after the initial sync, for quick
//! experiments; write those reports elsewhere), `SECRET_RELAY_BENCH_BIN` (the operator binary;
//! default: this build's), `SECRET_RELAY_BENCH_OUT` (where BENCHMARKS.json and BENCHMARKS.md
//! go; default: the repo). The run is appended to BENCHMARKS.json; no earlier run is dropped.
//!
//! The test fails only when the benchmark cannot run (set-up errors); whether the operator met
//! the targets is a result, written to the reports. `reports_keep_every_run` (not ignored)
//! checks that a run is appended to a copy of the repository's BENCHMARKS.json.

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
    let n: usize = var("SECRET_RELAY_BENCH_N", 1000);
    let shards: usize = var("SECRET_RELAY_BENCH_SHARDS", 1);
    assert!(shards >= 1, "SECRET_RELAY_BENCH_SHARDS: at least 1");
    let ready_default = if n >= 100_000 { 3600 } else { 1800 };
    let p = scale::Params {
        n,
        namespaces: var("SECRET_RELAY_BENCH_NAMESPACES", 100),
        cluster_stores: stores == "cluster",
        refresh_secs: var("SECRET_RELAY_BENCH_REFRESH_SECS", 60),
        create_concurrency: var("SECRET_RELAY_BENCH_CREATE_CONCURRENCY", 16),
        operator_concurrency: var("SECRET_RELAY_BENCH_OPERATOR_CONCURRENCY", 16),
        shards,
        operator_bin: var(
            "SECRET_RELAY_BENCH_BIN",
            PathBuf::from(env!("CARGO_BIN_EXE_secret-relay")),
        ),
        scoped: false,
        ready_timeout: Duration::from_secs(var(
            "SECRET_RELAY_BENCH_READY_TIMEOUT_SECS",
            ready_default,
        )),
        log_dir: root.join("target/bench"),
        initial_only: var("SECRET_RELAY_BENCH_INITIAL_ONLY", false),
        aws_service: var(
            "SECRET_RELAY_BENCH_AWS_SERVICE",
            "ParameterStore".to_string(),
        ),
        events: var("SECRET_RELAY_BENCH_EVENTS", "changes".to_string()),
        pprof_secs: var("SECRET_RELAY_BENCH_PPROF_SECS", 0),
        pprof_whole: var("SECRET_RELAY_BENCH_PPROF_WHOLE", false),
    };
    assert!(
        ["changes", "failures"].contains(&p.events.as_str()),
        "SECRET_RELAY_BENCH_EVENTS: changes or failures"
    );
    assert!(
        ["ParameterStore", "SecretsManager"].contains(&p.aws_service.as_str()),
        "SECRET_RELAY_BENCH_AWS_SERVICE: ParameterStore or SecretsManager"
    );
    let out = var("SECRET_RELAY_BENCH_OUT", root.clone());
    // Read before the run, so that a broken file fails now rather than after an hour.
    let previous = scale::report::load(&out).expect("reading the earlier runs");
    let mut r = scale::run(&env, &p).await.expect("the benchmark ran");
    scale::targets::linear_targets(&mut r, &previous.runs);
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

/// The repository's BENCHMARKS.md is the page BENCHMARKS.json makes with this code: a change
/// of the page's layout (tests/scale/markdown.rs, method.md) comes with the page made again.
/// With `SECRET_RELAY_BENCH_REWRITE_PAGE=true` (`hack/bench.sh --page`) it writes the page
/// instead (in `SECRET_RELAY_BENCH_OUT`, default the repo).
#[test]
fn page_is_made_from_every_run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = var("SECRET_RELAY_BENCH_OUT", root);
    if var("SECRET_RELAY_BENCH_REWRITE_PAGE", false) {
        scale::report::rewrite_page(&out).expect("rewriting BENCHMARKS.md");
        return;
    }
    let made = scale::report::page(&out).expect("the page of BENCHMARKS.json");
    let kept = std::fs::read_to_string(out.join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    assert!(
        made == kept,
        "BENCHMARKS.md is not the page BENCHMARKS.json makes: run hack/bench.sh --page"
    );
}

/// The reports keep every run: a run appended to a copy of the repository's BENCHMARKS.json
/// leaves the earlier ones in place, and the page has a line for each of them.
#[test]
fn reports_keep_every_run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("bench-reports-{}", common::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let earlier = scale::report::load(&root).expect("the repository's BENCHMARKS.json parses");
    if let Err(e) = std::fs::copy(root.join("BENCHMARKS.json"), dir.join("BENCHMARKS.json")) {
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }
    let mut run = earlier.runs.last().cloned().unwrap_or_default();
    run.started_at = "9999-01-01 00:00 UTC".into();
    run.shards = 2;
    scale::report::write_reports(&dir, &run).unwrap();
    scale::report::write_reports(&dir, &run).unwrap();
    let after = scale::report::load(&dir).unwrap();
    assert_eq!(after.runs.len(), earlier.runs.len() + 2);
    for (a, b) in earlier.runs.iter().zip(&after.runs) {
        assert_eq!(
            (&a.started_at, a.n),
            (&b.started_at, b.n),
            "an earlier run moved"
        );
    }
    let md = std::fs::read_to_string(dir.join("BENCHMARKS.md")).unwrap();
    let every = md.split("## Every run").nth(1).expect("an Every run table");
    let lines = every
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| date"))
        .count();
    assert_eq!(lines, after.runs.len(), "one line per run");
    std::fs::remove_dir_all(&dir).unwrap();
}
