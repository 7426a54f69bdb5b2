//! The scale benchmark (`tests/scale/mod.rs`, issue 6) at N = 100, on every `cargo test`, so
//! that its code does not rot. It asserts what must hold at any N, never a timing: every
//! ExternalSecret becomes Ready; a refresh cycle with unchanged remote values writes no Secret
//! and no ExternalSecret status; after remote values change, exactly the Secrets that read
//! them are updated, with the new value; a restart at steady state re-verifies every
//! ExternalSecret and changes no Secret and no ExternalSecret.
//!
//! Differences from the full benchmark (`hack/bench.sh`), because the test environment is
//! shared with the other tests running in parallel: one namespace with the operator binary
//! scoped to it (`--namespace`), refreshInterval 5 s, no raw reference, no server-side counts
//! (so the restart's writes are checked by resourceVersions), one instance, a restart that
//! waits 10 s after SIGTERM (not a Pod's 30 s) before it kills.

mod common;
mod scale;

use std::time::{Duration, Instant};

use common::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_invariants_at_n100() {
    let Some(env) = TestEnv::get("scale_invariants_at_n100").await else {
        return;
    };
    let log_dir = env
        .vars
        .get("TESTENV_LOG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let p = scale::Params {
        n: 100,
        namespaces: 1,
        cluster_stores: false,
        refresh_secs: 5,
        create_concurrency: 16,
        operator_concurrency: 16,
        shards: 1,
        operator_bin: env!("CARGO_BIN_EXE_secret-relay").into(),
        scoped: true,
        ready_timeout: Duration::from_secs(60),
        log_dir,
        initial_only: false,
        aws_service: "ParameterStore".into(),
        events: "changes".into(),
        pprof_secs: 0,
        pprof_whole: false,
    };
    let started = Instant::now();
    let r = scale::run(&env, &p).await.expect("benchmark set-up");
    eprintln!(
        "scale N=100: all Ready {:?} s after start, {:.0} s in all",
        r.secs_to_all_ready,
        started.elapsed().as_secs_f64()
    );
    assert!(
        r.all_ready,
        "{} of 100 ExternalSecrets Ready; not Ready: {:?}; notes: {:?}",
        r.ready_count, r.not_ready_reasons, r.notes
    );
    let u = r.unchanged.as_ref().expect("the unchanged cycle ran");
    assert!(
        u.window.syncs >= 100.0,
        "every ExternalSecret refreshed in the window: {} syncs",
        u.window.syncs
    );
    assert_eq!(
        u.secret_resource_version_changes, 0,
        "an unchanged refresh wrote Secrets"
    );
    assert_eq!(
        u.external_secret_resource_version_changes, 0,
        "an unchanged refresh wrote ExternalSecret statuses"
    );
    let c = r.changed.as_ref().expect("the changed cycle ran");
    assert_eq!(c.expected_updates, 20, "2 keys × 10 readers");
    assert_eq!(
        c.updated, c.expected_updates,
        "Secrets of the changed keys carry the new value"
    );
    assert_eq!(
        c.unexpected_updates, 0,
        "Secrets of unchanged keys were written"
    );
    assert_eq!(
        c.cycle.secret_resource_version_changes, c.expected_updates,
        "exactly the changed Secrets were written"
    );
    let s = r.restart.as_ref().expect("the restart ran");
    assert!(
        s.secs_to_reverified.is_some(),
        "the restarted operator re-verified every ExternalSecret: {} reconciles for {}; notes: {:?}",
        s.reconciles,
        s.expected,
        r.notes
    );
    assert_eq!(
        (
            s.secret_resource_version_changes,
            s.external_secret_resource_version_changes
        ),
        (0, 0),
        "a restart at steady state wrote Secrets / ExternalSecrets"
    );
    assert!(
        s.provider_calls_operator <= s.distinct_keys_due as f64,
        "a restart calls providers only for the remote keys due: {} calls for {} keys",
        s.provider_calls_operator,
        s.distinct_keys_due
    );
    assert_eq!(
        s.killed_after_grace, 0,
        "the operator exits on SIGTERM (stop took {:.1} s)",
        s.stop_secs
    );
    assert!(r.sync_errors.is_empty(), "sync errors: {:?}", r.sync_errors);
}
