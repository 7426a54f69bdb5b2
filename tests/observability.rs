//! The chart's Grafana dashboard and PrometheusRule alerts (issue 31), with the real helm,
//! promtool and operator binary:
//! - both are rendered only when their value enables them, with the labels the values give;
//! - the rules pass `promtool check rules` and the unit tests of
//!   `tests/fixtures/alerts/rules.test.yaml` (`promtool test rules`), which cover every alert
//!   firing and not firing;
//! - every metric the dashboard's queries and the alerts' expressions name is in the operator's
//!   `/metrics` once it has synced one ExternalSecret and failed another.
//!
//! Run with `hack/test.sh --test observability`.

mod common;
mod operator;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use secret_relay::api::{ExternalSecret, SecretStore, VaultDynamicSecret};
use serde_json::{Value, json};

use common::{TestEnv, random_suffix, vault::bao};
use operator::{
    apply_yaml,
    process::{Process, free_port, sample},
    wait_for, wait_reason,
};

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/secret-relay")
}

/// A fresh directory of this test run's own, under the environment's directory.
fn scratch_dir(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env
        .vars
        .get("TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("{name}-{}", random_suffix()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Runs a tool of the environment (`HELM`, `PROMTOOL`) in `cwd`: its exit status and output.
async fn run(env: &TestEnv, tool: &str, args: &[&str], cwd: &Path) -> (bool, String) {
    let home = cwd.join(".helm");
    let out = tokio::process::Command::new(env.tool(tool))
        .args(args)
        .current_dir(cwd)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `helm template rel charts/secret-relay -n ops --set S...`: the rendered objects.
async fn render(env: &TestEnv, sets: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec!["template", "rel", chart.to_str().unwrap(), "-n", "ops"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let dir = scratch_dir(env, "helm");
    let (ok, yaml) = run(env, "HELM", &args, &dir).await;
    assert!(ok, "helm {args:?}:\n{yaml}");
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML parses");
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// The dashboard ConfigMaps among `objs`: those carrying a `secret-relay.json` key.
fn dashboards(objs: &[Value]) -> Vec<&Value> {
    of_kind(objs, "ConfigMap")
        .into_iter()
        .filter(|c| c["data"].get("secret-relay.json").is_some())
        .collect()
}

/// The alerting rules of the one PrometheusRule in `objs`.
fn alerts(objs: &[Value]) -> Vec<&Value> {
    let rules = of_kind(objs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0]["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("a group's rules"))
        .collect()
}

fn alert_names(objs: &[Value]) -> BTreeSet<String> {
    alerts(objs)
        .iter()
        .map(|r| r["alert"].as_str().expect("alert name").to_string())
        .collect()
}

fn dashboard_file() -> Value {
    let path = chart_dir().join("dashboards/secret-relay.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL query of a Grafana dashboard: the panels' `expr` (rows' panels included) and the
/// metric selector of each `label_values(SELECTOR, label)` variable.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(e)) = map.get("expr") {
                    out.push(e.clone());
                }
                for (k, child) in map {
                    if k != "templating" {
                        exprs(child, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    exprs(dashboard, &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .expect("a query variable's query");
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| {
                panic!("variable query {query:?} is not label_values(SELECTOR, label)")
            });
        out.push(selector.to_string());
    }
    out
}

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// keywords, with strings, label matchers (`{...}`), ranges (`[...]`), Grafana variables and
/// the label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Binary operators and modifiers, and the aggregations (`sum by (x) (...)` puts a label
    // list, not a parenthesis, after `sum`).
    const KEYWORDS: [&str; 22] = [
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let s: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // The index after the bracket that closes the one at `i`, strings inside skipped.
    let close = |mut i: usize, open: char, shut: char| {
        let mut depth = 0;
        while i < s.len() {
            match s[i] {
                '"' | '\'' | '`' => {
                    let q = s[i];
                    i += 1;
                    while i < s.len() && s[i] != q {
                        i += if s[i] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == shut => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced {open} in {expr:?}");
    };
    let mut names = BTreeSet::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = close(i, c, c);
        } else if c == '{' {
            i = close(i, '{', '}');
        } else if c == '[' {
            i = close(i, '[', ']');
        } else if c == '(' && label_list_next {
            i = close(i, '(', ')');
            label_list_next = false;
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable, or a number (`0.95`, `1e3`).
            i += 1;
            while i < s.len() && (ident(s[i]) || s[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < s.len() && ident(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let next = s[i..].iter().find(|c| !c.is_whitespace());
            if LABEL_LISTS.contains(&lower.as_str()) {
                label_list_next = true;
            } else if next != Some(&'(') && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (provider, outcome) (rate(secret_relay_provider_calls_total{job=~"$job", outcome!~"ok|NotFound"}[$__rate_interval]))"#
        ),
        ["secret_relay_provider_calls_total"]
    );
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le) (rate(secret_relay_reconcile_duration_seconds_bucket{a="}"}[5m])))"#
        ),
        ["secret_relay_reconcile_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "sum by (namespace, job) (a) > 0\nunless on (namespace, job)\nsum without (pod) (increase(b[3h])) > 1e3"
        ),
        ["a", "b"]
    );
    assert_eq!(names(r#"absent(up{job="x"} == 1)"#), ["up"]);
    assert_eq!(
        names("x / on (a) group_left (b) y offset 5m and bool_metric"),
        ["bool_metric", "x", "y"]
    );
}

/// Metric families in a `/metrics` page (`# TYPE name type` lines): name → type.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Why the series `name` (as PromQL names it) is not in the page, or None when it is: its
/// family must be there with the type its suffix implies (`_total`: counter; `_bucket`, `_sum`,
/// `_count`: histogram), with a sample. (A family with no series yet, such as a counter of
/// events that have not happened, is not on the page at all.)
fn missing(
    name: &str,
    families: &BTreeMap<String, String>,
    scrape: &prometheus_parse::Scrape,
) -> Option<String> {
    let (family, kind) = [
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
        ("_total", "counter"),
    ]
    .into_iter()
    .find_map(|(suffix, kind)| {
        let base = name.strip_suffix(suffix)?;
        (families.get(base).map(String::as_str) == Some(kind)).then_some((base, kind))
    })
    .unwrap_or((name, "gauge"));
    match families.get(family) {
        None => return Some(format!("{name}: no family {family} in /metrics")),
        Some(t) if t != kind => {
            return Some(format!(
                "{name}: {family} is a {t}, the query reads a {kind}"
            ));
        }
        Some(_) => {}
    }
    // prometheus_parse names a histogram's samples by the family, the others as exposed.
    let sampled = scrape
        .samples
        .iter()
        .any(|s| s.metric == name || (kind == "histogram" && s.metric == family));
    (!sampled).then(|| format!("{name}: family {family} has no sample"))
}

#[tokio::test]
async fn dashboard_and_rules_render_only_when_enabled() {
    let Some(env) = TestEnv::get("dashboard_and_rules_render_only_when_enabled").await else {
        return;
    };
    // Off by default.
    let objs = render(&env, &[]).await;
    assert!(dashboards(&objs).is_empty(), "no dashboard by default");
    assert!(of_kind(&objs, "PrometheusRule").is_empty());

    // The dashboard: the file as it is, labelled for Grafana's sidecar.
    let objs = render(&env, &["grafana.dashboard.enabled=true"]).await;
    assert!(of_kind(&objs, "PrometheusRule").is_empty());
    let maps = dashboards(&objs);
    assert_eq!(maps.len(), 1, "one dashboard ConfigMap");
    let cm = maps[0];
    assert_eq!(cm["metadata"]["namespace"], "ops");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(cm["data"]["secret-relay.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard_file(), "the ConfigMap holds the file");
    let objs = render(
        &env,
        &[
            "grafana.dashboard.enabled=true",
            "grafana.dashboard.label=team_dashboards",
            "grafana.dashboard.labelValue=yes",
            "grafana.dashboard.namespace=monitoring",
            "grafana.dashboard.annotations.grafana_folder=secrets",
        ],
    )
    .await;
    let cm = dashboards(&objs)[0];
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["team_dashboards"], "yes");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "secrets");

    // The rules: every alert with a summary, a description and a runbook section that exists.
    let objs = render(
        &env,
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.additionalLabels.release=prom",
        ],
    )
    .await;
    assert!(dashboards(&objs).is_empty());
    let rule = of_kind(&objs, "PrometheusRule")[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts.md"))
            .expect("read docs/alerts.md");
    let anchors: BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let all = alert_names(&objs);
    for want in [
        "SecretRelayDown",
        "SecretRelayNoLeader",
        "SecretRelayKubeAPIUnreachable",
        "SecretRelayExternalSecretsNotReady",
        "SecretRelayStoreNotReady",
        "SecretRelaySyncsStalled",
        "SecretRelayProviderDown",
        "SecretRelayProviderErrors",
    ] {
        assert!(all.contains(want), "{want} in {all:?}");
    }
    for alert in alerts(&objs) {
        let name = alert["alert"].as_str().unwrap();
        let a = &alert["annotations"];
        assert!(
            a["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: summary"
        );
        assert!(
            a["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: description"
        );
        let runbook = a["runbook_url"].as_str().unwrap_or_default();
        let anchor = runbook
            .strip_prefix("docs/alerts.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {runbook:?}"));
        assert_eq!(anchor, name.to_ascii_lowercase());
        assert!(
            anchors.contains(anchor),
            "{name}: no section ### {name} in docs/alerts.md"
        );
        assert!(
            ["critical", "warning"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        assert!(
            alert["expr"]
                .as_str()
                .unwrap()
                .contains(r#"job="rel-secret-relay-metrics", namespace="ops""#),
            "{name} selects the series the chart's ServiceMonitor scrapes: {}",
            alert["expr"]
        );
    }

    // Without leader election there is no Lease to alert on; alerts can be left out by name;
    // the selector and the runbook base can be set.
    let objs = render(
        &env,
        &[
            "prometheusRule.enabled=true",
            "leaderElection.enabled=false",
            "prometheusRule.disabledAlerts={SecretRelaySyncsStalled}",
            r#"prometheusRule.selector=job="kubernetes-pods"\, app="sr""#,
            "prometheusRule.runbookBaseURL=https://docs.example/alerts",
            "prometheusRule.namespace=monitoring",
        ],
    )
    .await;
    let names = alert_names(&objs);
    assert!(!names.contains("SecretRelayNoLeader"), "{names:?}");
    assert!(!names.contains("SecretRelaySyncsStalled"), "{names:?}");
    assert_eq!(names.len(), all.len() - 2);
    assert_eq!(
        of_kind(&objs, "PrometheusRule")[0]["metadata"]["namespace"],
        "monitoring"
    );
    for alert in alerts(&objs) {
        let expr = alert["expr"].as_str().unwrap();
        assert!(
            expr.contains(r#"job="kubernetes-pods", app="sr""#),
            "{expr}"
        );
        assert!(!expr.contains("rel-secret-relay-metrics"), "{expr}");
        assert!(
            alert["annotations"]["runbook_url"]
                .as_str()
                .unwrap()
                .starts_with("https://docs.example/alerts#")
        );
    }

    // helm lint --strict with both on.
    let chart = chart_dir();
    let dir = scratch_dir(&env, "helm");
    let args = [
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "--set",
        "grafana.dashboard.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ];
    let (ok, out) = run(&env, "HELM", &args, &dir).await;
    assert!(ok && out.contains("0 chart(s) failed"), "{out}");
    assert!(!out.contains("[WARNING]"), "{out}");
}

#[tokio::test]
async fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(env) = TestEnv::get("alert_rules_pass_promtool_check_and_unit_tests").await else {
        return;
    };
    // The rules file Prometheus would load: the PrometheusRule's spec.
    let objs = render(&env, &["prometheusRule.enabled=true"]).await;
    let spec = &of_kind(&objs, "PrometheusRule")[0]["spec"];
    let dir = scratch_dir(&env, "promtool");
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml::to_string(spec).expect("rules as YAML"),
    )
    .expect("write rules.yaml");
    let tests_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts/rules.test.yaml");
    let tests_text = std::fs::read_to_string(&tests_file).expect("read rules.test.yaml");
    std::fs::write(dir.join("rules.test.yaml"), &tests_text).expect("copy rules.test.yaml");

    let (ok, out) = run(
        &env,
        "PROMTOOL",
        &["check", "rules", "--lint=all", "--lint-fatal", "rules.yaml"],
        &dir,
    )
    .await;
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert has a unit test where it fires and one where it does not.
    let tests: Value = serde_yaml::from_str(&tests_text).expect("rules.test.yaml parses");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().expect("tests").iter() {
        for t in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = t["alertname"].as_str().unwrap().to_string();
            if t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for name in alert_names(&objs) {
        assert!(fires.contains(&name), "no unit test where {name} fires");
        assert!(
            quiet.contains(&name),
            "no unit test where {name} stays quiet"
        );
    }

    let (ok, out) = run(
        &env,
        "PROMTOOL",
        &["test", "rules", "rules.test.yaml"],
        &dir,
    )
    .await;
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let Some(env) = TestEnv::get("every_metric_the_dashboard_and_alerts_name_is_exported").await
    else {
        return;
    };
    // What the dashboard and the alerts read.
    let objs = render(&env, &["prometheusRule.enabled=true"]).await;
    let mut queries = dashboard_queries(&dashboard_file());
    assert!(queries.len() > 20, "the dashboard's queries: {queries:?}");
    queries.extend(
        alerts(&objs)
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_string()),
    );
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for q in &queries {
        for name in metric_names(q) {
            used.entry(name).or_default().push(q.clone());
        }
    }

    // The operator, with every metric made to move: an ExternalSecret that syncs and restarts
    // a Deployment when its value changes, one whose key is missing (a failed sync), and one
    // on a store whose endpoint nobody listens on (its backend down, the store not Ready).
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "obs").await;
    operator::put_parameter(&ssm, &format!("{prefix}/token"), "v1").await;
    let deployments: Api<Deployment> = Api::namespaced(env.kube.clone(), &ns);
    let app: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{
                    "name": "app", "image": "app:1", "envFrom": [{"secretRef": {"name": "app"}}]
                }]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&Default::default(), &app)
        .await
        .expect("create Deployment app");
    let nobody = free_port();
    apply_yaml(
        &Api::<SecretStore>::namespaced(env.kube.clone(), &ns),
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: gone}}
spec:
  provider:
    aws:
      region: {region}
      endpoint: http://{nobody}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: aws-creds, key: id}}
          secretAccessKeySecretRef: {{name: aws-creds, key: secret}}
"#,
            region = env.aws_region
        ),
    )
    .await;
    let log = env
        .vars
        .get("TESTENV_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("{ns}-operator.log"));
    let p = Process::start(
        &env.kubeconfig,
        &["--namespace", &ns, "--no-cluster-stores"],
        &[],
        &log,
    );
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    for (name, store, key, target) in [
        (
            "app",
            "ssm",
            "token",
            "\n  target:\n    rolloutRestartTargets: [{kind: Deployment, name: app}]",
        ),
        ("broken", "ssm", "missing", ""),
        ("unreachable", "gone", "token", ""),
    ] {
        apply_yaml(
            &es,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: {store}, kind: SecretStore}}{target}\n  data:\n  - secretKey: token\n    remoteRef: {{key: \"{prefix}/{key}\"}}\n"
            ),
        )
        .await;
    }
    // A certificate from OpenBao's PKI engine through a VaultDynamicSecret generator: its
    // notAfter is a gauge of its own.
    let pki = format!("pki-{}", random_suffix());
    bao(&env, &["secrets", "enable", &format!("-path={pki}"), "pki"]).await;
    bao(
        &env,
        &[
            "write",
            &format!("{pki}/root/generate/internal"),
            "common_name=root.example",
            "ttl=1h",
        ],
    )
    .await;
    bao(
        &env,
        &[
            "write",
            &format!("{pki}/roles/web"),
            "allowed_domains=example.com",
            "allow_subdomains=true",
            "ttl=30m",
        ],
    )
    .await;
    operator::create_secret(&env, &ns, "vault-token", json!({"token": env.vault_token})).await;
    apply_yaml(
        &Api::<VaultDynamicSecret>::namespaced(env.kube.clone(), &ns),
        &format!(
            "apiVersion: generators.secret-relay.dev/v1alpha1\nkind: VaultDynamicSecret\nmetadata: {{name: cert}}\nspec:\n  path: {pki}/issue/web\n  method: POST\n  parameters: {{common_name: app.example.com}}\n  provider:\n    server: {server}\n    auth:\n      tokenSecretRef: {{name: vault-token, key: token}}\n",
            server = env.vault_addr
        ),
    )
    .await;
    apply_yaml(
        &es,
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {name: tls}\nspec:\n  secretStoreRef: {name: ssm, kind: SecretStore}\n  dataFrom:\n  - sourceRef:\n      generatorRef: {apiVersion: generators.secret-relay.dev/v1alpha1, kind: VaultDynamicSecret, name: cert}\n",
    )
    .await;
    wait_reason(&es, "app", "SecretSynced").await;
    wait_reason(&es, "broken", "SecretSyncedError").await;
    wait_reason(&es, "tls", "SecretSynced").await;
    // A changed value restarts the Deployment.
    operator::put_parameter(&ssm, &format!("{prefix}/token"), "v2").await;
    es.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": random_suffix()}}}),
        ),
    )
    .await
    .expect("annotate force-sync");
    let page = wait_for(
        "every metric to have moved",
        Duration::from_secs(60),
        || async {
            let (status, page) = p.admin_get("/metrics").await?;
            let m = parse(&page);
            let ready = |kind, ready| {
                sample(
                    &m,
                    "secret_relay_secretstores",
                    &[("kind", kind), ("ready", ready)],
                )
            };
            (status == 200
                && sample(&m, "secret_relay_externalsecrets", &[("ready", "True")]) == 2.0
                && sample(
                    &m,
                    "secret_relay_certificate_expiration_timestamp_seconds",
                    &[("externalsecret", "tls"), ("generator", "cert")],
                ) > 0.0
                && sample(&m, "secret_relay_externalsecrets", &[("ready", "False")]) == 2.0
                && ready("SecretStore", "True") == 1.0
                && ready("SecretStore", "False") == 1.0
                && sample(
                    &m,
                    "secret_relay_providers_down",
                    &[("provider", "aws_ssm")],
                ) == 1.0
                && sample(
                    &m,
                    "secret_relay_rollout_restarts_total",
                    &[("kind", "Deployment")],
                ) >= 1.0)
                .then_some(page)
        },
    )
    .await;
    let scrape = parse(&page);
    let families = families(&page);
    // The new gauges say what this process is: it runs the controllers (no leader election).
    assert_eq!(sample(&scrape, "secret_relay_leader", &[]), 1.0);
    assert!(
        sample(
            &scrape,
            "secret_relay_syncs_total",
            &[("result", "error"), ("reason", "NotFound")]
        ) >= 1.0
    );
    assert!(
        sample(
            &scrape,
            "secret_relay_provider_call_duration_seconds_count",
            &[("provider", "aws_ssm"), ("outcome", "ok")]
        ) >= 1.0,
        "provider calls are timed"
    );

    // Prometheus' own series, not the operator's.
    let synthetic = ["up"];
    let mut problems = Vec::new();
    for (name, in_queries) in &used {
        if synthetic.contains(&name.as_str()) {
            continue;
        }
        if !name.starts_with("secret_relay_") {
            problems.push(format!(
                "{name}: not an operator metric (in {:?})",
                in_queries[0]
            ));
        } else if let Some(why) = missing(name, &families, &scrape) {
            problems.push(format!("{why} (in {:?})", in_queries[0]));
        }
    }
    assert!(
        problems.is_empty(),
        "metrics named by the dashboard or the alerts but not exported:\n{}\n\n/metrics:\n{page}",
        problems.join("\n")
    );
    // And the other way round: every family the operator exports is on the dashboard.
    let on_dashboard: BTreeSet<String> = dashboard_queries(&dashboard_file())
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    for family in families.keys() {
        let shown = on_dashboard.iter().any(|n| {
            n == family
                || ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| n.strip_suffix(s) == Some(family.as_str()))
        });
        assert!(shown, "{family} is exported but on no dashboard panel");
    }
    drop(p);
}

fn parse(page: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses as Prometheus text")
}
