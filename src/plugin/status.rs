//! `kubectl secret-relay status [-A] [-n NS] [--watch]`: the ExternalSecrets, SecretStores,
//! ClusterSecretStores and ClusterExternalSecrets whose `Ready` condition is not `True`, with
//! reason, message, store and last sync, grouped by namespace (cluster-scoped kinds under
//! `(cluster)`: all of them with `-A`, else the ClusterSecretStores the namespace's
//! ExternalSecrets use), and a count of each kind.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, ResourceExt, api::ListParams};

use super::{Error, Outcome, ago};
use crate::api::{
    ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore,
    external_secret::StoreKind,
};

/// `status`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Every namespace, and every ClusterSecretStore and ClusterExternalSecret.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// This namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Print again whenever the list changes (every 2 s), until interrupted.
    #[arg(short, long)]
    pub watch: bool,
}

/// One object that is not Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// `ExternalSecret/app-db`.
    pub object: String,
    /// The `Ready` condition's reason, `NotReconciled` when it has none yet.
    pub reason: String,
    /// The `Ready` condition's message (the cause, as the operator wrote it).
    pub message: String,
    /// `SecretStore/ssm` for an ExternalSecret.
    pub store: Option<String>,
    /// `5m ago`: the last successful sync of an ExternalSecret.
    pub last_sync: Option<String>,
}

/// What `status` found: the objects not Ready by namespace (`(cluster)` for cluster-scoped
/// kinds), and per kind `(not Ready, all)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub by_namespace: BTreeMap<String, Vec<NotReady>>,
    pub counts: BTreeMap<&'static str, (usize, usize)>,
}

impl Report {
    /// Whether every object is Ready.
    pub fn all_ready(&self) -> bool {
        self.by_namespace.is_empty()
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (ns, items) in &self.by_namespace {
            let _ = writeln!(out, "{ns}");
            for it in items {
                let mut line = format!("  {}  {}", it.object, it.reason);
                if let Some(store) = &it.store {
                    let _ = write!(line, "  store {store}");
                }
                if let Some(last) = &it.last_sync {
                    let _ = write!(line, "  last sync {last}");
                }
                let _ = writeln!(out, "{line}");
                if !it.message.is_empty() {
                    let _ = writeln!(out, "    {}", it.message);
                }
            }
        }
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(kind, (bad, all))| format!("{bad} of {all} {kind}s"))
            .collect();
        let _ = writeln!(
            out,
            "{} not Ready",
            if counts.is_empty() {
                "nothing".to_string()
            } else {
                counts.join(", ")
            }
        );
        out
    }
}

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// The entry of an object whose `Ready` is not `True`; `None` when it is Ready.
fn not_ready(object: String, conditions: &[Condition]) -> Option<NotReady> {
    match ready(conditions) {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(NotReady {
            object,
            reason: c.reason.clone(),
            message: c.message.clone(),
            store: None,
            last_sync: None,
        }),
        None => Some(NotReady {
            object,
            reason: "NotReconciled".into(),
            message: "no Ready condition yet: is the operator running and watching this namespace?"
                .into(),
            store: None,
            last_sync: None,
        }),
    }
}

/// Lists the four kinds (in `namespace`, or everywhere when `None`) and collects what is not
/// Ready.
pub async fn report(client: &kube::Client, namespace: Option<&str>) -> Result<Report, Error> {
    let lp = ListParams::default();
    let mut r = Report::default();
    let add = |r: &mut Report, ns: String, kind: &'static str, item: Option<NotReady>| {
        let count = r.counts.entry(kind).or_default();
        count.1 += 1;
        if let Some(item) = item {
            count.0 += 1;
            r.by_namespace.entry(ns).or_default().push(item);
        }
    };
    let (es_api, ss_api): (Api<ExternalSecret>, Api<SecretStore>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let es_list = es_api.list(&lp).await?.items;
    for es in &es_list {
        let status = es.status.clone().unwrap_or_default();
        let item = not_ready(
            format!("ExternalSecret/{}", es.name_any()),
            &status.conditions,
        )
        .map(|mut it| {
            let store = &es.spec.secret_store_ref;
            it.store = Some(format!("{}/{}", store.kind.as_str(), store.name));
            it.last_sync = Some(
                status
                    .refresh_time
                    .as_ref()
                    .map(ago)
                    .unwrap_or_else(|| "never".into()),
            );
            it
        });
        add(
            &mut r,
            es.namespace().unwrap_or_default(),
            "ExternalSecret",
            item,
        );
    }
    for s in ss_api.list(&lp).await? {
        let conditions = s.status.clone().unwrap_or_default().conditions;
        let item = not_ready(format!("SecretStore/{}", s.name_any()), &conditions);
        add(
            &mut r,
            s.namespace().unwrap_or_default(),
            "SecretStore",
            item,
        );
    }
    // Cluster-scoped kinds: every one with `-A`; in one namespace, the ClusterSecretStores
    // its ExternalSecrets name (ClusterExternalSecrets belong to no namespace). A cluster
    // whose RBAC does not let us list them is no error.
    let used: Option<std::collections::BTreeSet<String>> = namespace.map(|_| {
        es_list
            .iter()
            .filter(|es| es.spec.secret_store_ref.kind == StoreKind::ClusterSecretStore)
            .map(|es| es.spec.secret_store_ref.name.clone())
            .collect()
    });
    if let Ok(list) = Api::<ClusterSecretStore>::all(client.clone())
        .list(&lp)
        .await
    {
        for s in list {
            if used.as_ref().is_some_and(|u| !u.contains(&s.name_any())) {
                continue;
            }
            let conditions = s.status.clone().unwrap_or_default().conditions;
            let item = not_ready(format!("ClusterSecretStore/{}", s.name_any()), &conditions);
            add(&mut r, "(cluster)".into(), "ClusterSecretStore", item);
        }
    }
    if namespace.is_none()
        && let Ok(list) = Api::<ClusterExternalSecret>::all(client.clone())
            .list(&lp)
            .await
    {
        for c in list {
            let status = c.status.clone().unwrap_or_default();
            let item = not_ready(
                format!("ClusterExternalSecret/{}", c.name_any()),
                &status.conditions,
            )
            .map(|mut it| {
                if !status.failed_namespaces.is_empty() {
                    let failed: Vec<String> = status
                        .failed_namespaces
                        .iter()
                        .map(|f| format!("{}: {}", f.namespace, f.reason))
                        .collect();
                    it.message = format!("{} ({})", it.message, failed.join("; "));
                }
                it
            });
            add(&mut r, "(cluster)".into(), "ClusterExternalSecret", item);
        }
    }
    Ok(r)
}

/// Runs `status`: prints the report (again on every change with `--watch`).
pub async fn run(args: Args) -> Outcome {
    let (client, default_ns) = super::client().await?;
    let namespace = match (args.all_namespaces, args.namespace) {
        (true, Some(_)) => {
            return Err(Error::Input("status: give -A or -n, not both".into()));
        }
        (true, None) => None,
        (false, ns) => Some(ns.unwrap_or(default_ns)),
    };
    let mut last = None;
    loop {
        let r = report(&client, namespace.as_deref()).await?;
        let text = r.render();
        if last.as_ref() != Some(&text) {
            if args.watch && last.is_some() {
                println!("---");
            }
            print!("{text}");
            last = Some(text);
        }
        if !args.watch {
            return Ok(r.all_ready());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_groups_by_namespace_and_counts_each_kind() {
        let mut r = Report::default();
        r.by_namespace.insert(
            "team-a".into(),
            vec![NotReady {
                object: "ExternalSecret/db".into(),
                reason: "SecretSyncedError".into(),
                message: "ssm GetParameters \"/db\": ParameterNotFound".into(),
                store: Some("SecretStore/ssm".into()),
                last_sync: Some("never".into()),
            }],
        );
        r.counts.insert("ExternalSecret", (1, 3));
        r.counts.insert("SecretStore", (0, 1));
        assert_eq!(
            r.render(),
            "team-a\n  ExternalSecret/db  SecretSyncedError  store SecretStore/ssm  last sync never\n    ssm GetParameters \"/db\": ParameterNotFound\n1 of 3 ExternalSecrets, 0 of 1 SecretStores not Ready\n"
        );
        assert!(!r.all_ready());
    }
}
