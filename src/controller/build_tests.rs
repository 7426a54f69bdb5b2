//! Unit tests of the pure build step, from YAML fixtures.

use super::*;
use crate::api::external_secret::{ConversionStrategy, DecodingStrategy, RewriteRegexp};

fn es(yaml: &str) -> ExternalSecret {
    serde_yaml::from_str(yaml).expect("fixture parses")
}

fn v(s: &str) -> SecretValue {
    SecretValue::new(s.as_bytes().to_vec())
}

fn map(pairs: &[(&str, &str)]) -> SecretMap {
    pairs
        .iter()
        .map(|(k, val)| (k.to_string(), v(val)))
        .collect()
}

fn data_str(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

const BASIC: &str = r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app-db, namespace: team-a, uid: 1234-uid, generation: 3}
spec:
  refreshInterval: 15m
  secretStoreRef: {name: ssm}
  data:
  - secretKey: password
    remoteRef: {key: /app/db/password}
"#;

#[test]
fn desired_secret_carries_labels_annotations_owner_and_hash() {
    let es = es(BASIC);
    let s = desired_secret(
        &es,
        BuildInput {
            values: map(&[("password", "s3cr3t")]),
            store: "SecretStore/ssm",
            now: "2026-11-21T10:00:00Z",
        },
    )
    .unwrap();
    assert_eq!(s.metadata.name.as_deref(), Some("app-db"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_MANAGED_BY], "secret-relay");
    assert_eq!(labels[LABEL_EXTERNAL_SECRET], "app-db");
    let ann = s.metadata.annotations.clone().unwrap();
    assert_eq!(ann[ANNOTATION_REFRESH_INTERVAL], "15m");
    assert_eq!(ann[ANNOTATION_LAST_REFRESH], "2026-11-21T10:00:00Z");
    assert_eq!(ann[ANNOTATION_STORE], "SecretStore/ssm");
    assert_eq!(
        ann[ANNOTATION_DATA_HASH],
        data_hash(s.data.as_ref().unwrap())
    );
    assert_eq!(ann[ANNOTATION_DATA_HASH].len(), 64);
    let owners = s.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "ExternalSecret");
    assert_eq!(owners[0].uid, "1234-uid");
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(
        data_str(&s),
        BTreeMap::from([("password".into(), "s3cr3t".into())])
    );
}

#[test]
fn orphan_and_merge_have_no_owner_reference_and_merge_keeps_type() {
    for (policy, want_type) in [("Orphan", Some("Opaque")), ("Merge", None)] {
        let yaml = format!("{BASIC}  target: {{name: other, creationPolicy: {policy}}}\n");
        let s = desired_secret(
            &es(&yaml),
            BuildInput {
                values: map(&[("a", "1")]),
                store: "SecretStore/ssm",
                now: "t",
            },
        )
        .unwrap();
        assert!(s.metadata.owner_references.is_none(), "{policy}");
        assert_eq!(s.metadata.name.as_deref(), Some("other"));
        assert_eq!(s.type_.as_deref(), want_type, "{policy}");
    }
}

#[test]
fn template_replace_merge_type_and_metadata() {
    let yaml = format!(
        "{BASIC}{}",
        r#"  target:
    immutable: true
    template:
      type: kubernetes.io/basic-auth
      metadata:
        labels: {team: a, app.kubernetes.io/managed-by: someone-else, owner: "{{ .user }}"}
        annotations: {note: hi}
      data:
        username: "{{ .user | upper }}"
        url: "postgres://{{ .user }}:{{ .password }}@db:5432/{{ index . \"db-name\" }}"
        encoded: "{{ .password | b64enc }}"
        first: "{{ index (.blob | fromJson).names 0 }}"
"#
    );
    let values = map(&[
        ("user", "app"),
        ("password", "pw"),
        ("db-name", "main"),
        ("blob", r#"{"names":["x","y"]}"#),
    ]);
    let s = desired_secret(
        &es(&yaml),
        BuildInput {
            values: values.clone(),
            store: "s",
            now: "t",
        },
    )
    .unwrap();
    assert_eq!(
        data_str(&s),
        BTreeMap::from([
            ("username".into(), "APP".into()),
            ("url".into(), "postgres://app:pw@db:5432/main".into()),
            ("encoded".into(), "cHc=".into()),
            ("first".into(), "x".into()),
        ])
    );
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(s.immutable, Some(true));
    let labels = s.metadata.labels.unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(
        labels["owner"], "app",
        "label values are templates, as in ESO"
    );
    assert_eq!(labels[LABEL_MANAGED_BY], "secret-relay", "our labels win");
    assert_eq!(s.metadata.annotations.unwrap()["note"], "hi");

    let merged = yaml.replace("      data:\n", "      mergePolicy: Merge\n      data:\n");
    let s = desired_secret(
        &es(&merged),
        BuildInput {
            values,
            store: "s",
            now: "t",
        },
    )
    .unwrap();
    let d = data_str(&s);
    assert_eq!(d["password"], "pw");
    assert_eq!(d["username"], "APP");
    assert_eq!(d.len(), 8);
}

#[test]
fn template_errors_name_the_key_and_hide_values() {
    let fail = |template_data: &str| {
        let yaml = format!("{BASIC}  target:\n    template:\n      data:\n{template_data}");
        let input = BuildInput {
            values: map(&[("password", "not-base64!!")]),
            store: "s",
            now: "t",
        };
        desired_secret(&es(&yaml), input).unwrap_err()
    };
    let err = fail("        x: \"{{ .missing_var }}\"\n        y: \"{{ .password | b64dec }}\"\n");
    assert!(err.0.starts_with("template of key \"x\""), "{}", err.0);
    assert!(
        err.0.contains("no entry for key \"missing_var\""),
        "{}",
        err.0
    );
    let err = fail("        y: \"{{ .password | b64dec }}\"\n");
    assert!(err.0.contains("b64dec: input is not base64"), "{}", err.0);
    assert!(!err.0.contains("not-base64!!"), "value leaked: {}", err.0);
}

#[test]
fn property_paths_follow_gjson() {
    let doc = v(
        r#"{"name":{"first":"Tom","last":"Anderson"},"age":37,"friends":[{"first":"Dale"},{"first":"Roger"}],"ok":true}"#,
    );
    assert_eq!(
        select_property("k", &doc, "name.first").unwrap().as_str(),
        Some("Tom")
    );
    assert_eq!(
        select_property("k", &doc, "friends.1.first")
            .unwrap()
            .as_str(),
        Some("Roger")
    );
    assert_eq!(
        select_property("k", &doc, "age").unwrap().as_str(),
        Some("37")
    );
    assert_eq!(
        select_property("k", &doc, "ok").unwrap().as_str(),
        Some("true")
    );
    assert_eq!(
        select_property("k", &doc, "name").unwrap().as_str(),
        Some(r#"{"first":"Tom","last":"Anderson"}"#)
    );
    let err = select_property("/app/x", &doc, "nope").unwrap_err();
    assert_eq!(err.0, r#""/app/x": property "nope" not found"#);
    let err = select_property("/app/x", &v("plain s3cret"), "a").unwrap_err();
    assert_eq!(
        err.0,
        r#""/app/x": value is not JSON, cannot select property "a""#
    );
}

#[test]
fn extract_splits_objects_and_refuses_others() {
    let m = extract_object("k", &v(r#"{"user":"u","port":5432,"nested":{"a":1}}"#)).unwrap();
    assert_eq!(m["user"].as_str(), Some("u"));
    assert_eq!(m["port"].as_str(), Some("5432"));
    assert_eq!(m["nested"].as_str(), Some(r#"{"a":1}"#));
    assert!(extract_object("k", &v("[1,2]")).is_err());
    assert!(extract_object("k", &v("hello")).is_err());
}

#[test]
fn decoding_strategies() {
    for (text, strategy, decoded) in [
        ("aGVsbG8=", DecodingStrategy::Base64, "hello"),
        ("aGVsbG8", DecodingStrategy::Base64, "hello"),
        ("Pz8_", DecodingStrategy::Base64Url, "???"),
        ("Pz8_", DecodingStrategy::Auto, "???"),
        ("plain text!", DecodingStrategy::Auto, "plain text!"),
        ("x", DecodingStrategy::None, "x"),
    ] {
        assert_eq!(
            decode("k", v(text), strategy).unwrap().as_str(),
            Some(decoded),
            "{text:?} {strategy:?}"
        );
    }
    let err = decode("password", v("***"), DecodingStrategy::Base64).unwrap_err();
    assert_eq!(
        err.0,
        r#""password": value is not valid Base64 (decodingStrategy)"#
    );
}

#[test]
fn key_conversion_as_eso() {
    // esutils.ConvertKeys / convert, and the cases of its unit tests.
    for (key, default, unicode) in [
        (
            "/app/db/user",
            "_app_db_user",
            "_U002f_app_U002f_db_U002f_user",
        ),
        ("app/db", "app_db", "app_U002f_db"),
        ("db.password", "db.password", "db.password"),
        ("key-with_dash", "key-with_dash", "key-with_dash"),
        ("a b@c", "a_b_c", "a_U0020_b_U0040_c"),
        ("café☃", "café_", "café_U2603_"),
        ("emoji😀", "emoji_", "emoji_U1f600_"),
    ] {
        assert_eq!(
            convert_key(key, ConversionStrategy::Default),
            default,
            "{key}"
        );
        assert_eq!(
            convert_key(key, ConversionStrategy::Unicode),
            unicode,
            "{key}"
        );
    }
}

#[test]
fn keys_checked_as_eso() {
    let ok = validate_keys(map(&[("", "dropped"), ("a.b-c_d", "1")])).unwrap();
    assert_eq!(ok.keys().cloned().collect::<Vec<_>>(), vec!["a.b-c_d"]);
    let err = validate_keys(map(&[("app/db", "s3cr3t")])).unwrap_err();
    assert!(
        err.0.contains("\"app/db\"") && err.0.contains("'/'"),
        "{}",
        err.0
    );
    assert!(!err.0.contains("s3cr3t"));
    let long = "k".repeat(254);
    assert!(validate_keys(map(&[(long.as_str(), "v")])).is_err());
}

#[test]
fn find_keys_and_rewrites() {
    let rw = vec![ExternalSecretRewrite {
        regexp: Some(RewriteRegexp {
            source: "^/app/(.*)$".into(),
            target: "APP_$1".into(),
        }),
        ..Default::default()
    }];
    let out = rewrite_keys(map(&[("/app/db", "1"), ("other", "2")]), &rw).unwrap();
    assert_eq!(
        out.keys().cloned().collect::<Vec<_>>(),
        vec!["APP_db", "other"]
    );
    let bad = vec![ExternalSecretRewrite {
        regexp: Some(RewriteRegexp {
            source: "(".into(),
            target: "".into(),
        }),
        ..Default::default()
    }];
    assert!(
        rewrite_keys(map(&[("a", "1")]), &bad)
            .unwrap_err()
            .0
            .starts_with("rewrite regexp \"(\"")
    );
}

#[test]
fn data_hash_separates_keys_and_values() {
    let a = BTreeMap::from([("ab".to_string(), ByteString(b"c".to_vec()))]);
    let b = BTreeMap::from([("a".to_string(), ByteString(b"bc".to_vec()))]);
    assert_ne!(data_hash(&a), data_hash(&b));
    assert_eq!(data_hash(&a), data_hash(&a.clone()));
}

#[test]
fn up_to_date_ignores_last_refresh_only() {
    let es = es(BASIC);
    let build = |now: &str, val: &str| {
        desired_secret(
            &es,
            BuildInput {
                values: map(&[("password", val)]),
                store: "s",
                now,
            },
        )
        .unwrap()
    };
    let existing = build("t1", "a");
    assert!(is_up_to_date(&existing, &build("t2", "a"), true));
    assert!(!is_up_to_date(&existing, &build("t2", "b"), true));
    let mut extra = existing.clone();
    extra
        .data
        .as_mut()
        .unwrap()
        .insert("more".into(), ByteString(b"x".to_vec()));
    assert!(!is_up_to_date(&extra, &build("t2", "a"), true));
    assert!(is_up_to_date(&extra, &build("t2", "a"), false));
}

#[test]
fn secret_value_debug_is_redacted() {
    assert_eq!(
        format!("{:?}", v("hunter2")),
        "SecretValue(<7 bytes redacted>)"
    );
}

/// Renders one template over `values`.
fn render_one(template: &str, values: SecretMap) -> Result<SecretValue, BuildError> {
    let templates = BTreeMap::from([("out".to_string(), template.to_string())]);
    render_templates(&templates, &values).map(|mut m| m.remove("out").unwrap())
}

/// issue 10: `{{ pin | int % 0 }}` put the PIN into the Ready message, the event and the log.
/// Every failure path of the engine, fed a recognisable value: the message names the key and
/// the kind of failure, and never the value (src/template/tests.rs covers every function).
#[test]
fn template_errors_never_quote_values() {
    const PIN: &str = "918273";
    let cases = [
        ("{{ mod (.pin | int) 0 }}", "mod: division by zero"),
        ("{{ div .pin 0 }}", "div: division by zero"),
        ("{{ .pin.first.second }}", "execution error"),
        ("{{ index .pin 99 }}", "index out of range"),
        ("{{ .pin | b64dec }}", "b64dec: input is not base64"),
        (
            "{{ (printf \"%s{\" .pin) | fromJson }}",
            "fromJson: input is not JSON",
        ),
        ("{{ range (.pin | int) }}{{ . }}{{ end }}", "exceeds"),
        (
            "{{ .pin | unknownfunc }}",
            "function \"unknownfunc\" not defined",
        ),
        ("{{ len .pin 1 }}", "wrong number of arguments"),
        ("{{ fail .pin }}", "fail was called"),
        ("{{ if .pin }}{{ .pin ", "unclosed action"),
    ];
    for (template, expected) in cases {
        let Err(err) = render_one(template, map(&[("pin", PIN)])) else {
            panic!("{template}: rendered");
        };
        assert!(
            err.0.starts_with("template of key \"out\": "),
            "{template}: {}",
            err.0
        );
        assert!(err.0.contains(expected), "{template}: {}", err.0);
        for leaked in [PIN, "18273", "91827"] {
            assert!(
                !err.0.contains(leaked),
                "{template}: value leaked: {}",
                err.0
            );
        }
    }
}

/// issue 10: nested loops ran for minutes on an async worker. The step bound stops them.
#[test]
fn template_steps_are_bounded() {
    let err = render_one(
        "{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}",
        SecretMap::new(),
    )
    .unwrap_err();
    assert!(
        err.0.contains(&format!("exceeds {TEMPLATE_FUEL} steps")),
        "{}",
        err.0
    );
    // A loop of a realistic size still renders.
    let ok = render_one(
        "{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}",
        (0..200).map(|i| (format!("k{i:03}"), v("x"))).collect(),
    )
    .unwrap();
    assert_eq!(ok.as_bytes().len(), 200 * "k000=x;".len());
}

/// issue 10: output written in a loop took RSS to 2.1 GiB. Output stops at 1 MiB.
#[test]
fn template_output_is_bounded() {
    let big = "x".repeat(64 << 10);
    let err = render_one("{{ range 100 }}{{ $.big }}{{ end }}", map(&[("big", &big)])).unwrap_err();
    assert!(
        err.0
            .contains(&format!("output exceeds {TEMPLATE_MAX_OUTPUT} bytes")),
        "{}",
        err.0
    );
    let ok = render_one("{{ range 15 }}{{ $.big }}{{ end }}", map(&[("big", &big)]));
    assert_eq!(ok.unwrap().as_bytes().len(), 15 * (64 << 10));
}

/// issue 10: a binary value lost bytes to U+FFFD through a template and the sync said
/// SecretSynced. Bytes stay bytes: b64enc encodes them exactly, and printing one copies it
/// exactly (Go's strings are bytes, so ESO does the same).
#[test]
fn binary_values_stay_bytes_through_templates() {
    let bin = SecretValue::new(vec![0xff, 0x00, 0x80, 0xfe, b'a']);
    let values: SecretMap = [("cert".to_string(), bin.clone())].into();
    let encoded = render_one("{{ .cert | b64enc }}", values.clone()).unwrap();
    assert_eq!(encoded.as_bytes(), b"/wCA/mE=");
    let also = render_one("{{ index . \"cert\" | b64enc }}", values.clone()).unwrap();
    assert_eq!(also.as_bytes(), b"/wCA/mE=");
    let copied = render_one("{{ .cert }}", values).unwrap();
    assert_eq!(copied.as_bytes(), bin.as_bytes());
    // Text values are unchanged, multi-byte characters included.
    let text = render_one("{{ .s }}|{{ .s | b64enc }}", map(&[("s", "zé")])).unwrap();
    assert_eq!(text.as_str(), Some("zé|esOp"));
}

/// A JSON value nested `depth` levels deep: `[[[...]]]`.
fn nested_json(depth: usize) -> SecretValue {
    v(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
}

/// issue 10: an SSM value nested 10,000 deep, read with any `property`, overflowed a worker's
/// stack and aborted the operator (and again after every restart). Each JSON reader refuses
/// it with a message that names the bound.
#[test]
fn deep_json_is_refused_not_a_crash() {
    let deep = nested_json(10_000);
    let object = v(&format!("{{\"a\":{}}}", "[".repeat(10_000)));
    let errors = [
        select_property("/app/deep", &deep, "0").unwrap_err(),
        select_property("/app/deep", &object, "a").unwrap_err(),
        extract_object("/app/deep", &object).unwrap_err(),
        extract_leaves("/app/deep", &deep).unwrap_err(),
    ];
    for e in errors {
        assert_eq!(
            e.0,
            format!("\"/app/deep\": JSON value nested deeper than {MAX_JSON_DEPTH} levels")
        );
    }
    let err = render_one("{{ .d | fromJson }}", [("d".to_string(), deep)].into()).unwrap_err();
    assert!(
        err.0
            .contains("fromJson: input is over 1048576 bytes or nests too deep"),
        "{}",
        err.0
    );
    // At the bound: accepted. Brackets inside strings (escaped quotes too) do not count.
    assert!(extract_leaves("k", &nested_json(MAX_JSON_DEPTH)).is_ok());
    assert!(extract_leaves("k", &nested_json(MAX_JSON_DEPTH + 1)).is_err());
    let brackets = v(&format!(
        r#"{{"a":"{}\"{}"}}"#,
        "[".repeat(500),
        "{".repeat(500)
    ));
    let got = select_property("k", &brackets, "a").unwrap();
    assert_eq!(got.as_bytes().len(), 1001);
    // Over 1 MiB: refused by size.
    let huge = v(&format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_JSON_BYTES)));
    let err = select_property("k", &huge, "a").unwrap_err();
    assert!(err.0.contains("over the 1048576-byte limit"), "{}", err.0);
}

/// issue 27: a templated label or annotation the API server would refuse is refused before
/// any write, naming the key, never the (secret) value.
#[test]
fn metadata_is_checked_before_a_write_and_the_error_never_quotes_a_value() {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let none = BTreeMap::new();
    assert!(
        check_metadata(
            &labels(&[
                ("team", "payments"),
                ("app.kubernetes.io/name", "x"),
                ("empty", "")
            ]),
            &none
        )
        .is_ok()
    );
    let secret = "hunter2 with spaces";
    let err = check_metadata(&labels(&[("leak", secret)]), &none).unwrap_err();
    assert_eq!(
        err.0,
        "the value of label \"leak\" is not a valid label value (at most 63 characters of letters, digits, '-', '_' and '.', beginning and ending with a letter or digit)"
    );
    assert!(!err.0.contains("hunter2"));
    for key in ["bad key", "-start", "Upper.Prefix/x", "x/", &"a".repeat(64)] {
        let err = check_metadata(&labels(&[(key, "v")]), &none).unwrap_err();
        assert!(err.0.starts_with("label key"), "{key}: {}", err.0);
    }
    let err = check_metadata(&none, &labels(&[("ok/key", &"v".repeat(300 * 1024))])).unwrap_err();
    assert!(err.0.contains("over the API server's 262144"), "{}", err.0);
    // Annotation values may hold anything.
    assert!(check_metadata(&none, &labels(&[("note", secret)])).is_ok());
}
