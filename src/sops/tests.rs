//! Unit tests on the committed fixtures of `tests/fixtures/sops` (made by the real sops
//! v3.13.3; see the README there). The age identities there are test-only.

use std::collections::BTreeMap;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sops/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn identity(n: u8) -> String {
    String::from_utf8(fixture(&format!("test-identity-{n}.agekey"))).unwrap()
}

fn service(ids: &[u8]) -> AgeKeyService {
    let text: String = ids.iter().map(|n| identity(*n)).collect();
    AgeKeyService::new(&text).unwrap()
}

async fn open(name: &str, format: Format, ids: &[u8]) -> Result<Decrypted, SopsError> {
    let doc = Document::parse(&fixture(name), format)?;
    let key = decrypt_data_key(&doc, &service(ids)).await?;
    doc.decrypt(&key)
}

fn flat(d: &Decrypted) -> BTreeMap<String, String> {
    d.flatten()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The leaves of `plain.yaml`, in their text form.
const YAML_LEAVES: &[(&str, &str)] = &[
    ("db.password", "s3cr3t-pässwörd ✓"),
    ("db.port", "5432"),
    ("db.ratio", "0.75"),
    ("db.big", "1000000000000000000000"),
    ("db.enabled", "true"),
    ("db.disabled", "false"),
    ("db.nothing", ""),
    ("db.empty", ""),
    ("multiline", "line one\nline two\n"),
    ("hosts.0", "a.example"),
    ("hosts.1", "b.example"),
    ("users.0.name", "ann"),
    ("users.0.admin", "false"),
    ("users.1.name", "bob"),
    ("users.1.tags.0", "x"),
    ("users.1.tags.1", "7"),
    ("nested.deeper.deepest", "value"),
    ("host_unencrypted", "db.internal"),
];

#[tokio::test]
async fn yaml_fixture_decrypts_typed() {
    let d = open("secrets.enc.yaml", Format::Yaml, &[1]).await.unwrap();
    assert_eq!(flat(&d), expected(YAML_LEAVES));
    assert_eq!(d.leaf(&["db", "port"]).unwrap().0, LeafKind::Int);
    assert_eq!(d.leaf(&["db", "ratio"]).unwrap().0, LeafKind::Float);
    assert_eq!(d.leaf(&["db", "enabled"]).unwrap().0, LeafKind::Bool);
    assert_eq!(d.leaf(&["db", "nothing"]).unwrap().0, LeafKind::Null);
    assert_eq!(
        d.leaf(&["users", "1", "tags", "1"]).unwrap().0,
        LeafKind::Int
    );
    let json: serde_json::Value = serde_json::from_slice(d.to_json().as_bytes()).unwrap();
    assert_eq!(json["db"]["port"], serde_json::json!(5432));
    assert_eq!(json["db"]["enabled"], serde_json::json!(true));
    assert_eq!(json["db"]["nothing"], serde_json::Value::Null);
    assert_eq!(json["users"][1]["tags"], serde_json::json!(["x", 7]));
    // Document order is kept in the JSON text.
    let text = d.to_json();
    let text = text.as_str().unwrap();
    assert!(text.find("\"multiline\"").unwrap() < text.find("\"hosts\"").unwrap());
}

#[tokio::test]
async fn json_fixture_types_numbers_like_sops() {
    let d = open("secrets.enc.json", Format::Json, &[1]).await.unwrap();
    let f = flat(&d);
    assert_eq!(f["db.password"], "s3cr3t-pässwörd ✓");
    assert_eq!(f["db.port"], "5432");
    // 2.0 is a float64 in sops's JSON store and prints as 2.
    assert_eq!(f["db.whole"], "2");
    assert_eq!(d.leaf(&["db", "whole"]).unwrap().0, LeafKind::Float);
    assert_eq!(d.leaf(&["db", "port"]).unwrap().0, LeafKind::Int);
    assert_eq!(f["db.big"], "1000000000000000000000");
    assert_eq!(f["multiline"], "line one\nline two\n");
    assert_eq!(f["users.1.tags.1"], "7");
    assert_eq!(f["host_unencrypted"], "db.internal");
    let text = d.to_json();
    let text = text.as_str().unwrap();
    assert!(text.find("\"zeta\"").unwrap() < text.find("\"alpha\"").unwrap());
}

#[tokio::test]
async fn dotenv_fixture_decrypts() {
    let d = open("secrets.enc.env", Format::Dotenv, &[1]).await.unwrap();
    assert_eq!(
        flat(&d),
        expected(&[
            ("DB_PASSWORD", "s3cr3t-pässwörd ✓"),
            ("MULTI", "line one\nline two"),
            ("EMPTY", ""),
            ("PORT", "5432"),
            ("HOST_unencrypted", "db.internal"),
        ])
    );
    // dotenv values are strings, even digits.
    assert_eq!(d.leaf(&["PORT"]).unwrap().0, LeafKind::Str);
}

#[tokio::test]
async fn encrypted_regex_and_mac_only_fixtures() {
    let d = open("encrypted-regex.enc.yaml", Format::Yaml, &[1])
        .await
        .unwrap();
    assert_eq!(flat(&d), expected(YAML_LEAVES));
    let d = open("mac-only.enc.yaml", Format::Yaml, &[1]).await.unwrap();
    assert_eq!(flat(&d), expected(YAML_LEAVES));
}

#[tokio::test]
async fn shamir_fixtures() {
    let d = open("shamir-2of2.enc.yaml", Format::Yaml, &[1, 2])
        .await
        .unwrap();
    assert_eq!(flat(&d), expected(YAML_LEAVES));
    for one in [1, 2] {
        let err = open("shamir-2of2.enc.yaml", Format::Yaml, &[one])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SopsError::NotEnoughShares {
                    got: 1,
                    needed: 2,
                    groups: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }
    // 2 of 3 groups: identity 2 holds groups 2 and 3.
    let d = open("shamir-2of3.enc.yaml", Format::Yaml, &[2])
        .await
        .unwrap();
    assert_eq!(flat(&d), expected(YAML_LEAVES));
    let err = open("shamir-2of3.enc.yaml", Format::Yaml, &[1])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SopsError::NotEnoughShares {
            got: 1,
            needed: 2,
            groups: 3,
            ..
        }
    ));
}

#[test]
fn shamir_threshold_one_is_refused() {
    let text = String::from_utf8(fixture("shamir-2of2.enc.yaml")).unwrap();
    let edited = text.replace("shamir_threshold: 2", "shamir_threshold: 1");
    assert_ne!(text, edited);
    let err = Document::parse(edited.as_bytes(), Format::Yaml).unwrap_err();
    assert!(matches!(err, SopsError::Malformed(_)), "{err}");
}

/// Parses `text`, gets the key with identity 1 and decrypts.
async fn open_text(text: &str, format: Format) -> Result<Decrypted, SopsError> {
    let doc = Document::parse(text.as_bytes(), format)?;
    let key = decrypt_data_key(&doc, &service(&[1])).await?;
    doc.decrypt(&key)
}

fn line_value<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix}"))
}

#[tokio::test]
async fn tampering_is_refused() {
    let text = String::from_utf8(fixture("secrets.enc.yaml")).unwrap();
    assert!(open_text(&text, Format::Yaml).await.is_ok());

    // A changed ciphertext byte.
    let password = line_value(&text, "password: ");
    let data = password.split(",iv:").next().unwrap();
    let last = data.chars().last().unwrap();
    let changed = data[..data.len() - 1].to_string() + if last == 'A' { "B" } else { "A" };
    let t = text.replacen(data, &changed, 1);
    let err = open_text(&t, Format::Yaml).await.unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "db:password"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidData);

    // A renamed key: the path is the additional data.
    let t = text.replacen("    password: ", "    passwd: ", 1);
    let err = open_text(&t, Format::Yaml).await.unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "db:passwd"),
        "{err}"
    );

    // Values swapped between two keys.
    let port = line_value(&text, "port: ");
    let t = text
        .replacen(password, "@P@", 1)
        .replacen(port, password, 1)
        .replacen("@P@", port, 1);
    assert!(matches!(
        open_text(&t, Format::Yaml).await,
        Err(SopsError::Value { .. })
    ));

    // A removed entry (a map entry, a list element).
    let line = text.lines().find(|l| l.contains("deepest:")).unwrap();
    let t = text.replacen(&format!("{line}\n"), "", 1);
    assert!(matches!(
        open_text(&t, Format::Yaml).await,
        Err(SopsError::MacMismatch(_))
    ));
    let hosts_1 = text
        .lines()
        .filter(|l| l.starts_with("    - ENC["))
        .nth(1)
        .unwrap();
    let t = text.replacen(&format!("{hosts_1}\n"), "", 1);
    let err = open_text(&t, Format::Yaml).await.unwrap_err();
    assert!(matches!(err, SopsError::MacMismatch(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidData);

    // A changed unencrypted value.
    let t = text.replacen(
        "host_unencrypted: db.internal",
        "host_unencrypted: evil.example",
        1,
    );
    assert!(matches!(
        open_text(&t, Format::Yaml).await,
        Err(SopsError::MacMismatch(_))
    ));

    // A plaintext swapped in for an encrypted value.
    let t = text.replacen(password, "hunter2", 1);
    let err = open_text(&t, Format::Yaml).await.unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "db:password"),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"));

    // The MAC removed.
    let mac = line_value(&text, "mac: ");
    let t = text.replacen(mac, "''", 1);
    assert!(matches!(
        open_text(&t, Format::Yaml).await,
        Err(SopsError::MacMismatch(_))
    ));
    // lastmodified changed: the MAC's additional data.
    let lm = line_value(&text, "lastmodified: ");
    let t = text.replacen(lm, "\"2001-01-01T00:00:00Z\"", 1);
    assert!(matches!(
        open_text(&t, Format::Yaml).await,
        Err(SopsError::MacMismatch(_))
    ));
}

#[tokio::test]
async fn plaintext_swap_refused_even_with_mac_only_encrypted() {
    let text = String::from_utf8(fixture("mac-only.enc.yaml")).unwrap();
    assert!(open_text(&text, Format::Yaml).await.is_ok());
    let password = line_value(&text, "password: ");
    let t = text.replacen(password, "hunter2", 1);
    let err = open_text(&t, Format::Yaml).await.unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "db:password"),
        "{err}"
    );
    // With mac_only_encrypted, plaintext values are outside the MAC (as in sops).
    let t = text.replacen(
        "host_unencrypted: db.internal",
        "host_unencrypted: other",
        1,
    );
    let d = open_text(&t, Format::Yaml).await.unwrap();
    assert_eq!(flat(&d)["host_unencrypted"], "other");
}

#[tokio::test]
async fn dotenv_tampering_is_refused() {
    let text = String::from_utf8(fixture("secrets.enc.env")).unwrap();
    let t = text.replacen("HOST_unencrypted=db.internal", "HOST_unencrypted=evil", 1);
    assert!(matches!(
        open_text(&t, Format::Dotenv).await,
        Err(SopsError::MacMismatch(_))
    ));
    let t = text.replacen("DB_PASSWORD=", "DB_PASS=", 1);
    assert!(matches!(
        open_text(&t, Format::Dotenv).await,
        Err(SopsError::Value { .. })
    ));
}

struct Nothing;

#[async_trait]
impl KeyService for Nothing {
    async fn decrypt(&self, _: &MasterKey) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        Ok(None)
    }
}

struct Fixed(Vec<u8>);

#[async_trait]
impl KeyService for Fixed {
    async fn decrypt(&self, _: &MasterKey) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        Ok(Some(Zeroizing::new(self.0.clone())))
    }
}

struct Failing;

#[async_trait]
impl KeyService for Failing {
    async fn decrypt(&self, key: &MasterKey) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        Err(ProviderError::new(
            ErrorKind::AccessDenied,
            format!("kms Decrypt {}: AccessDeniedException", key.kind()),
        ))
    }
}

#[tokio::test]
async fn key_service_outcomes() {
    let doc = Document::parse(&fixture("secrets.enc.yaml"), Format::Yaml).unwrap();
    assert_eq!(doc.key_kinds(), vec!["age".to_string()]);

    let err = decrypt_data_key(&doc, &Nothing).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "sops: no key of this store's kind among the document's keys (age)"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);

    let err = decrypt_data_key(&doc, &Failing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    let pe: ProviderError = err.into();
    assert_eq!(pe.message, "kms Decrypt age: AccessDeniedException");

    let err = decrypt_data_key(&doc, &Fixed(vec![1; 31]))
        .await
        .unwrap_err();
    assert!(matches!(err, SopsError::DataKey(_)));

    // The wrong data key: the first value fails authentication.
    let err = doc.decrypt(&[7u8; 32]).unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "db:password"),
        "{err}"
    );

    // A wrong identity: the age service names the recipients.
    let other = AgeKeyService::new(&identity(2)).unwrap();
    let err = decrypt_data_key(&doc, &other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.to_string()
            .contains("no identity of this store matches"),
        "{err}"
    );
    assert!(!err.to_string().contains("AGE-SECRET-KEY"));
}

#[test]
fn formats_by_name_as_sops() {
    // cmd/sops/formats: FormatForPath, suffixes compared as they are.
    for (name, format) in [
        ("a/b.yaml", Format::Yaml),
        ("x.yml", Format::Yaml),
        ("x.enc.json", Format::Json),
        ("prod.env", Format::Dotenv),
        (".env", Format::Dotenv),
        ("x.ini", Format::Ini),
        ("DATABASE_URL.enc", Format::Binary),
        ("noext", Format::Binary),
        ("a/b.YAML", Format::Binary),
        ("x.yaml.bak", Format::Binary),
    ] {
        assert_eq!(Format::for_file_name(name), format, "{name}");
    }
}

#[test]
fn binary_documents_hold_one_data_string() {
    let doc = br#"{"data": "ENC[AES256_GCM,data:AA==,iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]", "sops": {"version": "3.13.3", "mac": "", "lastmodified": "2026-01-01T00:00:00Z", "age": [{"recipient": "age1x", "enc": "x"}]}}"#;
    assert!(Document::parse(doc, Format::Binary).is_ok());
    let extra = br#"{"data": "x", "other": "y", "sops": {"version": "3.13.3", "mac": "", "lastmodified": "2026-01-01T00:00:00Z", "age": [{"recipient": "age1x", "enc": "x"}]}}"#;
    assert!(matches!(
        Document::parse(extra, Format::Binary),
        Err(SopsError::Malformed(_))
    ));
    assert!(matches!(
        Document::parse(b"{}", Format::Binary),
        Err(SopsError::NotSops)
    ));
    assert!(matches!(
        Document::parse(b"[sops]\nversion = 3\n", Format::Ini),
        Err(SopsError::Unsupported(_))
    ));
}

#[test]
fn not_sops_and_malformed() {
    let err = Document::parse(&fixture("plain.yaml"), Format::Yaml).unwrap_err();
    assert!(matches!(err, SopsError::NotSops));
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(matches!(
        Document::parse(&fixture("plain.env"), Format::Dotenv),
        Err(SopsError::NotSops)
    ));
    let err = Document::parse(b"a: [unclosed\n", Format::Yaml).unwrap_err();
    assert!(matches!(err, SopsError::Malformed(_)));
    let err = Document::parse(b"{\"a\": \"secret-ish\" ", Format::Json).unwrap_err();
    assert!(!err.to_string().contains("secret-ish"));
}

/// issue 10: a 501 KB document (one anchored list of 100,000 items, aliased 100,000 times)
/// took the operator past 2 GiB, and again after every restart. The reader stops at twice
/// the document's size, in both directions of amplification: many nodes and long strings.
#[test]
fn yaml_alias_expansion_is_bounded() {
    let items = vec!["x"; 100_000].join(", ");
    let aliases = vec!["*a"; 100_000].join(", ");
    let laughs = format!("a: &a [{items}]\nb: [{aliases}]\nsops: {{version: 3.9.0}}\n");
    assert!(laughs.len() > 500_000 && laughs.len() < 1_000_000);
    let err = Document::parse(laughs.as_bytes(), Format::Yaml).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sops: malformed document: YAML: the document expands to more than twice its size (YAML aliases)"
    );
    // One long string aliased many times.
    let long = "y".repeat(100_000);
    let strings = format!("a: &s {long}\nb: [{}]\n", vec!["*s"; 30].join(", "));
    let err = Document::parse(strings.as_bytes(), Format::Yaml).unwrap_err();
    assert!(
        err.to_string().contains("expands to more than twice"),
        "{err}"
    );
    // A document that uses an alias or two is read (up to its metadata).
    let modest = b"base: &b {user: ann, role: admin}\ncopy: *b\nother: *b\n";
    assert!(matches!(
        Document::parse(modest, Format::Yaml),
        Err(SopsError::NotSops)
    ));
    // Every fixture made by sops reads as before (the budget is never near for them).
    for name in [
        "secrets.enc.yaml",
        "encrypted-regex.enc.yaml",
        "shamir-2of3.enc.yaml",
    ] {
        Document::parse(&fixture(name), Format::Yaml).unwrap();
    }
    Document::parse(&fixture("secrets.enc.json"), Format::Json).unwrap();
    // Over 1 MiB: refused before parsing.
    let big = format!("a: {}\n", "z".repeat(MAX_DOCUMENT_BYTES));
    let err = Document::parse(big.as_bytes(), Format::Yaml).unwrap_err();
    assert!(
        err.to_string().contains("over the 1048576-byte limit"),
        "{err}"
    );
}
