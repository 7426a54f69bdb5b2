//! Unit tests of `templateFrom` and key transforms, with ESO's expectations (its e2e case
//! `TemplateFromConfigmaps`, `JSONDataWithTemplateFromLiteral`, and `esutils` `RewriteMap`).

use std::time::{Duration, Instant};

use super::*;
use crate::{
    api::external_secret::{ExternalSecretRewrite, RewriteRegexp, RewriteTransform},
    controller::build::rewrite_keys,
};

fn template(yaml: &str) -> ExternalSecretTemplate {
    serde_yaml::from_str(yaml).expect("fixture parses")
}

fn values(pairs: &[(&str, &str)]) -> SecretMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretValue::new(v.as_bytes().to_vec())))
        .collect()
}

fn text(m: &SecretMap) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.as_bytes().to_vec()).unwrap()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ESO's TemplateFromConfigmaps: ConfigMap `test` with a `Values` item and a `KeysAndValues`
/// item.
fn eso_config_map() -> TemplateSources {
    let mut sources = TemplateSources::default();
    sources.config_maps.insert(
        "test".into(),
        [
            (
                "config.json".to_string(),
                b"executed-{{ .one}}-{{ .two}}".to_vec(),
            ),
            (
                "templated".to_string(),
                b"executed-{{ .one}}: {{ .two}}".to_vec(),
            ),
        ]
        .into(),
    );
    sources
}

const ESO_VALUES: &[(&str, &str)] = &[("one", "foo1-val"), ("two", "bar2-val")];

#[test]
fn config_map_values_and_keys_and_values_as_eso() {
    let t = template(
        "templateFrom:\n- configMap:\n    name: test\n    items:\n    - {key: config.json, templateAs: Values}\n    - {key: templated, templateAs: KeysAndValues}\n  target: Data\n",
    );
    let out = apply_template(Some(&t), values(ESO_VALUES), &eso_config_map()).unwrap();
    assert_eq!(
        text(&out.data),
        pairs(&[
            ("executed-foo1-val", "bar2-val"),
            ("config.json", "executed-foo1-val-bar2-val")
        ])
    );
}

#[test]
fn literal_is_keys_and_values_as_eso() {
    let t =
        template("templateFrom:\n- literal: 'executed-{{ .one }}: {{ .two }}'\n  target: Data\n");
    let out = apply_template(Some(&t), values(ESO_VALUES), &TemplateSources::default()).unwrap();
    assert_eq!(text(&out.data), pairs(&[("executed-foo1-val", "bar2-val")]));
}

#[test]
fn targets_labels_annotations_and_data_wins_over_template_from() {
    let t = template(
        "templateFrom:\n- literal: 'team: {{ .one }}'\n  target: Labels\n- literal: 'note: n-{{ .two }}'\n  target: Annotations\n- literal: 'k: from-literal'\ndata:\n  k: from-data\nmetadata:\n  labels: {fixed: x}\n",
    );
    let out = apply_template(Some(&t), values(ESO_VALUES), &TemplateSources::default()).unwrap();
    assert_eq!(text(&out.data), pairs(&[("k", "from-data")]));
    assert_eq!(out.labels, pairs(&[("fixed", "x"), ("team", "foo1-val")]));
    assert_eq!(out.annotations, pairs(&[("note", "n-bar2-val")]));
}

#[test]
fn merge_policy_keeps_fetched_values_beside_template_from() {
    let replace = template("templateFrom:\n- literal: 'a: b'\n");
    let out = apply_template(
        Some(&replace),
        values(ESO_VALUES),
        &TemplateSources::default(),
    )
    .unwrap();
    assert_eq!(text(&out.data), pairs(&[("a", "b")]));
    let merge = template("mergePolicy: Merge\ntemplateFrom:\n- literal: 'one: changed'\n");
    let out = apply_template(
        Some(&merge),
        values(ESO_VALUES),
        &TemplateSources::default(),
    )
    .unwrap();
    assert_eq!(
        text(&out.data),
        pairs(&[("one", "changed"), ("two", "bar2-val")])
    );
}

#[test]
fn secret_items_and_values_decoding_strategy() {
    let mut sources = TemplateSources::default();
    sources.secrets.insert(
        "tpl".into(),
        [("k".to_string(), b"{{ .one | b64enc }}".to_vec())].into(),
    );
    let t = template(
        "templateFrom:\n- secret: {name: tpl, items: [{key: k}]}\n  valuesDecodingStrategy: Base64\n",
    );
    let out = apply_template(Some(&t), values(ESO_VALUES), &sources).unwrap();
    assert_eq!(text(&out.data), pairs(&[("k", "foo1-val")]));
}

#[test]
fn missing_item_is_an_error_naming_it() {
    let t = template("templateFrom:\n- configMap: {name: test, items: [{key: nope}]}\n");
    let err = apply_template(Some(&t), values(ESO_VALUES), &eso_config_map()).unwrap_err();
    assert!(
        err.0.contains(r#"ConfigMap "test" key "nope": not found"#),
        "{err}"
    );
}

#[test]
fn errors_quote_no_value_nor_a_key_a_template_made() {
    // The literal's output is not a map of strings: a list under a key made of a value.
    let t = template("templateFrom:\n- literal: '{{ .one }}: [1, 2]'\n");
    let err =
        apply_template(Some(&t), values(ESO_VALUES), &TemplateSources::default()).unwrap_err();
    assert!(!err.0.contains("foo1-val"), "{err}");
    assert!(err.0.contains("entry 1"), "{err}");
    // Not YAML at all.
    let t = template("templateFrom:\n- literal: '{{ .one }}: {{ .two }}: : ['\n");
    let err =
        apply_template(Some(&t), values(ESO_VALUES), &TemplateSources::default()).unwrap_err();
    assert!(
        !err.0.contains("foo1-val") && !err.0.contains("bar2-val"),
        "{err}"
    );
    // A label that is binary.
    let t = template(
        "templateFrom:\n- literal: 'l: {{ .one }}'\n  target: Labels\n  valuesDecodingStrategy: Base64\n",
    );
    let bin = values(&[("one", "//79")]);
    let err = apply_template(Some(&t), bin, &TemplateSources::default()).unwrap_err();
    assert!(err.0.contains("binary"), "{err}");
}

/// Tenant input: a huge templateFrom ConfigMap is refused before any template runs.
#[test]
fn huge_template_sources_are_refused() {
    let mut sources = TemplateSources::default();
    let big = vec![b'x'; MAX_TEMPLATE_SOURCE_BYTES / 2 + 1];
    sources.config_maps.insert(
        "big".into(),
        [("a".to_string(), big.clone()), ("b".to_string(), big)].into(),
    );
    let t = template("templateFrom:\n- configMap: {name: big, items: [{key: a}, {key: b}]}\n");
    let err = apply_template(Some(&t), values(ESO_VALUES), &sources).unwrap_err();
    assert!(err.0.contains("over the 1048576-byte limit"), "{err}");
}

/// Tenant input: a KeysAndValues YAML bomb (an anchor aliased many times, nested) fails fast
/// instead of expanding.
#[test]
fn keys_and_values_yaml_bomb_is_bounded() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (i, prev) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        let name = ["b", "c", "d", "e", "f", "g", "h", "i"][i];
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let t = ExternalSecretTemplate {
        template_from: vec![TemplateFrom {
            literal: Some(bomb),
            ..Default::default()
        }],
        ..Default::default()
    };
    let started = Instant::now();
    let err =
        apply_template(Some(&t), values(ESO_VALUES), &TemplateSources::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.0.contains("templateFrom literal"), "{err}");
    // Many entries: bounded too.
    let many: String = (0..MAX_KEYS_AND_VALUES_ENTRIES + 1)
        .map(|i| format!("k{i}: v\n"))
        .collect();
    let t = ExternalSecretTemplate {
        template_from: vec![TemplateFrom {
            literal: Some(many),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err =
        apply_template(Some(&t), values(ESO_VALUES), &TemplateSources::default()).unwrap_err();
    assert!(err.0.contains("more than 10000 entries"), "{err}");
}

#[test]
fn rewrite_transform_as_eso() {
    // esutils RewriteMap: "using transform rewrite operation to create env var format keys".
    let rw = vec![
        ExternalSecretRewrite {
            regexp: Some(RewriteRegexp {
                source: "my/(.*?)/bar/(.*)".into(),
                target: "$1-$2".into(),
            }),
            ..Default::default()
        },
        ExternalSecretRewrite {
            transform: Some(RewriteTransform {
                template: r#"{{ .value | upper | replace "-" "_" }}"#.into(),
            }),
            ..Default::default()
        },
    ];
    let out = rewrite_keys(values(&[("my/app/bar/key", "bar")]), &rw).unwrap();
    assert_eq!(text(&out), pairs(&[("APP_KEY", "bar")]));
}

#[test]
fn rewrite_transform_errors_name_the_key_not_the_value() {
    let rw = vec![ExternalSecretRewrite {
        transform: Some(RewriteTransform {
            template: "{{ .value | b64dec }}".into(),
        }),
        ..Default::default()
    }];
    let err = rewrite_keys(values(&[("not base64!", "s3cret")]), &rw).unwrap_err();
    assert!(
        err.0
            .contains("rewrite[0] transform of key \"not base64!\""),
        "{err}"
    );
    assert!(!err.0.contains("s3cret"), "{err}");
}

fn merge_rw(yaml: &str) -> ExternalSecretRewrite {
    serde_yaml::from_str(yaml).expect("fixture parses")
}

#[test]
fn rewrite_merge_as_eso() {
    // esutils RewriteMap: "using double merge".
    let rw = vec![
        merge_rw("merge: {strategy: JSON, conflictPolicy: Ignore, into: merged, priority: [a]}"),
        merge_rw("merge: {strategy: Extract, conflictPolicy: Ignore, priority: [b]}"),
    ];
    let input = values(&[
        ("a", r#"{"host": "dba", "pass": "yola", "port": 123}"#),
        ("b", r#"{"host": "dbb", "pass": "yolb"}"#),
    ]);
    let out = rewrite_keys(input, &rw).unwrap();
    assert_eq!(
        text(&out),
        pairs(&[("host", "dbb"), ("pass", "yolb"), ("port", "123")])
    );
    // "using regexp and merge".
    let rw = vec![
        ExternalSecretRewrite {
            regexp: Some(RewriteRegexp {
                source: "db/(.*)".into(),
                target: "$1".into(),
            }),
            ..Default::default()
        },
        merge_rw("merge: {strategy: JSON, conflictPolicy: Ignore, into: merged, priority: [a]}"),
    ];
    let input = values(&[
        ("db/a", r#"{"host": "dba.example.com"}"#),
        ("db/b", r#"{"host": "dbb.example.com", "pass": "yolo"}"#),
    ]);
    let out = rewrite_keys(input, &rw).unwrap();
    assert_eq!(
        text(&out)["merged"],
        r#"{"host":"dba.example.com","pass":"yolo"}"#
    );
}

#[test]
fn rewrite_merge_errors_name_keys_not_values() {
    let input = || {
        values(&[
            ("a", r#"{"host": "h1", "pass": "s3cret-a"}"#),
            ("b", r#"{"host": "h2"}"#),
        ])
    };
    let err = rewrite_keys(input(), &[merge_rw("merge: {}")]).unwrap_err();
    assert_eq!(err.0, "rewrite merge: conflicting keys: host");
    let err = rewrite_keys(input(), &[merge_rw("merge: {priority: [c]}")]).unwrap_err();
    assert!(err.0.contains(r#"priority key "c" not found"#), "{err}");
    let ok = rewrite_keys(
        input(),
        &[merge_rw(
            "merge: {priority: [c], priorityPolicy: IgnoreNotFound, conflictPolicy: Ignore}",
        )],
    );
    assert!(ok.is_ok());
    let err = rewrite_keys(
        values(&[("a", "s3cret-not-json")]),
        &[merge_rw("merge: {}")],
    )
    .unwrap_err();
    assert!(
        err.0.contains("not a JSON object") && !err.0.contains("s3cret"),
        "{err}"
    );
    let err = rewrite_keys(
        input(),
        &[merge_rw("merge: {strategy: JSON, conflictPolicy: Ignore}")],
    )
    .unwrap_err();
    assert!(err.0.contains("needs `into`"), "{err}");
}

/// Tenant input: a transform template is bounded per key as every template is.
#[test]
fn rewrite_transform_is_bounded() {
    let rw = vec![ExternalSecretRewrite {
        transform: Some(RewriteTransform {
            template: "{{ range until 9000 }}{{ range until 9000 }}x{{ end }}{{ end }}".into(),
        }),
        ..Default::default()
    }];
    let started = Instant::now();
    let err = rewrite_keys(values(&[("k", "v")]), &rw).unwrap_err();
    assert!(err.0.contains("steps"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// ESO's privileged-template rule, whichever way the annotation comes.
#[test]
fn service_account_token_and_bootstrap_templates_are_refused() {
    use crate::controller::build::{BuildInput, desired_secret_with};
    let es = |template: &str| -> crate::api::ExternalSecret {
        serde_yaml::from_str(&format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: e, namespace: n}}\nspec:\n  secretStoreRef: {{name: s}}\n  target:\n    template:\n{template}\n  data:\n  - secretKey: one\n    remoteRef: {{key: k}}\n"
        ))
        .unwrap()
    };
    let build = |e: &crate::api::ExternalSecret| {
        let input = BuildInput {
            values: values(ESO_VALUES),
            store: "SecretStore/s",
            now: "2024-01-01T00:00:00Z",
        };
        desired_secret_with(e, input, &TemplateSources::default())
    };
    let by_metadata = es(
        "      type: kubernetes.io/service-account-token\n      metadata:\n        annotations: {kubernetes.io/service-account.name: default}",
    );
    assert!(build(&by_metadata).unwrap_err().0.contains("not allowed"));
    let by_template_from = es(
        "      type: kubernetes.io/service-account-token\n      templateFrom:\n      - literal: 'kubernetes.io/service-account.name: {{ \"default\" }}'\n        target: Annotations",
    );
    assert!(
        build(&by_template_from)
            .unwrap_err()
            .0
            .contains("not allowed")
    );
    let bootstrap = es("      type: bootstrap.kubernetes.io/token");
    assert!(build(&bootstrap).unwrap_err().0.contains("not allowed"));
    let plain_token_type = es("      type: kubernetes.io/service-account-token");
    assert!(build(&plain_token_type).is_ok());
}
