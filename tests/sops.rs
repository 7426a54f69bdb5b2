//! The SOPS decryptor (`secret_relay::sops`) against the real `sops` binary of the test
//! environment: documents encrypted by `sops encrypt` with age identities made at run time are
//! decrypted by the module and compared leaf by leaf, and with `sops decrypt`'s own output.
//! Tampered documents must be refused, as `sops decrypt` refuses them.
//! Run with `hack/test.sh --test sops`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use age::secrecy::ExposeSecret;
use common::{TestEnv, random_suffix};
use secret_relay::providers::ErrorKind;
use secret_relay::sops::{
    AgeKeyService, Decrypted, Document, Format, LeafKind, SopsError, decrypt_data_key,
};
use serde_json::{Value, json};

/// A scratch directory with the sops binary and fresh age identities.
struct Sops {
    bin: PathBuf,
    dir: PathBuf,
    /// (identity file text, recipient)
    ids: Vec<(String, String)>,
}

impl Sops {
    async fn new(test: &str, identities: usize) -> Option<Sops> {
        let env = TestEnv::get(test).await?;
        let dir =
            std::env::temp_dir().join(format!("secret-relay-sops-{test}-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let ids = (0..identities)
            .map(|_| {
                let id = age::x25519::Identity::generate();
                (
                    format!("# test identity\n{}\n", id.to_string().expose_secret()),
                    id.to_public().to_string(),
                )
            })
            .collect();
        Some(Sops {
            bin: env.tool("SOPS"),
            dir,
            ids,
        })
    }

    fn recipient(&self, i: usize) -> &str {
        &self.ids[i].1
    }

    fn identity(&self, i: usize) -> &str {
        &self.ids[i].0
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .env_remove("SOPS_AGE_KEY")
            .env("SOPS_AGE_KEY_FILE", self.dir.join("no-such-key-file"))
            .env("HOME", &self.dir);
        cmd
    }

    /// Writes `plain` to `name` and runs `sops encrypt [args] name`, returning the encrypted
    /// document. `.sops.yaml` in the directory applies when `args` name no key.
    fn encrypt(&self, name: &str, plain: &str, args: &[&str]) -> Vec<u8> {
        std::fs::write(self.dir.join(name), plain).unwrap();
        let out = self
            .command()
            .arg("encrypt")
            .args(args)
            .arg(name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sops encrypt {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `sops decrypt` of `doc` with the identities `ids` (SOPS_AGE_KEY).
    fn decrypt(
        &self,
        doc: &[u8],
        format: &str,
        output: &str,
        ids: &[usize],
    ) -> Result<Vec<u8>, String> {
        let name = format!("doc-{}.{format}", random_suffix());
        std::fs::write(self.dir.join(&name), doc).unwrap();
        let keys: String = ids.iter().map(|i| self.identity(*i)).collect();
        let out = self
            .command()
            .env("SOPS_AGE_KEY", keys)
            .args(["decrypt", "--input-type", format, "--output-type", output])
            .arg(&name)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }
}

impl Drop for Sops {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Decrypts `doc` with the module and the identities `ids`.
async fn module_decrypt(
    doc: &[u8],
    format: Format,
    sops: &Sops,
    ids: &[usize],
) -> Result<Decrypted, SopsError> {
    let keys: String = ids.iter().map(|i| sops.identity(*i)).collect();
    let service = AgeKeyService::new(&keys)?;
    let parsed = Document::parse(doc, format)?;
    let key = decrypt_data_key(&parsed, &service).await?;
    parsed.decrypt(&key)
}

fn flat(d: &Decrypted) -> BTreeMap<String, String> {
    d.flatten()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().expect("utf-8").to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const PLAIN_YAML: &str = r#"# a comment
db:
  password: "pä$$wörd ✓ \"quoted\""
  port: 5432
  negative: -17
  ratio: 0.25
  tiny: 1.5e-7
  enabled: true
  disabled: false
  nothing: null
  empty: ""
  spaces: "  padded  "
multiline: |
  first line
  second line
folded: >-
  one
  two
emoji: "🔐 Ünïcödé"
hosts:
  - a.example
  - b.example
users:
  - name: ann
    admin: true
  - name: bob
    roles: [read, 2, 3.5, false]
matrix:
  - [1, 2]
  - [x]
nested:
  deeper:
    deepest: value
port_unencrypted: 8080
"#;

fn yaml_expected() -> BTreeMap<String, String> {
    map(&[
        ("db.password", "pä$$wörd ✓ \"quoted\""),
        ("db.port", "5432"),
        ("db.negative", "-17"),
        ("db.ratio", "0.25"),
        ("db.tiny", "0.00000015"),
        ("db.enabled", "true"),
        ("db.disabled", "false"),
        ("db.nothing", ""),
        ("db.empty", ""),
        ("db.spaces", "  padded  "),
        ("multiline", "first line\nsecond line\n"),
        ("folded", "one two"),
        ("emoji", "🔐 Ünïcödé"),
        ("hosts.0", "a.example"),
        ("hosts.1", "b.example"),
        ("users.0.name", "ann"),
        ("users.0.admin", "true"),
        ("users.1.name", "bob"),
        ("users.1.roles.0", "read"),
        ("users.1.roles.1", "2"),
        ("users.1.roles.2", "3.5"),
        ("users.1.roles.3", "false"),
        ("matrix.0.0", "1"),
        ("matrix.0.1", "2"),
        ("matrix.1.0", "x"),
        ("nested.deeper.deepest", "value"),
        ("port_unencrypted", "8080"),
    ])
}

fn json_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[tokio::test]
async fn yaml_document_matches_sops() {
    let Some(sops) = Sops::new("yaml_document_matches_sops", 1).await else {
        return;
    };
    let r = sops.recipient(0).to_string();
    let enc = sops.encrypt(
        "doc.yaml",
        PLAIN_YAML,
        &["--age", &r, "--input-type", "yaml", "--output-type", "yaml"],
    );
    let text = String::from_utf8(enc.clone()).unwrap();
    assert!(
        !text.contains("ann") && !text.contains("pä$$"),
        "values are encrypted"
    );
    assert!(text.contains("port_unencrypted: 8080"));

    let d = module_decrypt(&enc, Format::Yaml, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(flat(&d), yaml_expected());
    assert_eq!(d.leaf(&["db", "port"]).unwrap().0, LeafKind::Int);
    assert_eq!(d.leaf(&["db", "ratio"]).unwrap().0, LeafKind::Float);
    assert_eq!(d.leaf(&["db", "enabled"]).unwrap().0, LeafKind::Bool);
    assert_eq!(d.leaf(&["db", "nothing"]).unwrap().0, LeafKind::Null);
    assert_eq!(d.leaf(&["port_unencrypted"]).unwrap().0, LeafKind::Int);

    // The whole tree equals what sops itself decrypts (as JSON, typed).
    let theirs = sops.decrypt(&enc, "yaml", "json", &[0]).unwrap();
    assert_eq!(json_value(d.to_json().as_bytes()), json_value(&theirs));
    // And document order is the same.
    let ours = d.to_json();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let theirs_order: Vec<String> = {
        let text = String::from_utf8(theirs).unwrap();
        let mut found: Vec<(usize, String)> = keys(&json_value(text.as_bytes()))
            .into_iter()
            .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k))
            .collect();
        found.sort();
        found.into_iter().map(|(_, k)| k).collect()
    };
    let ours_text = ours.as_str().unwrap();
    let mut ours_order: Vec<(usize, String)> = theirs_order
        .iter()
        .map(|k| (ours_text.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    ours_order.sort();
    assert_eq!(
        ours_order.into_iter().map(|(_, k)| k).collect::<Vec<_>>(),
        theirs_order
    );
}

#[tokio::test]
async fn json_document_matches_sops() {
    let Some(sops) = Sops::new("json_document_matches_sops", 1).await else {
        return;
    };
    let plain = r#"{
  "zeta": "first key",
  "db": {"password": "s3cr3t ✓", "port": 5432, "whole": 2.0, "ratio": 0.5, "big": 12345678901234567890, "on": true, "off": false, "nothing": null, "empty": ""},
  "lines": "a\nb\n",
  "list": ["x", 1, 1.25, true, {"k": "v"}, [null]],
  "alpha": "last key",
  "note_unencrypted": "visible"
}"#;
    let r = sops.recipient(0).to_string();
    let enc = sops.encrypt(
        "doc.json",
        plain,
        &["--age", &r, "--input-type", "json", "--output-type", "json"],
    );
    let d = module_decrypt(&enc, Format::Json, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(
        flat(&d),
        map(&[
            ("zeta", "first key"),
            ("db.password", "s3cr3t ✓"),
            ("db.port", "5432"),
            ("db.whole", "2"),
            ("db.ratio", "0.5"),
            ("db.big", "12345678901234567000"),
            ("db.on", "true"),
            ("db.off", "false"),
            ("db.nothing", ""),
            ("db.empty", ""),
            ("lines", "a\nb\n"),
            ("list.0", "x"),
            ("list.1", "1"),
            ("list.2", "1.25"),
            ("list.3", "true"),
            ("list.4.k", "v"),
            ("list.5.0", ""),
            ("alpha", "last key"),
            ("note_unencrypted", "visible"),
        ])
    );
    // 2.0 is a float in sops's JSON store, 5432 an int.
    assert_eq!(d.leaf(&["db", "whole"]).unwrap().0, LeafKind::Float);
    assert_eq!(d.leaf(&["db", "port"]).unwrap().0, LeafKind::Int);
    let theirs = sops.decrypt(&enc, "json", "json", &[0]).unwrap();
    assert_eq!(json_value(d.to_json().as_bytes()), json_value(&theirs));
    let ours = d.to_json();
    let ours = ours.as_str().unwrap();
    assert!(
        ours.starts_with("{\"zeta\":"),
        "document order kept: {}",
        ours.len()
    );
}

#[tokio::test]
async fn dotenv_document_matches_sops() {
    let Some(sops) = Sops::new("dotenv_document_matches_sops", 1).await else {
        return;
    };
    let plain = "# comment\nDB_PASSWORD=s3cr3t ✓ with = sign\nMULTI=one\\ntwo\nEMPTY=\nNUMBER=42\nURL_unencrypted=https://example.org/?a=b\n";
    let r = sops.recipient(0).to_string();
    let enc = sops.encrypt(
        "doc.env",
        plain,
        &[
            "--age",
            &r,
            "--input-type",
            "dotenv",
            "--output-type",
            "dotenv",
        ],
    );
    assert_eq!(Format::for_file_name("doc.env"), Format::Dotenv);
    let d = module_decrypt(&enc, Format::Dotenv, &sops, &[0])
        .await
        .unwrap();
    let expected = map(&[
        ("DB_PASSWORD", "s3cr3t ✓ with = sign"),
        ("MULTI", "one\ntwo"),
        ("EMPTY", ""),
        ("NUMBER", "42"),
        ("URL_unencrypted", "https://example.org/?a=b"),
    ]);
    assert_eq!(flat(&d), expected);
    // sops decrypt prints the same KEY=VALUE lines (newlines escaped).
    let theirs = String::from_utf8(sops.decrypt(&enc, "dotenv", "dotenv", &[0]).unwrap()).unwrap();
    let theirs: BTreeMap<String, String> = theirs
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.replace("\\n", "\n"))
        })
        .collect();
    assert_eq!(flat(&d), theirs);
}

#[tokio::test]
async fn binary_document_matches_sops() {
    let Some(sops) = Sops::new("binary_document_matches_sops", 1).await else {
        return;
    };
    let r = sops.recipient(0).to_string();
    // `echo -n "$URL" > DATABASE_URL.enc; sops -e -i DATABASE_URL.enc`: any name sops does not
    // know is a binary document, the whole file its one value.
    let plain = "postgres://app:p4ss@db:5432/app?sslmode=require\n  with = and \u{2713}";
    assert_eq!(Format::for_file_name("DATABASE_URL.enc"), Format::Binary);
    sops.write("DATABASE_URL.enc", plain);
    let out = sops
        .command()
        .args(["-e", "-i", "--age", &r, "DATABASE_URL.enc"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let enc = std::fs::read(sops.dir.join("DATABASE_URL.enc")).unwrap();
    let d = module_decrypt(&enc, Format::Binary, &sops, &[0])
        .await
        .unwrap();
    let (_, bytes) = d.leaf(&["data"]).expect("data");
    assert_eq!(bytes, plain.as_bytes());
    assert_eq!(
        sops.decrypt(&enc, "binary", "binary", &[0]).unwrap(),
        plain.as_bytes(),
        "sops itself agrees"
    );
    // The envelope is sops' JSON store (`BinaryStore` wraps it): read as JSON, it is the tree
    // `{"data": ...}`, which the operator used to write instead of the value.
    let as_json = module_decrypt(&enc, Format::Json, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(flat(&as_json).get("data").map(String::as_str), Some(plain));
}

#[tokio::test]
async fn encryption_rules() {
    let Some(sops) = Sops::new("encryption_rules", 1).await else {
        return;
    };
    let r = sops.recipient(0).to_string();
    let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ndata:\n  password: aHVudGVyMg==\nstringData:\n  token: abc\n  count: 3\n";
    let leaves = map(&[
        ("apiVersion", "v1"),
        ("kind", "Secret"),
        ("metadata.name", "app"),
        ("data.password", "aHVudGVyMg=="),
        ("stringData.token", "abc"),
        ("stringData.count", "3"),
    ]);

    // encrypted_regex: only data/stringData are encrypted.
    let enc = sops.encrypt(
        "regex.yaml",
        plain,
        &["--age", &r, "--encrypted-regex", "^(data|stringData)$"],
    );
    let text = String::from_utf8(enc.clone()).unwrap();
    assert!(text.contains("name: app") && !text.contains("abc"));
    let d = module_decrypt(&enc, Format::Yaml, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(flat(&d), leaves);
    // A plaintext swapped in where the regex demands encryption.
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap();
    let t = text.replacen(token, "abc", 1);
    let err = module_decrypt(t.as_bytes(), Format::Yaml, &sops, &[0])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "stringData:token"),
        "{err}"
    );
    assert!(sops.decrypt(t.as_bytes(), "yaml", "yaml", &[0]).is_err());
    // An unencrypted value changed: caught by the MAC.
    let t = text.replacen("name: app", "name: evil", 1);
    let err = module_decrypt(t.as_bytes(), Format::Yaml, &sops, &[0])
        .await
        .unwrap_err();
    assert!(matches!(err, SopsError::MacMismatch(_)), "{err}");
    assert!(sops.decrypt(t.as_bytes(), "yaml", "yaml", &[0]).is_err());

    // A custom unencrypted_suffix.
    let plain2 = "user_plain: admin\npassword: p\nnested_plain:\n  inner: also visible\n";
    let enc = sops.encrypt(
        "suffix.yaml",
        plain2,
        &["--age", &r, "--unencrypted-suffix", "_plain"],
    );
    let text = String::from_utf8(enc.clone()).unwrap();
    assert!(text.contains("user_plain: admin") && text.contains("inner: also visible"));
    let d = module_decrypt(&enc, Format::Yaml, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(
        flat(&d),
        map(&[
            ("user_plain", "admin"),
            ("password", "p"),
            ("nested_plain.inner", "also visible"),
        ])
    );

    // mac_only_encrypted (a creation rule: sops has no flag for it).
    sops.write(
        ".sops.yaml",
        &format!(
            "creation_rules:\n  - path_regex: maconly\\.yaml$\n    mac_only_encrypted: true\n    encrypted_regex: ^(data|stringData)$\n    age: {r}\n"
        ),
    );
    let enc = sops.encrypt("maconly.yaml", plain, &[]);
    let text = String::from_utf8(enc.clone()).unwrap();
    assert!(text.contains("mac_only_encrypted: true"));
    let d = module_decrypt(&enc, Format::Yaml, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(flat(&d), leaves);
    // Plaintext values are outside the MAC there (sops agrees)...
    let t = text.replacen("name: app", "name: other", 1);
    assert!(
        module_decrypt(t.as_bytes(), Format::Yaml, &sops, &[0])
            .await
            .is_ok()
    );
    assert!(sops.decrypt(t.as_bytes(), "yaml", "yaml", &[0]).is_ok());
    // ...but a plaintext put where a ciphertext belongs is refused all the same.
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap();
    let t = text.replacen(token, "forged", 1);
    let err = module_decrypt(t.as_bytes(), Format::Yaml, &sops, &[0])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path, .. } if path == "stringData:token"),
        "{err}"
    );
    assert!(!err.to_string().contains("forged"));
    assert!(sops.decrypt(t.as_bytes(), "yaml", "yaml", &[0]).is_err());
}

#[tokio::test]
async fn shamir_key_groups() {
    let Some(sops) = Sops::new("shamir_key_groups", 2).await else {
        return;
    };
    let (a, b) = (sops.recipient(0).to_string(), sops.recipient(1).to_string());
    sops.write(
        ".sops.yaml",
        &format!(
            "creation_rules:\n\
             \x20 - path_regex: two\\.yaml$\n    shamir_threshold: 2\n    key_groups:\n      - age: [{a}]\n      - age: [{b}]\n\
             \x20 - path_regex: three\\.yaml$\n    shamir_threshold: 2\n    key_groups:\n      - age: [{a}]\n      - age: [{b}]\n      - age: [{b}]\n\
             \x20 - path_regex: one\\.yaml$\n    shamir_threshold: 1\n    key_groups:\n      - age: [{a}]\n      - age: [{b}]\n"
        ),
    );
    let plain = "secret: value\nn: 1\n";
    let expected = map(&[("secret", "value"), ("n", "1")]);

    let two = sops.encrypt("two.yaml", plain, &[]);
    let doc = Document::parse(&two, Format::Yaml).unwrap();
    assert_eq!(doc.key_groups().len(), 2);
    assert_eq!(doc.shamir_threshold(), 2);
    let d = module_decrypt(&two, Format::Yaml, &sops, &[0, 1])
        .await
        .unwrap();
    assert_eq!(flat(&d), expected);
    assert!(sops.decrypt(&two, "yaml", "yaml", &[0, 1]).is_ok());
    for one in [0, 1] {
        let err = module_decrypt(&two, Format::Yaml, &sops, &[one])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SopsError::NotEnoughShares {
                    got: 1,
                    needed: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(sops.decrypt(&two, "yaml", "yaml", &[one]).is_err());
    }

    // 2 of 3 groups: identity b holds two groups, a only one.
    let three = sops.encrypt("three.yaml", plain, &[]);
    let d = module_decrypt(&three, Format::Yaml, &sops, &[1])
        .await
        .unwrap();
    assert_eq!(flat(&d), expected);
    assert!(sops.decrypt(&three, "yaml", "yaml", &[1]).is_ok());
    assert!(
        module_decrypt(&three, Format::Yaml, &sops, &[0])
            .await
            .is_err()
    );
    assert!(sops.decrypt(&three, "yaml", "yaml", &[0]).is_err());

    // Threshold 1 with two groups: sops itself refuses to make such a file (Vault's Shamir
    // split needs a threshold of at least 2), and the module refuses a document claiming it.
    std::fs::write(sops.dir.join("one.yaml"), plain).unwrap();
    let out = sops
        .command()
        .args(["encrypt", "one.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("threshold must be at least 2"));
    let edited = String::from_utf8(two)
        .unwrap()
        .replace("shamir_threshold: 2", "shamir_threshold: 1");
    assert!(matches!(
        Document::parse(edited.as_bytes(), Format::Yaml),
        Err(SopsError::Malformed(_))
    ));
}

#[tokio::test]
async fn tampering_is_refused_like_sops() {
    let Some(sops) = Sops::new("tampering_is_refused_like_sops", 2).await else {
        return;
    };
    let r = sops.recipient(0).to_string();
    let enc = sops.encrypt(
        "doc.yaml",
        PLAIN_YAML,
        &["--age", &r, "--input-type", "yaml", "--output-type", "yaml"],
    );
    let text = String::from_utf8(enc).unwrap();
    let value_of = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"))
            .to_string()
    };
    let password = value_of("password: ");
    let data = password.split(",iv:").next().unwrap().to_string();
    let flipped = {
        let mut d = data.clone();
        let last = d.pop().unwrap();
        d.push(if last == 'A' { 'B' } else { 'A' });
        d
    };
    let hosts_1 = text
        .lines()
        .filter(|l| l.starts_with("    - ENC["))
        .nth(1)
        .unwrap()
        .to_string();

    // (name, tampered document, check of the module's error)
    type Check = fn(&SopsError) -> bool;
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "changed ciphertext",
            text.replacen(&data, &flipped, 1),
            |e| matches!(e, SopsError::Value { path, .. } if path == "db:password"),
        ),
        (
            "renamed key",
            text.replacen("    password: ", "    pass: ", 1),
            |e| matches!(e, SopsError::Value { path, .. } if path == "db:pass"),
        ),
        (
            "value moved to another key",
            text.replacen(&value_of("emoji: "), &value_of("multiline: "), 1),
            |e| matches!(e, SopsError::Value { path, .. } if path == "emoji"),
        ),
        (
            "removed list element",
            text.replacen(&format!("{hosts_1}\n"), "", 1),
            |e| matches!(e, SopsError::MacMismatch(_)),
        ),
        (
            "removed map entry",
            text.replacen(&format!("emoji: {}\n", value_of("emoji: ")), "", 1),
            |e| matches!(e, SopsError::MacMismatch(_)),
        ),
        (
            "changed unencrypted value",
            text.replacen("port_unencrypted: 8080", "port_unencrypted: 8081", 1),
            |e| matches!(e, SopsError::MacMismatch(_)),
        ),
        (
            "plaintext swapped in",
            text.replacen(&password, "swapped-plaintext", 1),
            |e| matches!(e, SopsError::Value { path, .. } if path == "db:password"),
        ),
        (
            "MAC of another lastmodified",
            text.replacen(&value_of("lastmodified: "), "\"2020-01-01T00:00:00Z\"", 1),
            |e| matches!(e, SopsError::MacMismatch(_)),
        ),
    ];
    for (name, doc, check) in cases {
        assert_ne!(doc, text, "{name}: the tampering changed nothing");
        let err = module_decrypt(doc.as_bytes(), Format::Yaml, &sops, &[0])
            .await
            .expect_err(name);
        assert!(check(&err), "{name}: unexpected error {err}");
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{name}");
        let msg = err.to_string();
        assert!(
            !msg.contains("pä$$") && !msg.contains("swapped-plaintext") && !msg.contains("Ünïcödé"),
            "{name}: the message leaks a value: {msg}"
        );
        assert!(
            sops.decrypt(doc.as_bytes(), "yaml", "yaml", &[0]).is_err(),
            "{name}: sops decrypt accepted it"
        );
    }

    // A wrong identity: no key of the document can be opened.
    let err = module_decrypt(text.as_bytes(), Format::Yaml, &sops, &[1])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains(sops.recipient(0)), "{err}");
    assert!(!err.to_string().contains("AGE-SECRET-KEY"));
    assert!(sops.decrypt(text.as_bytes(), "yaml", "yaml", &[1]).is_err());
    // The untampered document still decrypts, and to_json has the expected shape.
    let d = module_decrypt(text.as_bytes(), Format::Yaml, &sops, &[0])
        .await
        .unwrap();
    assert_eq!(
        json_value(d.to_json().as_bytes())["users"][1]["roles"],
        json!(["read", 2, 3.5, false])
    );
}
