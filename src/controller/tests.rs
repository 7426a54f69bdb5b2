//! Unit tests of the controller module: errors, label selectors and the size of what is kept
//! per ExternalSecret.

use super::*;

/// One row per cause: its message, category (metrics), condition reason, and whether a
/// retry can help (permanent) or kstatus should say Failed (stalled).
#[test]
fn every_error_has_its_message_category_reason_and_retry_rule() {
    let provider = |kind| ProviderError::new(kind, "ssm GetParameters \"/a\": ParameterNotFound");
    let cases: Vec<(Error, &str, &str, &str, bool, bool)> = vec![
        (
            Error::StoreMissing {
                store: "SecretStore ns/x".into(),
            },
            "SecretStore ns/x not found",
            "StoreNotReady",
            "SecretStoreNotReady",
            false,
            false,
        ),
        (
            Error::NamespaceRefused {
                store: "css".into(),
                namespace: "ns".into(),
            },
            "ClusterSecretStore css does not allow namespace ns (spec.conditions)",
            "StoreNotReady",
            "SecretStoreNotReady",
            false,
            false,
        ),
        (
            Error::Store {
                store: "SecretStore/x".into(),
                source: ProviderError::new(ErrorKind::InvalidConfig, "aws has no auth"),
            },
            "SecretStore/x: aws has no auth",
            "StoreNotReady",
            "SecretStoreNotReady",
            false,
            true,
        ),
        (
            Error::Provider(provider(ErrorKind::NotFound)),
            "ssm GetParameters \"/a\": ParameterNotFound",
            "NotFound",
            "SecretSyncedError",
            false,
            false,
        ),
        (
            Error::InvalidSpec(BuildError("\"/a\": property \"x\" not found".into())),
            "\"/a\": property \"x\" not found",
            "InvalidSpec",
            "SecretSyncedError",
            true,
            true,
        ),
        (
            Error::RefreshInterval {
                value: "1x".into(),
                why: "invalid unit".into(),
            },
            "refreshInterval \"1x\": invalid unit",
            "InvalidSpec",
            "SecretSyncedError",
            true,
            true,
        ),
        (
            Error::NotOurs {
                secret: "ns/s".into(),
            },
            "Secret ns/s already exists and is not managed by this ExternalSecret; it was left unchanged (delete it, or use creationPolicy Merge)",
            "SecretConflict",
            "SecretSyncedError",
            false,
            true,
        ),
        (
            Error::MergeTargetMissing {
                secret: "ns/s".into(),
            },
            "Secret ns/s does not exist; creationPolicy Merge only adds keys to an existing Secret",
            "SecretMissing",
            "SecretMissing",
            false,
            false,
        ),
        (
            Error::Deadline(Duration::from_secs(120)),
            "the sync did not finish within 120 s; it is retried",
            "Deadline",
            "SecretSyncedError",
            false,
            false,
        ),
    ];
    for (e, message, category, reason, permanent, stalled) in cases {
        assert_eq!(e.to_string(), message);
        assert_eq!(e.category(), category, "{message}");
        assert_eq!(e.reason(), reason, "{message}");
        assert_eq!(e.permanent(), permanent, "{message}");
        assert_eq!(e.stalled(), stalled, "{message}");
    }
    // The store's own failure is kept as the source.
    let e = Error::Store {
        store: "SecretStore/x".into(),
        source: provider(ErrorKind::Authentication),
    };
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn label_selectors_follow_kubernetes() {
    let sel = |yaml: &str| -> LabelSelector { serde_yaml::from_str(yaml).unwrap() };
    let labels: std::collections::BTreeMap<String, String> = [
        ("team".to_string(), "a".to_string()),
        ("env".into(), "prod".into()),
    ]
    .into();
    assert!(selector_matches(&sel("{}"), &labels));
    assert!(selector_matches(&sel("{matchLabels: {team: a}}"), &labels));
    assert!(!selector_matches(&sel("{matchLabels: {team: b}}"), &labels));
    assert!(selector_matches(
        &sel(
            "{matchExpressions: [{key: env, operator: In, values: [prod, stage]}, {key: x, operator: DoesNotExist}]}"
        ),
        &labels
    ));
    assert!(!selector_matches(
        &sel("{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}"),
        &labels
    ));
    assert!(!selector_matches(
        &sel("{matchExpressions: [{key: env, operator: Bogus}]}"),
        &labels
    ));
}

/// What is kept per ExternalSecret stays as small as its docs say: at N = 100,000 every 8 bytes
/// of these is about 1 MB in hash tables (twice as many slots as entries at worst), and the
/// cache's entry is no longer an `ObjectMeta` (360 bytes) and an `ObjectRef` key (96 bytes).
#[test]
fn per_external_secret_state_stays_small() {
    assert_eq!(std::mem::size_of::<ObjectState>(), 72);
    assert!(std::mem::size_of::<CachedExternalSecret>() <= 64);
    assert!(std::mem::size_of::<ManagedSecret>() <= 80);
}
