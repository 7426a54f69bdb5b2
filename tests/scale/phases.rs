//! The phases of one operator generation: the initial sync, a refresh cycle with unchanged
//! values, a cycle after 1 % of the values changed, ExternalSecrets added at steady state,
//! and the whole-run figures at the end.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use secret_relay::api::ExternalSecret;

use super::{
    Backend, Ctx, Item, Params, item, log,
    operator::Fleet,
    probe::{
        Counts, Listed, Managed, OPERATOR_RESOURCES, Snapshot, external_secrets, managed_secrets,
        moved, writes_to,
    },
    provider_counts::{MotoCounts, ssm_calls, vault_operator_calls},
    report::{
        ChangedCycle, Cycle, Instance, LiveAdds, Percentiles, Results, Window, is_operator_resource,
    },
    setup::{bounded, create, external_secret, put_values},
    watch::wait_all_ready,
};

/// Starts the operator(s) with the backlog of N ExternalSecrets and waits until all are Ready
/// (`start` is the counters' snapshot just before; its time becomes the start).
pub async fn initial_sync(
    cx: &Ctx<'_>,
    r: &mut Results,
    keys: &[String],
    start: &mut Snapshot,
) -> Result<Fleet> {
    let p = cx.p;
    let wall_start = Timestamp::now().as_millisecond();
    let t0 = Instant::now();
    start.at = t0;
    let mut fleet = Fleet::start(p, cx.env, cx.names, "")?;
    let profile = super::pprof::start(cx.env, p, "initial-sync");
    let (all_ready, died) =
        wait_all_ready(cx.watch, keys, &mut fleet, p.ready_timeout, "initial sync").await;
    let t1 = Instant::now();
    r.all_ready = all_ready;
    r.ready_count = cx.watch.ready_count(keys);
    if let Some(d) = died {
        r.notes.push(d);
    }
    {
        let t = cx.watch.tracker.lock().unwrap();
        let mut after_start = Vec::new();
        let mut ltt = Vec::new();
        for k in keys {
            if let Some((at, l)) = t.ready.get(k) {
                after_start.push(at.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                if let Some(l) = l {
                    ltt.push((*l - wall_start) as f64 / 1000.0);
                }
            } else {
                let reason = t
                    .reason
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| "not seen".into());
                *r.not_ready_reasons.entry(reason).or_default() += 1;
            }
        }
        r.ready_after_start_ms = Percentiles::of(after_start);
        r.ready_ltt_after_start_s = Percentiles::of(ltt);
    }
    if all_ready {
        let secs = (t1 - t0).as_secs_f64();
        r.secs_to_all_ready = Some(secs);
        r.syncs_per_sec = Some(p.n as f64 / secs);
        r.headline_ratio = r.raw_create_secs.map(|raw| raw / secs);
        log(format!(
            "all {} Ready {secs:.1} s after the operator started",
            p.n
        ));
    } else {
        log(format!(
            "NOT all Ready: {} of {} after {:.0} s: {:?}",
            r.ready_count,
            p.n,
            (t1 - t0).as_secs_f64(),
            r.not_ready_reasons
        ));
    }
    let rss = fleet.memory("VmRSS:");
    let file = fleet.memory("RssFile:");
    let largest =
        (0..rss.len()).max_by(|&a, &b| rss[a].unwrap_or(0.0).total_cmp(&rss[b].unwrap_or(0.0)));
    r.rss_at_ready_mib = rss.iter().flatten().copied().reduce(f64::max);
    r.rss_file_at_ready_mib = largest.and_then(|i| file[i]);
    r.instances = fleet
        .selectors()
        .into_iter()
        .zip(rss)
        .zip(file)
        .map(|((selector, rss), file)| Instance {
            selector,
            rss_at_ready_mib: rss,
            rss_file_at_ready_mib: file,
            ..Default::default()
        })
        .collect();
    if fleet.alive() {
        let snap = cx.probe.snapshot(&fleet).await?;
        let (w, _) = cx.probe.window(start, &snap).await?;
        if !p.scoped {
            let requests: f64 = w
                .kube_requests
                .iter()
                .filter(|(k, _)| is_operator_resource(k))
                .map(|(_, v)| v)
                .sum();
            r.kube_requests_per_external_secret = Some(requests / p.n as f64);
        }
        for (i, inst) in r.instances.iter_mut().enumerate() {
            inst.initial_cpu_secs = per_instance(&w, i);
        }
        r.initial = w;
    }
    // After the window's end (all Ready): a profile of the whole phase runs on past it.
    r.notes.extend(profile.finish().await);
    Ok(fleet)
}

/// Instance `i`'s CPU seconds in a window (the whole when there is one instance).
fn per_instance(w: &Window, i: usize) -> f64 {
    if w.operator_cpu_secs_by_instance.is_empty() {
        w.operator_cpu_secs
    } else {
        w.operator_cpu_secs_by_instance
            .get(i)
            .copied()
            .unwrap_or(0.0)
    }
}

/// Managed Secrets and ExternalSecrets at the end of a cycle.
pub struct Listings {
    secrets: HashMap<String, Managed>,
    external_secrets: HashMap<String, Listed>,
}

/// A refresh cycle with unchanged remote values: no write expected.
pub async fn unchanged_cycle(
    cx: &Ctx<'_>,
    r: &mut Results,
    keys: &[String],
    fleet: &mut Fleet,
) -> Result<Listings> {
    let (p, probe, names) = (cx.p, cx.probe, cx.names);
    let before = managed_secrets(cx.env, names, probe).await?;
    let es_before = external_secrets(cx.env, names, probe).await?;
    let a = probe.snapshot(fleet).await?;
    if let Some(m) = &probe.moto {
        m.take().await?; // the recording restarts at the snapshot
    }
    log("refresh cycle with unchanged values ...");
    let complete = wait_cycle(p, fleet, &probe.http, a.syncs_ok()).await;
    let b = probe.snapshot(fleet).await?;
    let (w, moto) = probe.window(&a, &b).await?;
    let after = managed_secrets(cx.env, names, probe).await?;
    let es_after = external_secrets(cx.env, names, probe).await?;
    let mut c = cycle_from(p, w, moto);
    c.secret_resource_version_changes =
        moved(keys, &before, &after, |m| m.resource_version.as_str()).len();
    c.external_secret_resource_version_changes =
        moved(keys, &es_before, &es_after, |l| l.resource_version.as_str()).len();
    if !complete {
        r.notes.push(format!(
            "the unchanged refresh window ended before N syncs were counted ({} syncs in {:.0} s)",
            c.window.syncs, c.window.secs
        ));
    }
    log(format!(
        "unchanged cycle: {} syncs in {:.0} s, Secret resourceVersion changes {}, provider calls per cycle {:?}",
        c.window.syncs, c.window.secs, c.secret_resource_version_changes, c.per_cycle
    ));
    r.unchanged = Some(c);
    Ok(Listings {
        secrets: after,
        external_secrets: es_after,
    })
}

/// Keys whose value the changed cycle rewrites: max(2, M/100), half per provider, spread out.
fn changed_keys(p: &Params) -> Vec<(Backend, usize)> {
    let total = (p.distinct_keys() / 100).max(2);
    let per = p.keys_per_provider();
    let mut out = Vec::new();
    for (b, count) in [
        (Backend::Ssm, total / 2),
        (Backend::Vault, total - total / 2),
    ] {
        let step = (per / count.max(1)).max(1);
        out.extend((0..count).map(|i| (b, (i * step) % per)));
    }
    out
}

/// 1 % of the remote values change; a refresh cycle must update exactly their readers.
pub async fn changed_cycle(
    cx: &Ctx<'_>,
    r: &mut Results,
    items: &[Item],
    before: Listings,
    fleet: &mut Fleet,
) -> Result<()> {
    let (p, probe, names) = (cx.p, cx.probe, cx.names);
    let keys: Vec<String> = items.iter().map(|it| names.key(it)).collect();
    let changed = changed_keys(p);
    let expected: BTreeSet<String> = items
        .iter()
        .filter(|it| changed.contains(&(it.backend, it.key)))
        .map(|it| names.key(it))
        .collect();
    let a = probe.snapshot(fleet).await?;
    if let Some(m) = &probe.moto {
        m.take().await?;
    }
    let changed_at = Instant::now();
    let changed_wall = Timestamp::now().as_second();
    put_values(cx.env, p, names, changed.clone(), 2).await?;
    log(format!(
        "changed {} remote keys ({} Secrets read them); refresh cycle ...",
        changed.len(),
        expected.len()
    ));
    let complete = wait_cycle(p, fleet, &probe.http, a.syncs_ok()).await;
    // Every expected Secret should carry the new value now; a late one gets one more
    // refresh interval (the benchmark's LISTs are subtracted from the counts).
    let deadline = Instant::now() + Duration::from_secs(p.refresh_secs + 30);
    let mut after = managed_secrets(cx.env, names, probe).await?;
    let by_key: HashMap<&String, &Item> = keys.iter().zip(items).collect();
    let is_new = |after: &HashMap<String, Managed>, k: &String| match (by_key.get(k), after.get(k))
    {
        (Some(it), Some(m)) => m.value == names.value(2, it.backend, it.key),
        _ => false,
    };
    while expected.iter().any(|k| !is_new(&after, k)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        after = managed_secrets(cx.env, names, probe).await?;
    }
    let b = probe.snapshot(fleet).await?;
    let (w, moto) = probe.window(&a, &b).await?;
    let es_after = external_secrets(cx.env, names, probe).await?;
    let mut c = cycle_from(p, w, moto);
    c.external_secret_resource_version_changes =
        moved(&keys, &before.external_secrets, &es_after, |l| {
            l.resource_version.as_str()
        })
        .len();
    let moved: BTreeSet<String> = moved(&keys, &before.secrets, &after, |m| {
        m.resource_version.as_str()
    })
    .into_iter()
    .collect();
    c.secret_resource_version_changes = moved.len();
    let updated = expected.iter().filter(|k| is_new(&after, k)).count();
    let unexpected = moved.difference(&expected).count();
    if !complete {
        r.notes.push(format!(
            "the changed refresh window ended before N syncs were counted ({} syncs in {:.0} s)",
            c.window.syncs, c.window.secs
        ));
    }
    // When did the last expected Secret change? Its last-refresh annotation has 1 s
    // resolution; the poll above bounds it from above.
    let secs_until_all = (updated == expected.len())
        .then(|| {
            expected
                .iter()
                .filter_map(|k| after.get(k)?.last_refresh)
                .max()
        })
        .flatten()
        .map(|latest| (latest - changed_wall) as f64);
    log(format!(
        "changed cycle: {updated} of {} expected Secrets updated, {unexpected} unexpected; {} syncs in {:.0} s ({:.0} s since the change)",
        expected.len(),
        c.window.syncs,
        c.window.secs,
        changed_at.elapsed().as_secs_f64()
    ));
    r.changed = Some(ChangedCycle {
        cycle: c,
        changed_keys: changed.len(),
        expected_updates: expected.len(),
        updated,
        unexpected_updates: unexpected,
        secs_until_all_updated: secs_until_all,
    });
    Ok(())
}

/// ExternalSecrets added while the operator runs with N: create → Ready latency. Returns
/// the added items.
pub async fn live_adds(cx: &Ctx<'_>, r: &mut Results, fleet: &mut Fleet) -> Result<Vec<Item>> {
    let (p, names, env) = (cx.p, cx.names, cx.env);
    let count = (p.n / 100).max(10);
    let adds: Vec<Item> = (0..count).map(|i| item(p, i, "live")).collect();
    let add_keys: Vec<String> = adds.iter().map(|it| names.key(it)).collect();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let sent = &sent;
        bounded(adds.clone(), p.create_concurrency, |it| async move {
            let api: Api<ExternalSecret> =
                Api::namespaced(env.kube.clone(), &names.namespaces[it.ns]);
            let obj = external_secret(p, names, &it)?;
            sent.lock().unwrap().insert(names.key(&it), Instant::now());
            create(&api, &obj, cx.retries).await
        })
        .await?;
    }
    let (ok, died) = wait_all_ready(
        cx.watch,
        &add_keys,
        fleet,
        Duration::from_secs(p.refresh_secs * 3 + 120),
        "live adds",
    )
    .await;
    if let Some(d) = died {
        r.notes.push(d);
    }
    let t = cx.watch.tracker.lock().unwrap();
    let sent = sent.lock().unwrap();
    let lat: Vec<f64> = add_keys
        .iter()
        .filter_map(|k| {
            let (at, _) = t.ready.get(k)?;
            Some(at.saturating_duration_since(*sent.get(k)?).as_secs_f64() * 1000.0)
        })
        .collect();
    r.live_adds = Some(LiveAdds {
        count,
        all_ready: ok,
        latency_ms: Percentiles::of(lat),
    });
    Ok(adds)
}

/// Peak memory, whole-run counters and sync errors of the first operator generation (it
/// keeps running).
pub async fn end_of_run(
    cx: &Ctx<'_>,
    r: &mut Results,
    fleet: &mut Fleet,
    start: &Snapshot,
) -> Result<()> {
    let peak = fleet.memory("VmHWM:");
    r.peak_rss_mib = peak.iter().flatten().copied().reduce(f64::max);
    for (inst, peak) in r.instances.iter_mut().zip(peak) {
        inst.peak_rss_mib = peak;
    }
    if !fleet.alive() {
        r.notes
            .push("an operator process was not running at the end of the run".into());
        return Ok(());
    }
    let end = cx.probe.snapshot(fleet).await?;
    let (mut w, _) = cx.probe.window(start, &end).await?;
    // Whole-run server counts would double the per-window moto recordings: keep the
    // API server's and the operator's own.
    w.provider_calls_server
        .retain(|k, _| k.starts_with("vault "));
    for (i, inst) in r.instances.iter_mut().enumerate() {
        inst.cpu_secs = per_instance(&w, i);
    }
    let each = fleet.scrape_each(&cx.probe.http).await?;
    for (inst, s) in r.instances.iter_mut().zip(each) {
        inst.syncs = s.syncs_ok();
        inst.provider_calls = s.calls_total();
    }
    r.whole_run = w;
    r.sync_errors = end
        .operator_syncs
        .iter()
        .filter(|(k, _)| k.starts_with("error "))
        .map(|(k, v)| (k.trim_start_matches("error ").to_string(), *v))
        .collect();
    Ok(())
}

/// WARN/ERROR lines of the operators' logs, and one sample of each distinct message (at most
/// five).
pub fn log_warnings(r: &mut Results, logs: &[PathBuf]) {
    let mut seen = BTreeSet::new();
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let warnings: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        r.operator_log_warnings += warnings.len();
        for w in warnings {
            // One sample per distinct message (timestamps and object names differ).
            let msg: String = w
                .split_once(" WARN ")
                .or_else(|| w.split_once(" ERROR "))
                .map(|(_, m)| m)
                .unwrap_or(w)
                .chars()
                .take(240)
                .collect();
            let shape: String = msg
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(80)
                .collect();
            if seen.insert(shape) && seen.len() <= 5 {
                r.operator_log_samples.push(msg);
            }
        }
    }
}

/// Waits out one refresh cycle: at least 1.1 × interval + slack, and at least N successful
/// syncs since `base_syncs` (bounded by 3 × interval + 60 s, plus 1 s per 200
/// ExternalSecrets for large N).
async fn wait_cycle(
    p: &Params,
    fleet: &mut Fleet,
    http: &reqwest::Client,
    base_syncs: f64,
) -> bool {
    let start = Instant::now();
    let slack = if p.scoped { 2 } else { 5 };
    let min = Duration::from_secs(p.refresh_secs).mul_f64(1.1) + Duration::from_secs(slack);
    let max = Duration::from_secs(p.refresh_secs * 3 + 60 + p.n as u64 / 200);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !fleet.alive() {
            return false;
        }
        if start.elapsed() < min {
            continue;
        }
        let syncs = fleet.syncs_ok(http).await - base_syncs;
        if syncs >= p.n as f64 {
            return true;
        }
        if start.elapsed() > max {
            log(format!(
                "refresh cycle: only {syncs} of {} syncs after {:.0} s",
                p.n,
                start.elapsed().as_secs_f64()
            ));
            return false;
        }
    }
}

/// Scales a window's calls to one refresh cycle. Every ExternalSecret reads one remote key per
/// sync, half of them from each provider, so a provider's cycles in the window are its reads
/// divided by N/2, counted per provider: the ExternalSecrets of one provider refresh on its
/// ticks, and a window may hold a different number of ticks of each provider. Without read
/// counts, all syncs over N.
fn cycle_scale(p: &Params, window: &Window, provider: &str) -> f64 {
    match window.provider_reads.get(provider) {
        Some(reads) if *reads > 0.0 => (p.n / 2) as f64 / reads,
        _ if window.syncs > 0.0 => p.n as f64 / window.syncs,
        _ => 0.0,
    }
}

fn cycle_from(p: &Params, window: Window, moto: Option<MotoCounts>) -> Cycle {
    let scale = if window.syncs > 0.0 {
        p.n as f64 / window.syncs
    } else {
        0.0
    };
    let (ssm_scale, vault_scale) = (
        cycle_scale(p, &window, "ssm"),
        cycle_scale(p, &window, "vault"),
    );
    let mut per_cycle = Counts::new();
    if !p.scoped {
        let server = &window.provider_calls_server;
        per_cycle.insert(
            "ssm+sts, all calls (server)".into(),
            ssm_calls(server) * ssm_scale,
        );
        per_cycle.insert(
            "ssm GetParameters (server)".into(),
            server.get("ssm GetParameters").copied().unwrap_or(0.0) * ssm_scale,
        );
        if p.aws_service == "SecretsManager" {
            for action in ["BatchGetSecretValue", "GetSecretValue"] {
                per_cycle.insert(
                    format!("secretsmanager {action} (server)"),
                    server
                        .get(&format!("secretsmanager {action}"))
                        .copied()
                        .unwrap_or(0.0)
                        * ssm_scale,
                );
            }
        }
        per_cycle.insert(
            "vault, all calls (server)".into(),
            vault_operator_calls(server) * vault_scale,
        );
    }
    for (k, v) in &window.provider_calls_operator {
        let provider_scale = if k.starts_with("ssm ") {
            ssm_scale
        } else if k.starts_with("vault ") {
            vault_scale
        } else {
            scale
        };
        per_cycle.insert(format!("{k} (operator)"), v * provider_scale);
    }
    let secret_writes = (!p.scoped).then(|| writes_to(&window.kube_requests, &["secrets"]));
    let operator_writes =
        (!p.scoped).then(|| writes_to(&window.kube_requests, &OPERATOR_RESOURCES));
    let (names_avg, distinct) = match &moto {
        Some(m) if !m.get_parameters_names.is_empty() => (
            Some(
                m.get_parameters_names.iter().sum::<usize>() as f64
                    / m.get_parameters_names.len() as f64,
            ),
            Some(m.distinct_names.len()),
        ),
        _ => (None, None),
    };
    Cycle {
        operator_cpu_secs_per_cycle: window.operator_cpu_secs * scale,
        secret_writes_apiserver: secret_writes,
        operator_writes_apiserver: operator_writes,
        window,
        secret_resource_version_changes: 0,
        external_secret_resource_version_changes: 0,
        per_cycle,
        ssm_names_per_get_parameters: names_avg,
        ssm_distinct_names: distinct,
    }
}
