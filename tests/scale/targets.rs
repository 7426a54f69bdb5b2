//! The targets a run is judged against (issues 6 and 14). A target met or not is a result,
//! never a test failure; `met: None` means not applicable or not measured.

use super::{
    Params,
    report::{Results, Target},
};

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1} s"))
        .unwrap_or_else(|| "not measured".into())
}

fn mib(v: Option<f64>) -> String {
    v.map(|m| format!("{m:.1} MiB"))
        .unwrap_or_else(|| "not measured".into())
}

/// "all Ready within `factor` × raw create time".
fn within_raw(r: &Results, factor: f64, name: &str) -> Target {
    Target {
        name: name.into(),
        bound: r
            .raw_create_secs
            .map(|s| format!("{:.1} s", factor * s))
            .unwrap_or_else(|| "—".into()),
        value: match (r.all_ready, r.secs_to_all_ready) {
            (true, Some(s)) => format!("{s:.1} s"),
            _ => format!(
                "not all Ready ({} of {} after {:.0} s)",
                r.ready_count, r.n, r.initial.secs
            ),
        },
        met: match (r.raw_create_secs, r.all_ready, r.secs_to_all_ready) {
            (Some(raw), true, Some(s)) => Some(s <= factor * raw),
            (Some(_), false, _) => Some(false),
            _ => None,
        },
    }
}

pub fn targets(p: &Params, r: &Results) -> Vec<Target> {
    let mut t = vec![
        within_raw(r, 2.0, "all Ready within 2 × raw create time"),
        within_raw(r, 3.0, "all Ready within 3 × raw create time (issue 14)"),
        Target {
            name: "all Ready within 1.25 × the floor at N = 10,000 (issue 28)".into(),
            bound: r
                .floor_secs
                .map(|f| format!("{:.1} s", 1.25 * f))
                .unwrap_or_else(|| "—".into()),
            value: match (r.all_ready, r.secs_to_all_ready, r.floor_secs) {
                (true, Some(s), Some(f)) => format!("{s:.1} s ({:.2}× the floor)", s / f),
                (true, Some(s), None) => format!("{s:.1} s"),
                _ => format!("not all Ready ({} of {})", r.ready_count, r.n),
            },
            met: match (p.n, r.floor_secs) {
                (10_000, Some(f)) => {
                    Some(r.all_ready && r.secs_to_all_ready.is_some_and(|s| s <= 1.25 * f))
                }
                _ => None,
            },
        },
    ];
    let per = p.keys_per_provider() as f64;
    let cycle = r.unchanged.as_ref();
    let pc = |k: &str| cycle.and_then(|c| c.per_cycle.get(k).copied());
    let vault = pc("vault, all calls (server)");
    t.push(Target {
        name: "Vault calls per refresh cycle ≤ distinct Vault keys".into(),
        bound: format!("{per:.0}"),
        value: vault
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "not measured".into()),
        met: vault.map(|v| v <= per),
    });
    let ssm_all = pc("ssm+sts, all calls (server)");
    if p.aws_service == "SecretsManager" {
        let batch = pc("secretsmanager BatchGetSecretValue (server)");
        let single = pc("secretsmanager GetSecretValue (server)");
        let bound = (per / 20.0).ceil();
        t.push(Target {
            name: "Secrets Manager calls per refresh cycle ≤ ceil(distinct secrets / 20) (issue 30)"
                .into(),
            bound: format!("{bound:.0}"),
            value: match (batch, single, ssm_all) {
                (Some(b), Some(s), Some(a)) => format!(
                    "{:.0} ({b:.0} BatchGetSecretValue, {s:.0} GetSecretValue; {a:.0} Secrets Manager/STS calls of any kind)",
                    b + s
                ),
                _ => "not measured".into(),
            },
            met: batch.zip(single).map(|(b, s)| b + s <= bound),
        });
    }
    let ssm = pc("ssm GetParameters (server)");
    let ssm_bound = (per / 10.0).ceil();
    if p.aws_service != "SecretsManager" {
        t.push(Target {
            name: "SSM GetParameters calls per refresh cycle ≤ ceil(distinct SSM keys / 10)".into(),
            bound: format!("{ssm_bound:.0}"),
            value: match (ssm, ssm_all) {
                (Some(g), Some(a)) => format!("{g:.0} ({a:.0} SSM/STS calls of any kind)"),
                _ => "not measured".into(),
            },
            met: ssm.map(|g| g <= ssm_bound),
        });
    }
    let writes = cycle.and_then(|c| {
        Some((
            c.secret_writes_apiserver?,
            c.operator_writes_apiserver?,
            c.secret_resource_version_changes,
            c.external_secret_resource_version_changes,
        ))
    });
    t.push(Target {
        name: "zero writes on an unchanged refresh".into(),
        bound: "0".into(),
        value: match writes {
            Some((s, o, rv, es)) => format!(
                "{s:.0} Secret writes, {o:.0} writes to any operator resource; resourceVersion changes: {rv} Secrets, {es} ExternalSecrets"
            ),
            None => "not measured".into(),
        },
        met: writes.map(|(s, o, rv, es)| s == 0.0 && o == 0.0 && rv == 0 && es == 0),
    });
    t.push(Target {
        name: "exactly the changed Secrets updated".into(),
        bound: r
            .changed
            .as_ref()
            .map(|c| format!("{} updated, 0 others", c.expected_updates))
            .unwrap_or_else(|| "—".into()),
        value: r
            .changed
            .as_ref()
            .map(|c| format!("{} updated, {} others", c.updated, c.unexpected_updates))
            .unwrap_or_else(|| "not measured".into()),
        met: r
            .changed
            .as_ref()
            .map(|c| c.updated == c.expected_updates && c.unexpected_updates == 0),
    });
    t.extend(restart_targets(r));
    t.push(Target {
        name: "peak RSS ≤ 64 MiB at N = 10,000".into(),
        bound: "64 MiB".into(),
        value: mib(r.peak_rss_mib),
        // A single instance's figure: with shards each instance holds a part.
        met: if p.n == 10_000 && r.shard_count() == 1 {
            r.peak_rss_mib.map(|m| m <= 64.0)
        } else {
            None
        },
    });
    if r.shard_count() > 1 {
        t.push(Target {
            name: "peak RSS per instance".into(),
            bound: "informational".into(),
            value: r
                .instances
                .iter()
                .map(|i| format!("{}: {}", i.selector, mib(i.peak_rss_mib)))
                .collect::<Vec<_>>()
                .join("; "),
            met: None,
        });
    }
    t
}

/// Issue 14's restart targets: no kube write, provider calls within the keys due.
fn restart_targets(r: &Results) -> Vec<Target> {
    let s = r.restart.as_ref();
    let writes = s.and_then(|s| {
        Some((
            s.kube_writes_apiserver?,
            s.secret_resource_version_changes,
            s.external_secret_resource_version_changes,
        ))
    });
    let calls = s.map(|s| match s.provider_calls_server {
        Some(c) => (c, "server side"),
        None => (s.provider_calls_operator, "operator metrics"),
    });
    vec![
        Target {
            name: "restart: 0 kube writes".into(),
            bound: "0".into(),
            value: match (s, writes) {
                (Some(s), Some((w, rv, es))) => format!(
                    "{w:.0} writes to any operator resource ({} during the stop); resourceVersion changes: {rv} Secrets, {es} ExternalSecrets",
                    s.kube_writes_during_stop
                        .map(|w| format!("{w:.0}"))
                        .unwrap_or_else(|| "—".into())
                ),
                (Some(s), None) => format!(
                    "API server not counted; resourceVersion changes: {} Secrets, {} ExternalSecrets",
                    s.secret_resource_version_changes, s.external_secret_resource_version_changes
                ),
                (None, _) => "not measured".into(),
            },
            met: writes.map(|(w, rv, es)| w == 0.0 && rv == 0 && es == 0),
        },
        Target {
            name: "restart: provider calls ≤ distinct keys due".into(),
            bound: s
                .map(|s| format!("{} keys due", s.distinct_keys_due))
                .unwrap_or_else(|| "—".into()),
            value: match (s, calls) {
                (Some(s), Some((c, source))) => format!(
                    "{c:.0} calls ({source}); {} of {} ExternalSecrets due, {} of them overdue at the start",
                    s.external_secrets_due, s.expected, s.overdue_at_start
                ),
                _ => "not measured".into(),
            },
            met: s
                .zip(calls)
                .filter(|(s, _)| s.secs_to_reverified.is_some())
                .map(|(s, (c, _))| c <= s.distinct_keys_due as f64),
        },
    ]
}

/// Linear growth at N = 100,000 (issue 28, after issue 14's 10.5×): all Ready ≤ 11 × the
/// latest 10,000 run of the same store kind, shard count, AWS service and `--events` in `previous` (n/a
/// when there is none), peak RSS ≤ 160 MiB.
/// Added to `r.targets` (needs the other runs, so it is not part of [`targets`]).
pub fn linear_targets(r: &mut Results, previous: &[Results]) {
    if r.n != 100_000 {
        return;
    }
    let base = previous
        .iter()
        .rfind(|b| b.configuration() == r.configuration_at(10_000));
    let from = base
        .map(|b| format!(" (the 10,000 run of {})", b.started_at))
        .unwrap_or_default();
    let ready = r.all_ready.then_some(r.secs_to_all_ready).flatten();
    let ready_base = base.and_then(|b| b.all_ready.then_some(b.secs_to_all_ready).flatten());
    r.targets.push(Target {
        name: "all Ready ≤ 11 × the latest 10,000 run (linear to 100,000, issue 28)".into(),
        bound: ready_base
            .map(|b| format!("{:.1} s{from}", 11.0 * b))
            .unwrap_or_else(|| "no 10,000 run of this configuration".into()),
        value: if r.all_ready {
            secs(ready)
        } else {
            format!("not all Ready ({} of {})", r.ready_count, r.n)
        },
        met: ready_base.map(|b| ready.is_some_and(|s| s <= 11.0 * b)),
    });
    r.targets.push(Target {
        name: "peak RSS ≤ 160 MiB at N = 100,000 (issue 28)".into(),
        bound: "160 MiB".into(),
        value: mib(r.peak_rss_mib),
        met: r.peak_rss_mib.map(|m| m <= 160.0),
    });
}
