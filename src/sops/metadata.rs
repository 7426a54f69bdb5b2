//! The `sops` metadata section (`stores/stores.go`: `metadata`, `ToInternal`) and the rules that
//! decide which values are encrypted (`sops.go`: `shouldBeEncrypted`).
//!
//! Fields are read with mapstructure's weak typing, as sops does (`stores/metadata.go`:
//! `treeBranchToMetadata`), because dotenv metadata arrive as strings: `"2"` is a valid
//! `shamir_threshold`, `"true"` a valid `mac_only_encrypted`. Unknown fields are ignored.

use std::collections::BTreeMap;

use regex::Regex;

use super::cipher::{go_format_float, go_parse_bool, go_rfc3339_roundtrip};
use super::tree::Node;
use super::{MasterKey, SopsError};

/// Which values of the tree are encrypted: at most one rule (`ToInternal` refuses more); none
/// means the default `unencrypted_suffix: _unencrypted`.
#[derive(Clone, Debug)]
pub(crate) enum Rule {
    /// Values under a key ending with the suffix stay plaintext.
    UnencryptedSuffix(String),
    /// Only values under a key ending with the suffix are encrypted.
    EncryptedSuffix(String),
    /// Values under a key matching the regex stay plaintext.
    UnencryptedRegex(Regex),
    /// Only values under a key matching the regex are encrypted.
    EncryptedRegex(Regex),
}

impl Rule {
    /// Whether the value at `path` (the map keys leading to it; list positions do not count)
    /// is encrypted. A rule holds when any key of the path matches (`sops.go`:
    /// `shouldBeEncrypted`; Go's `regexp.Match` is an unanchored search, as `Regex::is_match`).
    pub fn should_encrypt(&self, path: &[String]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

/// The metadata a decryption needs.
#[derive(Clone, Debug)]
pub(crate) struct Metadata {
    /// `lastmodified` re-formatted as Go's `time.RFC3339`: the MAC's additional data.
    pub mac_aad: String,
    /// The encrypted MAC (`ENC[...]`), empty if absent.
    pub mac: String,
    /// Number of groups whose shares rebuild the data key (only with several groups).
    pub shamir_threshold: usize,
    /// The key groups, each in sops's order: kms, gcp_kms, hckms, azure_kv, hc_vault, pgp, age
    /// (`stores/stores.go`: `internalGroupFrom`).
    pub key_groups: Vec<Vec<MasterKey>>,
    /// The encryption rule.
    pub rule: Rule,
    /// MAC over encrypted values only, seeded with a constant (`sops.go`:
    /// `MACOnlyEncryptedInitialization`).
    pub mac_only_encrypted: bool,
}

fn field_err(field: &str, want: &str) -> SopsError {
    SopsError::malformed(format!("metadata field {field}: expected {want}"))
}

/// mapstructure's weak decode into a Go `string`.
fn weak_string(node: &Node, field: &str) -> Result<String, SopsError> {
    match node {
        Node::Str(s) => Ok(s.clone()),
        Node::Int(i) => Ok(i.to_string()),
        Node::Float(f) => Ok(go_format_float(*f)),
        Node::Bool(b) => Ok(if *b { "1" } else { "0" }.to_string()),
        Node::Null => Ok(String::new()),
        Node::Map(_) | Node::List(_) => Err(field_err(field, "a string")),
    }
}

/// mapstructure's weak decode into a Go `int`.
fn weak_int(node: &Node, field: &str) -> Result<i64, SopsError> {
    match node {
        Node::Int(i) => Ok(*i),
        Node::Str(s) if s.is_empty() => Ok(0),
        Node::Str(s) => s.trim().parse().map_err(|_| field_err(field, "an integer")),
        Node::Float(f) if f.is_finite() => Ok(*f as i64),
        Node::Bool(b) => Ok(i64::from(*b)),
        Node::Null => Ok(0),
        _ => Err(field_err(field, "an integer")),
    }
}

/// mapstructure's weak decode into a Go `bool`.
fn weak_bool(node: &Node, field: &str) -> Result<bool, SopsError> {
    match node {
        Node::Bool(b) => Ok(*b),
        Node::Str(s) if s.is_empty() => Ok(false),
        Node::Str(s) => go_parse_bool(s.as_bytes()).ok_or_else(|| field_err(field, "a boolean")),
        Node::Int(i) => Ok(*i != 0),
        Node::Float(f) => Ok(*f != 0.0),
        Node::Null => Ok(false),
        _ => Err(field_err(field, "a boolean")),
    }
}

/// mapstructure's weak decode into a slice: a single mapping counts as a list of one.
fn weak_list<'a>(node: &'a Node, field: &str) -> Result<Vec<&'a Node>, SopsError> {
    match node {
        Node::List(items) => Ok(items.iter().collect()),
        Node::Null => Ok(Vec::new()),
        Node::Map(_) => Ok(vec![node]),
        _ => Err(field_err(field, "a list")),
    }
}

/// The fields of a mapping; later duplicates win, as when Go decodes into a map.
fn fields<'a>(node: &'a Node, field: &str) -> Result<BTreeMap<&'a str, &'a Node>, SopsError> {
    match node {
        Node::Map(entries) => Ok(entries.iter().map(|(k, v)| (k.as_str(), v)).collect()),
        Node::Null => Ok(BTreeMap::new()),
        _ => Err(field_err(field, "a mapping")),
    }
}

fn string_field(map: &BTreeMap<&str, &Node>, name: &str, ctx: &str) -> Result<String, SopsError> {
    match map.get(name) {
        Some(n) => weak_string(n, &format!("{ctx}.{name}")),
        None => Ok(String::new()),
    }
}

/// The key entries of one group (or of the top level, for the flat form).
fn group_keys(map: &BTreeMap<&str, &Node>, ctx: &str) -> Result<Vec<MasterKey>, SopsError> {
    let mut keys = Vec::new();
    // Go's internalGroupFrom order.
    for kind in [
        "kms", "gcp_kms", "hckms", "azure_kv", "hc_vault", "pgp", "age",
    ] {
        let Some(list) = map.get(kind) else { continue };
        for (i, entry) in weak_list(list, kind)?.into_iter().enumerate() {
            let ectx = format!("{ctx}{kind}[{i}]");
            let e = fields(entry, &ectx)?;
            let s = |name: &str| string_field(&e, name, &ectx);
            keys.push(match kind {
                "kms" => {
                    let mut context = BTreeMap::new();
                    if let Some(c) = e.get("context") {
                        for (k, v) in fields(c, &format!("{ectx}.context"))? {
                            // map[string]*string: a null value is a nil pointer, dropped.
                            if !matches!(v, Node::Null) {
                                context.insert(k.to_string(), weak_string(v, &ectx)?);
                            }
                        }
                    }
                    let role = s("role")?;
                    MasterKey::AwsKms {
                        arn: s("arn")?,
                        enc: s("enc")?,
                        context,
                        role: (!role.is_empty()).then_some(role),
                    }
                }
                "gcp_kms" => MasterKey::GcpKms {
                    resource_id: s("resource_id")?,
                    enc: s("enc")?,
                },
                "hc_vault" => MasterKey::HcVault {
                    vault_address: s("vault_address")?,
                    engine_path: s("engine_path")?,
                    key_name: s("key_name")?,
                    enc: s("enc")?,
                },
                "age" => MasterKey::Age {
                    recipient: s("recipient")?,
                    enc: s("enc")?,
                },
                other => MasterKey::Unsupported {
                    kind: other.to_string(),
                },
            });
        }
    }
    Ok(keys)
}

impl Metadata {
    /// Reads the metadata tree. Errors (`Malformed`): a field of the wrong shape, a bad
    /// `lastmodified`, no keys, more than one encryption rule, a regex that does not compile.
    /// `Unsupported`: the comment-based rules.
    pub fn from_node(node: &Node) -> Result<Metadata, SopsError> {
        let top = fields(node, "sops")?;
        let lastmodified = string_field(&top, "lastmodified", "sops")?;
        let mac_aad = go_rfc3339_roundtrip(&lastmodified)
            .ok_or_else(|| SopsError::malformed("metadata field lastmodified: not RFC 3339"))?;
        let mac = string_field(&top, "mac", "sops")?;
        let threshold = match top.get("shamir_threshold") {
            Some(n) => weak_int(n, "shamir_threshold")?,
            None => 0,
        };

        // stores/stores.go internalKeygroups: the flat lists, when any is non-empty, form the
        // single group; otherwise key_groups.
        let flat = group_keys(&top, "")?;
        let key_groups = if !flat.is_empty() {
            vec![flat]
        } else if let Some(groups) = top.get("key_groups") {
            weak_list(groups, "key_groups")?
                .into_iter()
                .enumerate()
                .map(|(i, g)| {
                    let ctx = format!("key_groups[{i}].");
                    group_keys(&fields(g, &ctx)?, &ctx)
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        if key_groups.is_empty() || key_groups.iter().all(|g| g.is_empty()) {
            return Err(SopsError::malformed("no keys found in the metadata"));
        }
        let shamir_threshold = if key_groups.len() > 1 {
            // sops stores the effective threshold; 0 means "all groups" (UpdateMasterKeys).
            // shamir.Split refuses thresholds below 2, and Combine needs two shares.
            match threshold {
                0 => key_groups.len(),
                t if t >= 2 && (t as usize) <= key_groups.len() => t as usize,
                _ => {
                    return Err(SopsError::malformed(format!(
                        "shamir_threshold {threshold} is not possible with {} key groups",
                        key_groups.len()
                    )));
                }
            }
        } else {
            1
        };

        let text = |name: &str| string_field(&top, name, "sops");
        let mut rules = Vec::new();
        for name in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if !text(name)?.is_empty() {
                return Err(SopsError::Unsupported(format!(
                    "{name} is not supported (comments are not read)"
                )));
            }
        }
        let regex = |name: &str, re: &str| {
            crate::regexes::compile(re)
                .map(|r| (*r).clone())
                .map_err(|_| {
                    SopsError::malformed(format!(
                        "metadata field {name}: invalid regular expression"
                    ))
                })
        };
        let s = text("unencrypted_suffix")?;
        if !s.is_empty() {
            rules.push(Rule::UnencryptedSuffix(s));
        }
        let s = text("encrypted_suffix")?;
        if !s.is_empty() {
            rules.push(Rule::EncryptedSuffix(s));
        }
        let s = text("unencrypted_regex")?;
        if !s.is_empty() {
            rules.push(Rule::UnencryptedRegex(regex("unencrypted_regex", &s)?));
        }
        let s = text("encrypted_regex")?;
        if !s.is_empty() {
            rules.push(Rule::EncryptedRegex(regex("encrypted_regex", &s)?));
        }
        if rules.len() > 1 {
            return Err(SopsError::malformed(
                "more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex",
            ));
        }
        let rule = rules
            .pop()
            .unwrap_or_else(|| Rule::UnencryptedSuffix("_unencrypted".to_string()));
        let mac_only_encrypted = match top.get("mac_only_encrypted") {
            Some(n) => weak_bool(n, "mac_only_encrypted")?,
            None => false,
        };
        Ok(Metadata {
            mac_aad,
            mac,
            shamir_threshold,
            key_groups,
            rule,
            mac_only_encrypted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rules_follow_should_be_encrypted() {
        let default = Rule::UnencryptedSuffix("_unencrypted".into());
        assert!(default.should_encrypt(&path(&["db", "password"])));
        assert!(!default.should_encrypt(&path(&["db_unencrypted", "password"])));
        assert!(!default.should_encrypt(&path(&["db", "host_unencrypted"])));

        let enc_suffix = Rule::EncryptedSuffix("_secret".into());
        assert!(enc_suffix.should_encrypt(&path(&["a_secret", "b"])));
        assert!(!enc_suffix.should_encrypt(&path(&["a", "b"])));

        let enc_re = Rule::EncryptedRegex(Regex::new("^(data|stringData)$").unwrap());
        assert!(enc_re.should_encrypt(&path(&["data", "x"])));
        assert!(!enc_re.should_encrypt(&path(&["metadata", "name"])));
        // Unanchored like Go's regexp.Match.
        let enc_re = Rule::EncryptedRegex(Regex::new("pass").unwrap());
        assert!(enc_re.should_encrypt(&path(&["db", "password"])));

        let unenc_re = Rule::UnencryptedRegex(Regex::new("^public").unwrap());
        assert!(!unenc_re.should_encrypt(&path(&["public_key"])));
        assert!(unenc_re.should_encrypt(&path(&["private_key"])));
        // The top-level list of a path is empty for no key at all: nothing matches.
        assert!(!Rule::EncryptedSuffix("x".into()).should_encrypt(&[]));
    }

    fn meta(yaml: &str) -> Result<Metadata, SopsError> {
        let doc = format!("{yaml}\nx: 1\n");
        let split = super::super::tree::split(doc.as_bytes(), super::super::Format::Yaml)?;
        Metadata::from_node(&split.metadata)
    }

    #[test]
    fn metadata_fields() {
        let m = meta(
            "sops:\n  age:\n  - recipient: r1\n    enc: e1\n  kms:\n  - arn: a\n    enc: k\n    context: {app: x, none: null}\n  lastmodified: '2024-05-06T07:08:09Z'\n  mac: M\n  encrypted_regex: ^data$\n  mac_only_encrypted: true\n",
        )
        .unwrap();
        assert_eq!(m.mac_aad, "2024-05-06T07:08:09Z");
        assert_eq!(m.mac, "M");
        assert!(m.mac_only_encrypted);
        assert!(matches!(m.rule, Rule::EncryptedRegex(_)));
        assert_eq!(m.key_groups.len(), 1);
        assert_eq!(m.shamir_threshold, 1);
        // kms before age, whatever the document order.
        assert!(
            matches!(&m.key_groups[0][0], MasterKey::AwsKms { arn, context, role: None, .. }
            if arn == "a" && context.len() == 1 && context["app"] == "x")
        );
        assert!(
            matches!(&m.key_groups[0][1], MasterKey::Age { recipient, enc } if recipient == "r1" && enc == "e1")
        );
    }

    #[test]
    fn metadata_key_groups_and_weak_types() {
        let m = meta(
            "sops:\n  key_groups:\n  - age: [{recipient: a, enc: x}]\n  - hc_vault: [{vault_address: 'http://v', engine_path: transit, key_name: k, enc: 'vault:v1:x'}]\n    pgp: [{fp: F, enc: p}]\n  shamir_threshold: '2'\n  lastmodified: '2024-05-06T07:08:09Z'\n  mac_only_encrypted: 'false'\n",
        )
        .unwrap();
        assert_eq!(m.key_groups.len(), 2);
        assert_eq!(m.shamir_threshold, 2);
        assert!(!m.mac_only_encrypted);
        assert!(
            matches!(&m.key_groups[1][0], MasterKey::HcVault { key_name, .. } if key_name == "k")
        );
        assert!(matches!(&m.key_groups[1][1], MasterKey::Unsupported { kind } if kind == "pgp"));
        assert!(matches!(m.rule, Rule::UnencryptedSuffix(ref s) if s == "_unencrypted"));
    }

    #[test]
    fn metadata_refusals() {
        let base = "  age: [{recipient: a, enc: x}]\n  lastmodified: '2024-05-06T07:08:09Z'\n";
        assert!(
            meta(&format!(
                "sops:\n{base}  encrypted_regex: a\n  unencrypted_suffix: b\n"
            ))
            .is_err()
        );
        assert!(meta(&format!("sops:\n{base}  encrypted_regex: '('\n")).is_err());
        assert!(matches!(
            meta(&format!("sops:\n{base}  encrypted_comment_regex: x\n")),
            Err(SopsError::Unsupported(_))
        ));
        assert!(meta("sops:\n  lastmodified: '2024-05-06T07:08:09Z'\n").is_err());
        assert!(meta("sops:\n  age: [{recipient: a, enc: x}]\n  lastmodified: never\n").is_err());
        assert!(meta(
            "sops:\n  key_groups:\n  - age: [{recipient: a, enc: x}]\n  - age: [{recipient: b, enc: y}]\n  shamir_threshold: 3\n  lastmodified: '2024-05-06T07:08:09Z'\n"
        )
        .is_err());
    }
}
