//! Unit tests of `secret_store.rs`: identity checks, conditions, referent references.

use super::*;

fn provider(yaml: &str) -> SecretStoreProvider {
    serde_yaml::from_str(yaml).expect("provider fixture")
}

#[test]
fn only_admins_lend_the_operators_identity() {
    use StoreKind::{ClusterSecretStore as Cluster, SecretStore as Tenant};
    let ambient = provider("aws: {region: eu-west-1}");
    let ambient_kms = provider("kms: {aws: {region: eu-west-1}}");
    let ambient_gcp = provider("kms: {gcp: {keyName: k}}");
    let custom = provider("aws: {region: eu-west-1, endpoint: 'https://evil.example'}");
    let keyed = provider(
        "aws: {region: eu-west-1, endpoint: 'https://vpce.example', auth: {secretRef: {accessKeyIDSecretRef: {name: c, key: id}, secretAccessKeySecretRef: {name: c, key: s}}}}",
    );
    let gcp_key = provider(
        "kms: {gcp: {endpoint: 'https://x.example', auth: {secretRef: {name: sa, key: json}}}}",
    );
    for p in [&ambient, &ambient_kms, &ambient_gcp, &custom] {
        let e = check_identity(Tenant, p, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert!(
            e.message.contains("(the operator's own identity)"),
            "{}",
            e.message
        );
        check_identity(Cluster, p, false).unwrap();
    }
    // The opt-in lets tenants use it, but never towards an endpoint they name.
    for p in [&ambient, &ambient_kms, &ambient_gcp] {
        check_identity(Tenant, p, true).unwrap();
    }
    let e = check_identity(Tenant, &custom, true).unwrap_err();
    assert!(
        e.message
            .contains("never sent to an endpoint a SecretStore names (https://evil.example)"),
        "{}",
        e.message
    );
    // Credentials the store names may go anywhere it says.
    for p in [&keyed, &gcp_key] {
        assert!(ambient_identity(p).is_none());
        check_identity(Tenant, p, false).unwrap();
    }
}

/// issue 10: an invalid `namespaceRegexes` entry denied (safe) but the store said Valid;
/// an empty one allowed every namespace. issue 26: an invalid entry anywhere closes the store.
#[test]
fn namespace_regexes_empty_or_invalid_admit_nobody_and_are_reported() {
    let good = css("[{namespaceRegexes: ['^team-']}]");
    assert!(namespace_allowed(&good, "team-a", None));
    assert!(!namespace_allowed(&good, "other", None));
    assert_eq!(conditions_error(&good), None);
    let empty = css("[{namespaceRegexes: ['']}]");
    assert!(!namespace_allowed(&empty, "team-a", None));
    assert!(conditions_error(&empty).unwrap().starts_with(
        "spec.conditions[0].namespaceRegexes[0] is empty, which would match every namespace"
    ));
    let invalid = css("[{namespaceRegexes: ['^team-', '(']}]");
    assert!(
        !namespace_allowed(&invalid, "team-a", None),
        "fails closed: the valid entry does not open it"
    );
    assert!(!namespace_allowed(&invalid, "x(", None));
    assert!(
        conditions_error(&invalid)
            .unwrap()
            .starts_with("spec.conditions[0].namespaceRegexes[1] \"(\" is invalid, so the store admits no namespace: regex parse error")
    );
}

/// A ClusterSecretStore with `conditions` (YAML flow list) and an AWS provider.
fn css(conditions: &str) -> ClusterSecretStore {
    serde_yaml::from_str(&format!(
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterSecretStore\nmetadata: {{name: s}}\nspec:\n  conditions: {conditions}\n  provider: {{aws: {{region: r}}}}\n"
    ))
    .unwrap()
}

/// Namespace `name` with `labels`, as the namespace cache holds it.
fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        }
    }))
    .unwrap()
}

/// issue 26: ESO's rule. Any `namespaceSelector`, `namespaces` entry or `namespaceRegexes`
/// entry of any condition admits (here fields of one condition were ANDed); a condition that
/// names nothing admits nobody (here `[{}]` admitted everyone); no conditions admit all.
#[test]
fn conditions_admit_on_any_match_of_any_field_as_eso() {
    let team = namespace("team-a", &[("team", "a")]);
    let payments = namespace("payments", &[("tier", "prod")]);
    let other = namespace("other", &[]);
    let allowed = |store: &ClusterSecretStore, ns: &PartialObjectMeta<Namespace>| {
        namespace_allowed(store, ns.metadata.name.as_deref().unwrap(), Some(ns))
    };
    // One condition with three fields: each alone admits.
    let one = css(
        "[{namespaces: [payments], namespaceRegexes: ['^team-'], namespaceSelector: {matchLabels: {team: b}}}]",
    );
    assert!(allowed(&one, &team), "by regex alone");
    assert!(allowed(&one, &payments), "by name alone");
    assert!(!allowed(&one, &other));
    let by_label = css("[{namespaces: [x]}, {namespaceSelector: {matchLabels: {tier: prod}}}]");
    assert!(
        allowed(&by_label, &payments),
        "by the selector of another condition"
    );
    assert!(!allowed(&by_label, &team));
    // Conditions that name nothing admit nobody; an empty selector selects everything.
    for nothing in ["[{}]", "[{namespaces: []}]", "[{}, {namespaceRegexes: []}]"] {
        let store = css(nothing);
        assert!(!allowed(&store, &team), "{nothing}");
        assert_eq!(conditions_error(&store), None, "{nothing}");
    }
    assert!(allowed(&css("[{namespaceSelector: {}}]"), &other));
    // No conditions: every namespace.
    let open: ClusterSecretStore = serde_yaml::from_str(
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterSecretStore\nmetadata: {name: s}\nspec: {provider: {aws: {region: r}}}\n",
    )
    .unwrap();
    assert!(allowed(&open, &other));
    // An invalid selector anywhere closes the store, and says so.
    let bad = css(
        "[{namespaces: [team-a]}, {namespaceSelector: {matchExpressions: [{key: team, operator: Sometimes}]}}]",
    );
    assert!(!allowed(&bad, &team), "fails closed");
    assert!(
        conditions_error(&bad).unwrap().starts_with(
            "spec.conditions[1].namespaceSelector is invalid, so the store admits no namespace"
        ),
        "{:?}",
        conditions_error(&bad)
    );
}

/// A ClusterSecretStore is validated per namespace when a reference resolves in the
/// ExternalSecret's namespace: a reference without `namespace`, or Vault Kubernetes auth with
/// neither `serviceAccountRef` nor `secretRef` (ServiceAccount `default` there), under
/// `vault` and `kms.vaultTransit` alike.
#[test]
fn referent_references_are_found_in_every_provider() {
    for (yaml, referent) in [
        ("aws: {region: r}", false),
        (
            "aws: {region: r, auth: {secretRef: {accessKeyIDSecretRef: {name: c, key: i}, secretAccessKeySecretRef: {name: c, key: s}}}}",
            true,
        ),
        (
            "aws: {region: r, auth: {secretRef: {accessKeyIDSecretRef: {name: c, key: i, namespace: n}, secretAccessKeySecretRef: {name: c, key: s, namespace: n}}}}",
            false,
        ),
        (
            "vault: {server: 'http://v', auth: {kubernetes: {mountPath: k, role: r}}}",
            true,
        ),
        (
            "vault: {server: 'http://v', auth: {kubernetes: {mountPath: k, role: r, serviceAccountRef: {name: a, namespace: n}}}}",
            false,
        ),
        (
            "kms: {vaultTransit: {server: 'http://v', auth: {kubernetes: {mountPath: k, role: r}}}}",
            true,
        ),
        (
            "kms: {vaultTransit: {server: 'http://v', auth: {tokenSecretRef: {name: t, key: k, namespace: n}}}}",
            false,
        ),
    ] {
        assert_eq!(has_referent_refs(&provider(yaml)), referent, "{yaml}");
    }
}

#[test]
fn a_store_is_new_to_a_process_once_and_again_after_its_deletion() {
    let cache = ProviderCache::default();
    assert!(cache.first_reconcile("uid-1"));
    assert!(!cache.first_reconcile("uid-1"));
    assert!(cache.first_reconcile("uid-2"));
    // A deleted store leaves nothing behind; a store made again with its UID would be new.
    cache.forget_store("uid-1");
    assert!(cache.first_reconcile("uid-1"));
}
