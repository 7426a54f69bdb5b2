//! A restart at steady state (issue 14, item 3), as in an upgrade: every instance gets
//! SIGTERM and exits, a new generation starts (all shards at once), and the window runs from
//! its start until every ExternalSecret has been re-verified, i.e. until the instances'
//! `secret_relay_reconcile_duration_seconds_count` (one per reconcile that passed the
//! cache-sync gate) add up to the number of ExternalSecrets.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;

use super::{
    Ctx, Item, log,
    operator::{Fleet, GRACE, SCOPED_GRACE, SHORT_GRACE},
    probe::{OPERATOR_RESOURCES, delta, external_secrets, managed_secrets, moved, writes_to},
    provider_counts::{ssm_calls, vault_operator_calls},
    report::{Restart, Results, Window},
};

/// Stops `fleet`, starts a new generation and measures it until every one of `items`
/// (`keys`, in the same order) is re-verified; the new generation is stopped at the end.
/// Returns the figures and the new generation's log files.
pub async fn run(
    cx: &Ctx<'_>,
    r: &mut Results,
    fleet: Fleet,
    items: &[Item],
    keys: &[String],
) -> Result<(Restart, Vec<PathBuf>)> {
    let (p, probe, names) = (cx.p, cx.probe, cx.names);
    let expected = keys.len();
    let instances = fleet.ops.len();
    // Before the stop: the objects' resourceVersions, and when each ExternalSecret is due
    // (status.refreshTime + refreshInterval, as the operator's plan computes it without
    // memory).
    let secrets_before = managed_secrets(cx.env, names, probe).await?;
    let es_before = external_secrets(cx.env, names, probe).await?;
    let kube_before_stop = probe.kube_counts().await?;
    log(format!(
        "restart: stopping {instances} operator instance(s) with SIGTERM ..."
    ));
    let stopping = Instant::now();
    let grace = if p.scoped { SCOPED_GRACE } else { GRACE };
    let killed = fleet.stop(grace).await;
    let stop_secs = stopping.elapsed().as_secs_f64();
    if killed > 0 {
        r.notes.push(format!(
            "restart: {killed} of {instances} operator instance(s) had not exited {} s after SIGTERM and were killed",
            grace.as_secs()
        ));
    }
    let mut base = probe.base_snapshot(instances).await?;
    let stop_writes = match (&kube_before_stop, base.kube_requests()) {
        (Some(a), Some(b)) => Some(writes_to(&delta(b, a), &OPERATOR_RESOURCES)),
        _ => None,
    };

    let start_wall = Timestamp::now().as_second();
    let t0 = Instant::now();
    base.at = t0;
    let mut fleet = Fleet::start(p, cx.env, names, "restart")?;
    let mut reconciles;
    let mut reached = None;
    let mut last_log = Instant::now();
    loop {
        reconciles = fleet.reconciles(&probe.http).await;
        if reconciles >= expected as f64 {
            reached = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if !fleet.alive() {
            r.notes.push(format!(
                "an operator process exited during the restart ({reconciles} of {expected} reconciles)"
            ));
            break;
        }
        if t0.elapsed() > p.ready_timeout {
            r.notes.push(format!(
                "the restarted operator re-verified {reconciles} of {expected} ExternalSecrets within {:.0} s",
                p.ready_timeout.as_secs_f64()
            ));
            break;
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            log(format!(
                "restart: {reconciles} / {expected} reconciles after {:.0} s; RSS {} MiB",
                t0.elapsed().as_secs_f64(),
                fleet.rss_text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = fleet.memory("VmHWM:");
    let window = if fleet.alive() {
        let snap = probe.snapshot(&fleet).await?;
        probe.window(&base, &snap).await?.0
    } else {
        Window::default()
    };
    let end_wall = Timestamp::now().as_second();
    let secrets_after = managed_secrets(cx.env, names, probe).await?;
    let es_after = external_secrets(cx.env, names, probe).await?;
    let logs = fleet.logs();
    fleet.stop(SHORT_GRACE).await;

    // Which refreshes were due in the window: refreshTime + interval at or before its end
    // (those already overdue at the start included); no refreshTime is due at once.
    let interval = p.refresh_secs as i64;
    let due_at = |k: &String| {
        es_before
            .get(k)
            .and_then(|l| l.refresh_time)
            .map(|t| t + interval)
    };
    let due: Vec<&Item> = items
        .iter()
        .zip(keys)
        .filter(|(_, k)| due_at(k).is_none_or(|d| d <= end_wall))
        .map(|(it, _)| it)
        .collect();
    let overdue = keys
        .iter()
        .filter(|k| due_at(k).is_none_or(|d| d <= start_wall))
        .count();
    let distinct_due: BTreeSet<_> = due.iter().map(|it| (it.backend, it.key)).collect();
    let server = &window.provider_calls_server;
    let provider_calls_server =
        (!p.scoped).then(|| ssm_calls(server) + vault_operator_calls(server));
    let out = Restart {
        instances,
        expected,
        stop_secs,
        killed_after_grace: killed,
        secs_to_reverified: reached,
        reconciles,
        kube_writes_apiserver: (!p.scoped)
            .then(|| writes_to(&window.kube_requests, &OPERATOR_RESOURCES)),
        kube_writes_during_stop: stop_writes,
        secret_resource_version_changes: moved(keys, &secrets_before, &secrets_after, |m| {
            m.resource_version.as_str()
        })
        .len(),
        external_secret_resource_version_changes: moved(keys, &es_before, &es_after, |l| {
            l.resource_version.as_str()
        })
        .len(),
        provider_calls_server,
        provider_calls_operator: window.provider_calls_operator.values().sum(),
        external_secrets_due: due.len(),
        overdue_at_start: overdue,
        distinct_keys_due: distinct_due.len(),
        peak_rss_mib: peak.into_iter().map(|m| m.unwrap_or(0.0)).collect(),
        window,
    };
    log(format!(
        "restart: {} of {expected} re-verified after {}; kube writes {:?} (during the stop {:?}), resourceVersion changes {} Secrets / {} ExternalSecrets; provider calls {:?} (server), {} (operator) for {} distinct keys due",
        out.reconciles,
        out.secs_to_reverified
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "never".into()),
        out.kube_writes_apiserver,
        out.kube_writes_during_stop,
        out.secret_resource_version_changes,
        out.external_secret_resource_version_changes,
        out.provider_calls_server,
        out.provider_calls_operator,
        out.distinct_keys_due
    ));
    Ok((out, logs))
}
