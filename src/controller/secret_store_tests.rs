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
/// an empty one allowed every namespace.
#[test]
fn namespace_regexes_empty_or_invalid_match_nothing_and_are_reported() {
    let store = |regexes: &str| -> ClusterSecretStore {
        serde_yaml::from_str(&format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterSecretStore\nmetadata: {{name: s}}\nspec:\n  conditions: [{{namespaceRegexes: {regexes}}}]\n  provider: {{aws: {{region: r}}}}\n"
        ))
        .unwrap()
    };
    let good = store("['^team-']");
    assert!(namespace_allowed(&good, "team-a", None));
    assert!(!namespace_allowed(&good, "other", None));
    assert_eq!(conditions_error(&good), None);
    let empty = store("['']");
    assert!(!namespace_allowed(&empty, "team-a", None));
    assert!(conditions_error(&empty).unwrap().starts_with(
        "spec.conditions[0].namespaceRegexes[0] is empty, which would match every namespace"
    ));
    let invalid = store("['^team-', '(']");
    assert!(
        namespace_allowed(&invalid, "team-a", None),
        "the valid entry still matches"
    );
    assert!(!namespace_allowed(&invalid, "x(", None));
    assert!(
        conditions_error(&invalid)
            .unwrap()
            .starts_with("spec.conditions[0].namespaceRegexes[1] \"(\" is invalid and matches no namespace: regex parse error")
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
