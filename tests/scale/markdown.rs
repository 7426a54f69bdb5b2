//! `BENCHMARKS.md`, made from every run in `BENCHMARKS.json`: the latest run of each
//! configuration (N, store kind, shards) column by column, its targets, a line for every run
//! ever made, and the method.

use std::{collections::BTreeMap, fmt::Write as _};

use super::report::{Cycle, Instance, Percentiles, Results, Window, is_operator_resource};

fn thousands(n: f64) -> String {
    let neg = n < 0.0;
    let s = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

fn num(v: f64) -> String {
    let v = v + 0.0; // no "-0"
    if v.abs() >= 1000.0 {
        thousands(v)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "—".into())
}

fn pct(p: &Option<Percentiles>, scale: f64, unit: &str) -> String {
    match p {
        Some(p) => format!(
            "{} / {} / {} {unit}",
            num(p.p50 * scale),
            num(p.p99 * scale),
            num(p.max * scale)
        ),
        None => "—".into(),
    }
}

fn map_cell(m: &BTreeMap<String, f64>, filter: impl Fn(&str) -> bool) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(k, v)| **v != 0.0 && filter(k))
        .map(|(k, v)| format!("{k}: {}", num(*v)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("<br>")
    }
}

/// CPU seconds of every process in a window: the operator first, then the servers in a fixed
/// order, then the benchmark itself.
fn cpu_cell(w: &Window) -> String {
    let mut parts = vec![format!("operator: {}", num(w.operator_cpu_secs))];
    if w.server_cpu_secs.is_empty() {
        parts.push("servers not measured".into());
    }
    let order = ["kube-apiserver", "etcd", "bao", "moto"];
    let mut keys: Vec<&String> = w.server_cpu_secs.keys().collect();
    keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
    for k in keys {
        parts.push(format!("{k}: {}", num(w.server_cpu_secs[k])));
    }
    parts.join("<br>")
}

/// A per-instance figure: the value alone for one instance, else each instance's.
fn per_instance(r: &Results, single: Option<f64>, f: impl Fn(&Instance) -> Option<f64>) -> String {
    if r.instances.len() > 1 {
        r.instances
            .iter()
            .map(|i| opt(f(i)))
            .collect::<Vec<_>>()
            .join(" / ")
    } else {
        opt(single)
    }
}

fn head(r: &Results) -> String {
    let shards = match r.shard_count() {
        1 => String::new(),
        k => format!(", {k} shards"),
    };
    let variants: String = r
        .variant_labels()
        .iter()
        .map(|v| format!(", {v}"))
        .collect();
    format!(
        "N = {} ({}{shards}{variants})",
        thousands(r.n as f64),
        r.store_kind
    )
}

fn row(md: &mut String, runs: &[&Results], name: &str, f: &dyn Fn(&Results) -> String) {
    let cells: Vec<String> = runs.iter().map(|r| f(r)).collect();
    let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
}

fn section(md: &mut String, runs: &[&Results], name: &str) {
    row(md, runs, &format!("**{name}**"), &|_| String::new());
}

fn cycle_rows(md: &mut String, runs: &[&Results], pick: &dyn Fn(&Results) -> Option<&Cycle>) {
    let r = |md: &mut String, name: &str, f: &dyn Fn(&Cycle) -> String| {
        row(md, runs, name, &|r| {
            pick(r).map(f).unwrap_or_else(|| "not measured".into())
        })
    };
    r(md, "window, s (successful syncs in it)", &|c| {
        format!("{} ({})", num(c.window.secs), num(c.window.syncs))
    });
    r(
        md,
        "Secret writes (API server) / Secret resourceVersion changes",
        &|c| {
            format!(
                "{} / {}",
                opt(c.secret_writes_apiserver),
                thousands(c.secret_resource_version_changes as f64)
            )
        },
    );
    r(md, "writes to any operator resource (API server)", &|c| {
        opt(c.operator_writes_apiserver)
    });
    r(
        md,
        "ExternalSecret resourceVersion changes (status writes)",
        &|c| thousands(c.external_secret_resource_version_changes as f64),
    );
    r(md, "kube API requests in the window", &|c| {
        map_cell(&c.window.kube_requests, is_operator_resource)
    });
    r(
        md,
        "provider calls per cycle (calls × (N/2) / the provider's reads)",
        &|c| map_cell(&c.per_cycle, |_| true),
    );
    r(md, "provider calls in the window (server side)", &|c| {
        map_cell(&c.window.provider_calls_server, |_| true)
    });
    r(
        md,
        "provider calls in the window (operator metrics)",
        &|c| map_cell(&c.window.provider_calls_operator, |_| true),
    );
    r(
        md,
        "names per GetParameters call (distinct names asked)",
        &|c| {
            format!(
                "{} ({})",
                opt(c.ssm_names_per_get_parameters),
                c.ssm_distinct_names
                    .map(|d| thousands(d as f64))
                    .unwrap_or_else(|| "—".into())
            )
        },
    );
    r(md, "operator CPU in the window, s (per cycle)", &|c| {
        format!(
            "{} ({})",
            num(c.window.operator_cpu_secs),
            num(c.operator_cpu_secs_per_cycle)
        )
    });
    r(md, "CPU by process in the window, s", &|c| {
        cpu_cell(&c.window)
    });
}

/// The latest run of each configuration, ordered by store kind, shards, N.
fn latest(runs: &[Results]) -> Vec<&Results> {
    let mut by: BTreeMap<(&str, &str, usize, &str, usize), &Results> = BTreeMap::new();
    for r in runs {
        let (n, store_kind, shards, aws_service, events) = r.configuration();
        by.insert((aws_service, store_kind, shards, events, n), r);
    }
    by.into_values().collect()
}

/// The Markdown page of every run.
pub fn markdown(all: &[Results]) -> String {
    let runs = latest(all);
    let runs = runs.as_slice();
    let mut md = String::new();
    let _ = writeln!(md, "# secret-relay at scale\n");
    let _ = writeln!(
        md,
        "Made by `hack/bench.sh` (the figures are also in `BENCHMARKS.json`, which keeps every \
         run). Method, and what each figure means, below the tables. The first table has the \
         latest run of each configuration (N, store kind, shards) in a column; [every run](#every-run) \
         ever made follows in one line each. Each run ran in a fresh test environment (etcd, \
         kube-apiserver, OpenBao, moto on loopback) on the machine described in the first rows, \
         which other jobs may have shared: see the load averages.\n"
    );
    let heads: Vec<String> = runs.iter().map(|r| head(r)).collect();
    let _ = writeln!(md, "| | {} |", heads.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(runs.len()));
    setup_rows(&mut md, runs);
    initial_rows(&mut md, runs);
    section(&mut md, runs, "refresh cycle, nothing changed");
    cycle_rows(&mut md, runs, &|r: &Results| r.unchanged.as_ref());
    changed_rows(&mut md, runs);
    restart_rows(&mut md, runs);
    whole_run_rows(&mut md, runs);
    targets(&mut md, runs, &heads);
    every_run(&mut md, all);
    observations(&mut md, runs);
    md.push_str(METHOD);
    md
}

fn setup_rows(md: &mut String, runs: &[&Results]) {
    row(md, runs, "date", &|r| r.started_at.clone());
    row(md, runs, "machine", &|r| {
        format!(
            "{} cores, {}, {}",
            r.machine.get("cores").cloned().unwrap_or_default(),
            r.machine.get("memory").cloned().unwrap_or_default(),
            r.machine.get("cpu").cloned().unwrap_or_default()
        )
    });
    row(md, runs, "versions", &|r| {
        r.versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join("<br>")
    });
    row(
        md,
        runs,
        "load average at start of each phase (1/5/15 min)",
        &|r| {
            r.load_average
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("<br>")
        },
    );
    row(
        md,
        runs,
        "ExternalSecrets N / distinct remote keys M",
        &|r| {
            format!(
                "{} / {}",
                thousands(r.n as f64),
                thousands(r.distinct_keys as f64)
            )
        },
    );
    row(md, runs, "namespaces / stores", &|r| {
        format!("{} / {} {}s", r.namespaces, r.stores, r.store_kind)
    });
    row(md, runs, "operator instances (shards)", &|r| {
        if r.instances.len() > 1 {
            let sel: Vec<&str> = r.instances.iter().map(|i| i.selector.as_str()).collect();
            format!("{}: {}", r.shard_count(), sel.join("<br>"))
        } else {
            "1".into()
        }
    });
    row(md, runs, "refreshInterval", &|r| r.refresh_interval.clone());
    row(
        md,
        runs,
        "concurrency: object creation / operator `--concurrency`",
        &|r| format!("{} / {}", r.create_concurrency, r.operator_concurrency),
    );
}

fn initial_rows(md: &mut String, runs: &[&Results]) {
    section(md, runs, "initial sync");
    row(
        md,
        runs,
        "create N ExternalSecrets (operator stopped), s",
        &|r| num(r.es_create_secs),
    );
    row(md, runs, "raw: create N plain Secrets, s (per s)", &|r| {
        format!("{} ({})", opt(r.raw_create_secs), opt(r.raw_create_per_sec))
    });
    row(
        md,
        runs,
        "floor: N Secret POSTs + N status PATCHes, s (per s)",
        &|r| {
            format!(
                "{} ({})",
                opt(r.floor_secs),
                opt(r.floor_secs.map(|f| r.n as f64 / f))
            )
        },
    );
    row(md, runs, "operator start → all Ready, s", &|r| {
        if r.all_ready {
            opt(r.secs_to_all_ready)
        } else {
            format!(
                "not all Ready: {} of {} after {} s",
                thousands(r.ready_count as f64),
                thousands(r.n as f64),
                num(r.initial.secs)
            )
        }
    });
    row(md, runs, "sync throughput, ExternalSecrets/s", &|r| {
        opt(r.syncs_per_sec)
    });
    row(
        md,
        runs,
        "**headline: sync throughput / raw create throughput**",
        &|r| opt(r.headline_ratio),
    );
    row(md, runs, "all Ready time / raw create time", &|r| {
        opt(r.headline_ratio.filter(|h| *h > 0.0).map(|h| 1.0 / h))
    });
    row(md, runs, "**all Ready time / floor**", &|r| {
        opt(floor_ratio(r))
    });
    row(
        md,
        runs,
        "per object, operator start → Ready (watch), p50 / p99 / max",
        &|r| pct(&r.ready_after_start_ms, 0.001, "s"),
    );
    row(
        md,
        runs,
        "per object, Ready lastTransitionTime − operator start, p50 / p99 / max",
        &|r| pct(&r.ready_ltt_after_start_s, 1.0, "s"),
    );
    row(
        md,
        runs,
        "kube API requests during the initial sync",
        &|r| map_cell(&r.initial.kube_requests, is_operator_resource),
    );
    row(
        md,
        runs,
        "kube API requests per ExternalSecret during the initial sync",
        &|r| opt(r.kube_requests_per_external_secret),
    );
    row(
        md,
        runs,
        "kube API error answers during the initial sync",
        &|r| map_cell(&r.initial.kube_errors, |_| true),
    );
    row(
        md,
        runs,
        "provider calls during the initial sync (server side)",
        &|r| map_cell(&r.initial.provider_calls_server, |_| true),
    );
    row(
        md,
        runs,
        "provider calls during the initial sync (operator metrics)",
        &|r| map_cell(&r.initial.provider_calls_operator, |_| true),
    );
    row(
        md,
        runs,
        "operator CPU during the initial sync, s (per instance)",
        &|r| {
            let each = per_instance(r, None, |i| Some(i.initial_cpu_secs));
            if r.instances.len() > 1 {
                format!("{} ({each})", num(r.initial.operator_cpu_secs))
            } else {
                num(r.initial.operator_cpu_secs)
            }
        },
    );
    row(
        md,
        runs,
        "CPU by process during the initial sync, s",
        &|r| cpu_cell(&r.initial),
    );
    row(
        md,
        runs,
        "CPU by process during the floor, s (the floor's client is the benchmark)",
        &|r| {
            if r.floor_cpu_secs.is_empty() {
                return "—".into();
            }
            let total: f64 = r.floor_cpu_secs.values().sum();
            let mut parts: Vec<String> = r
                .floor_cpu_secs
                .iter()
                .map(|(k, v)| format!("{k}: {}", num(*v)))
                .collect();
            parts.push(format!("all: {}", num(total)));
            parts.join("<br>")
        },
    );
    row(
        md,
        runs,
        "CPU of all processes: initial sync / floor",
        &|r| {
            let floor: f64 = r.floor_cpu_secs.values().sum();
            let sync =
                r.initial.operator_cpu_secs + r.initial.server_cpu_secs.values().sum::<f64>();
            if floor > 0.0 && sync > 0.0 {
                format!("{} / {} = {:.2}×", num(sync), num(floor), sync / floor)
            } else {
                "—".into()
            }
        },
    );
    row(
        md,
        runs,
        "CPU beyond the floor's, by process, s (initial sync − floor; % of the floor's CPU)",
        &cpu_beyond_floor,
    );
    row(
        md,
        runs,
        "operator RSS when all Ready, MiB (per instance)",
        &|r| per_instance(r, r.rss_at_ready_mib, |i| i.rss_at_ready_mib),
    );
    row(
        md,
        runs,
        "of it file-backed (RssFile: the binary's code and read-only data), MiB",
        &|r| per_instance(r, r.rss_file_at_ready_mib, |i| i.rss_file_at_ready_mib),
    );
}

fn changed_rows(md: &mut String, runs: &[&Results]) {
    section(
        md,
        runs,
        "refresh cycle after 1 % of the remote values changed",
    );
    let changed =
        |md: &mut String, name: &str, f: &dyn Fn(&super::report::ChangedCycle) -> String| {
            row(md, runs, name, &|r| {
                r.changed
                    .as_ref()
                    .map(f)
                    .unwrap_or_else(|| "not measured".into())
            })
        };
    changed(
        md,
        "changed remote keys → Secrets expected to change",
        &|c| format!("{} → {}", c.changed_keys, c.expected_updates),
    );
    changed(
        md,
        "updated with the new value / unexpected updates",
        &|c| format!("{} / {}", c.updated, c.unexpected_updates),
    );
    changed(md, "change → last expected Secret updated, s", &|c| {
        opt(c.secs_until_all_updated)
    });
    cycle_rows(md, runs, &|r: &Results| {
        r.changed.as_ref().map(|c| &c.cycle)
    });
    section(md, runs, "ExternalSecrets added at steady state");
    row(
        md,
        runs,
        "count; create → Ready (watch), p50 / p99 / max",
        &|r| {
            r.live_adds
                .as_ref()
                .map(|l| {
                    format!(
                        "{}{}; {}",
                        l.count,
                        if l.all_ready { "" } else { " (not all Ready)" },
                        pct(&l.latency_ms, 0.001, "s")
                    )
                })
                .unwrap_or_else(|| "not measured".into())
        },
    );
}

fn restart_rows(md: &mut String, runs: &[&Results]) {
    section(
        md,
        runs,
        "restart at steady state (every instance, as in an upgrade)",
    );
    let restart = |md: &mut String, name: &str, f: &dyn Fn(&super::report::Restart) -> String| {
        row(md, runs, name, &|r| {
            r.restart
                .as_ref()
                .map(f)
                .unwrap_or_else(|| "not measured".into())
        })
    };
    restart(md, "SIGTERM → every instance exited, s", &|s| {
        let killed = match s.killed_after_grace {
            0 => String::new(),
            k => format!("; {k} killed, no exit within 30 s"),
        };
        format!("{} ({} instance(s){killed})", num(s.stop_secs), s.instances)
    });
    restart(
        md,
        "new start → all re-verified (reconciles ≥ ExternalSecrets), s",
        &|s| match s.secs_to_reverified {
            Some(t) => format!(
                "{} ({} reconciles for {})",
                num(t),
                num(s.reconciles),
                thousands(s.expected as f64)
            ),
            None => format!(
                "never: {} reconciles for {}",
                num(s.reconciles),
                thousands(s.expected as f64)
            ),
        },
    );
    restart(
        md,
        "kube writes to operator resources in the window (API server) / during the stop",
        &|s| {
            format!(
                "{} / {}",
                opt(s.kube_writes_apiserver),
                opt(s.kube_writes_during_stop)
            )
        },
    );
    restart(
        md,
        "Secret / ExternalSecret resourceVersion changes (before the stop → end)",
        &|s| {
            format!(
                "{} / {}",
                s.secret_resource_version_changes, s.external_secret_resource_version_changes
            )
        },
    );
    restart(
        md,
        "provider calls, server side (operator metrics) / distinct keys due",
        &|s| {
            format!(
                "{} ({}) / {}",
                opt(s.provider_calls_server),
                num(s.provider_calls_operator),
                thousands(s.distinct_keys_due as f64)
            )
        },
    );
    restart(
        md,
        "ExternalSecrets due by the end of the window (overdue at the start)",
        &|s| {
            format!(
                "{} ({})",
                thousands(s.external_secrets_due as f64),
                thousands(s.overdue_at_start as f64)
            )
        },
    );
    restart(md, "provider calls in the window (server side)", &|s| {
        map_cell(&s.window.provider_calls_server, |_| true)
    });
    restart(md, "kube API requests in the window", &|s| {
        map_cell(&s.window.kube_requests, is_operator_resource)
    });
    restart(md, "CPU by process in the window, s", &|s| {
        cpu_cell(&s.window)
    });
    restart(md, "new instances' peak RSS, MiB", &|s| {
        s.peak_rss_mib
            .iter()
            .map(|m| num(*m))
            .collect::<Vec<_>>()
            .join(" / ")
    });
}

fn whole_run_rows(md: &mut String, runs: &[&Results]) {
    section(md, runs, "operator, whole run (before the restart)");
    row(md, runs, "peak RSS (VmHWM), MiB (per instance)", &|r| {
        per_instance(r, r.peak_rss_mib, |i| i.peak_rss_mib)
    });
    row(md, runs, "CPU, s (per instance) (run length, s)", &|r| {
        let each = if r.instances.len() > 1 {
            format!(" ({})", per_instance(r, None, |i| Some(i.cpu_secs)))
        } else {
            String::new()
        };
        format!(
            "{}{each} ({})",
            num(r.whole_run.operator_cpu_secs),
            num(r.whole_run.secs)
        )
    });
    row(
        md,
        runs,
        "successful syncs / provider calls, per instance",
        &|r| {
            if r.instances.len() > 1 {
                r.instances
                    .iter()
                    .map(|i| format!("{} / {}", num(i.syncs), num(i.provider_calls)))
                    .collect::<Vec<_>>()
                    .join("<br>")
            } else {
                "one instance".into()
            }
        },
    );
    row(md, runs, "CPU by process, whole run, s", &|r| {
        cpu_cell(&r.whole_run)
    });
    row(md, runs, "sync errors by reason", &|r| {
        map_cell(&r.sync_errors, |_| true)
    });
    row(md, runs, "WARN/ERROR log lines (both generations)", &|r| {
        r.operator_log_warnings.to_string()
    });
    row(md, runs, "kube API requests, whole run", &|r| {
        map_cell(&r.whole_run.kube_requests, is_operator_resource)
    });
}

fn targets(md: &mut String, runs: &[&Results], heads: &[String]) {
    let _ = writeln!(md, "\n## Targets\n");
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for t in &r.targets {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    let _ = writeln!(md, "| target | {} |", heads.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(runs.len()));
    for name in names {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| match r.targets.iter().find(|t| t.name == name) {
                Some(t) => {
                    let verdict = match t.met {
                        Some(true) => "**met**",
                        Some(false) => "**not met**",
                        None => "n/a",
                    };
                    format!("{verdict}: {} (bound {})", t.value, t.bound)
                }
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
}

/// One line per run in the file, oldest first.
fn every_run(md: &mut String, all: &[Results]) {
    let _ = writeln!(md, "\n## Every run\n");
    let _ = writeln!(
        md,
        "Every run in `BENCHMARKS.json`, oldest first. Commit: the build measured (`+`: with \
         uncommitted changes). Peak RSS: of each instance when sharded. Restart: new start → \
         all re-verified; kube writes in that window; provider calls (server side) / distinct \
         keys due.\n"
    );
    let _ = writeln!(
        md,
        "| date | commit | N | stores | shards | raw create, s | floor, s | all Ready, s | all Ready / raw | all Ready / floor | peak RSS, MiB | operator CPU, initial sync, s | restart: re-verified, s | restart: kube writes | restart: provider calls / keys due |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut order: Vec<&Results> = all.iter().collect();
    order.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    for r in order {
        let commit = r
            .versions
            .get("commit")
            .map(|c| match c.split_once(" + ") {
                Some((hash, _)) => format!("{hash}+"),
                None => c.clone(),
            })
            .unwrap_or_else(|| "—".into());
        let ready = if r.all_ready {
            opt(r.secs_to_all_ready)
        } else {
            format!("not all ({} of {})", r.ready_count, r.n)
        };
        let ratio = match (r.all_ready, r.secs_to_all_ready, r.raw_create_secs) {
            (true, Some(s), Some(raw)) if raw > 0.0 => format!("{:.1}×", s / raw),
            _ => "—".into(),
        };
        let rss = per_instance(r, r.peak_rss_mib, |i| i.peak_rss_mib);
        let (reverified, writes, calls) = match &r.restart {
            Some(s) => (
                opt(s.secs_to_reverified),
                opt(s.kube_writes_apiserver),
                format!(
                    "{} / {}",
                    opt(s.provider_calls_server),
                    thousands(s.distinct_keys_due as f64)
                ),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {commit} | {} | {} | {} | {} | {} | {ready} | {ratio} | {} | {rss} | {} | {reverified} | {writes} | {calls} |",
            r.started_at,
            thousands(r.n as f64),
            match r.variant_labels() {
                v if v.is_empty() => r.store_kind.clone(),
                v => format!("{} ({})", r.store_kind, v.join(", ")),
            },
            r.shard_count(),
            opt(r.raw_create_secs),
            opt(r.floor_secs),
            floor_ratio(r)
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "—".into()),
            num(r.initial.operator_cpu_secs),
        );
    }
}

fn observations(md: &mut String, runs: &[&Results]) {
    let mut lines: Vec<String> = Vec::new();
    for r in runs {
        for n in &r.notes {
            let line = format!("{}: {n}", head(r));
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        for s in &r.operator_log_samples {
            lines.push(format!("{}: operator log: `{s}`", head(r)));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(md, "\n## Observations recorded by the latest runs\n");
        for n in lines {
            let _ = writeln!(md, "- {n}");
        }
    }
}

/// The method section, kept as Markdown beside this file.
const METHOD: &str = include_str!("method.md");

/// All Ready time ÷ the floor (issue 28), when both were measured.
pub fn floor_ratio(r: &Results) -> Option<f64> {
    match (r.all_ready, r.secs_to_all_ready, r.floor_secs) {
        (true, Some(s), Some(f)) if f > 0.0 => Some(s / f),
        _ => None,
    }
}

/// The initial sync's CPU beyond the floor's, per process (issue 28): where the time between
/// the floor and all Ready goes on a machine whose cores the processes share. The operator is
/// set against the floor's client (the benchmark, which made the floor's requests), the
/// benchmark's own CPU during the sync (its readiness watch) against nothing; each figure also
/// as a share of all the floor's CPU, so that the shares add up to the CPU ratio − 1.
fn cpu_beyond_floor(r: &Results) -> String {
    let floor_total: f64 = r.floor_cpu_secs.values().sum();
    if floor_total <= 0.0 || r.initial.server_cpu_secs.is_empty() {
        return "—".into();
    }
    let floor_of = |k: &str| r.floor_cpu_secs.get(k).copied().unwrap_or(0.0);
    let mut rows = vec![(
        "operator − the floor's client".to_string(),
        r.initial.operator_cpu_secs - floor_of(super::procs::BENCH_CPU),
    )];
    for (k, v) in &r.initial.server_cpu_secs {
        let floor = if k == super::procs::BENCH_CPU {
            0.0
        } else {
            floor_of(k)
        };
        rows.push((k.clone(), v - floor));
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|x| x.1).sum();
    rows.push(("all".into(), total));
    rows.iter()
        .map(|(k, v)| format!("{k}: {} ({:+.0} %)", num(*v), 100.0 * v / floor_total))
        .collect::<Vec<_>>()
        .join("<br>")
}
