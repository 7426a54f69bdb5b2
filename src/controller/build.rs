//! The pure steps of a reconcile: from fetched remote values to the desired Secret.
//!
//! Nothing here talks to the API server or a backend, so every rule (property paths,
//! decoding, rewrites, templates, labels, hashing) is unit-tested from YAML fixtures.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;
use sha2::{Digest, Sha256};

use super::managed_secret::Fingerprint;
use crate::{
    api::{
        ANNOTATION_DATA_HASH, ANNOTATION_LAST_REFRESH, ANNOTATION_REFRESH_INTERVAL,
        ANNOTATION_STORE, ExternalSecret, LABEL_EXTERNAL_SECRET, LABEL_MANAGED_BY, MANAGED_BY,
        external_secret::{ConversionStrategy, CreationPolicy, ExternalSecretRewrite},
    },
    providers::{SecretMap, SecretValue},
};

pub use super::build_template::TemplateSources;
pub use super::values::{BuildError, MAX_JSON_BYTES, MAX_JSON_DEPTH, check_json_bounds, decode};

/// Selects `property` from a JSON value, gjson syntax (`name.first`, `friends.1.first`), as
/// ESO does. A string result is returned raw; any other JSON result as compact JSON.
/// Errors when the value is not JSON, exceeds [`check_json_bounds`] or the path matches
/// nothing (the message names `key`).
pub fn select_property(
    key: &str,
    value: &SecretValue,
    property: &str,
) -> Result<SecretValue, BuildError> {
    let text = value.as_str().ok_or_else(|| {
        BuildError(format!(
            "{key:?}: value is not UTF-8, cannot select property {property:?}"
        ))
    })?;
    check_json_bounds(key, text)?;
    if !gjson::valid(text) {
        return Err(BuildError(format!(
            "{key:?}: value is not JSON, cannot select property {property:?}"
        )));
    }
    let found = gjson::get(text, property);
    if !found.exists() {
        return Err(BuildError(format!(
            "{key:?}: property {property:?} not found"
        )));
    }
    Ok(match found.kind() {
        gjson::Kind::String => SecretValue::new(found.str().as_bytes().to_vec()),
        _ => SecretValue::new(found.json().as_bytes().to_vec()),
    })
}

/// Splits a JSON object value into its top-level keys (ESO's `extract`): strings raw, other
/// values as compact JSON. Errors when the value is not a JSON object or exceeds
/// [`check_json_bounds`].
pub fn extract_object(key: &str, value: &SecretValue) -> Result<SecretMap, BuildError> {
    if let Some(text) = value.as_str() {
        check_json_bounds(key, text)?;
    }
    let parsed: serde_json::Value = value
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| {
            BuildError(format!(
                "{key:?}: value is not a JSON object, cannot extract its keys"
            ))
        })?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(BuildError(format!(
            "{key:?}: value is not a JSON object, cannot extract its keys"
        )));
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let bytes = match v {
                serde_json::Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            (k, SecretValue::new(bytes))
        })
        .collect())
}

/// `dataFrom.extract` of a document whose every leaf becomes a key (SOPS documents): nested
/// objects and lists are flattened, path segments joined with `.` (`db.password`, `hosts.0`,
/// `users.1.name`); strings as they are, numbers and booleans as JSON prints them, null as
/// empty. A scalar at the top, or a value over [`check_json_bounds`], is an error.
pub fn extract_leaves(key: &str, value: &SecretValue) -> Result<SecretMap, BuildError> {
    if let Some(text) = value.as_str() {
        check_json_bounds(key, text)?;
    }
    fn walk(prefix: &str, v: serde_json::Value, out: &mut SecretMap) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(&join(&k), v, out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    walk(&join(&i.to_string()), v, out);
                }
            }
            serde_json::Value::String(s) => {
                out.insert(prefix.to_string(), SecretValue::new(s.into_bytes()));
            }
            serde_json::Value::Null => {
                out.insert(prefix.to_string(), SecretValue::new(Vec::new()));
            }
            other => {
                out.insert(
                    prefix.to_string(),
                    SecretValue::new(other.to_string().into_bytes()),
                );
            }
        }
    }
    let parsed: serde_json::Value = value
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .filter(|v: &serde_json::Value| v.is_object() || v.is_array())
        .ok_or_else(|| {
            BuildError(format!(
                "{key:?}: value is not a JSON object or list, cannot extract its leaves"
            ))
        })?;
    let mut out = SecretMap::new();
    walk("", parsed, &mut out);
    Ok(out)
}

/// Whether ESO accepts `c` in a key it writes (`esutils.ValidateKeys`, `convert`): a Unicode
/// letter or number, `-`, `.` or `_`.
fn key_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || matches!(c, '-' | '.' | '_')
}

/// ESO's key conversion of `dataFrom` `extract`/`find` keys when the entry has no `rewrite`
/// (`esutils.ConvertKeys`): every other character becomes `_` (`Default`: SSM's
/// `/app/db/user` → `_app_db_user`, Vault's `app/db` → `app_db`) or `_U%04x_` (`Unicode`:
/// `/` → `_U002f_`).
pub fn convert_key(key: &str, strategy: ConversionStrategy) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if key_char(c) {
            out.push(c);
        } else {
            match strategy {
                ConversionStrategy::Default => out.push('_'),
                ConversionStrategy::Unicode => out.push_str(&format!("_U{:04x}_", c as u32)),
            }
        }
    }
    out
}

/// Longest Secret data key ESO writes (`esutils.ValidateKeys`), in bytes.
pub const MAX_KEY_BYTES: usize = 253;

/// ESO's check of the keys a `dataFrom` entry yields, after conversion or rewrite
/// (`esutils.ValidateKeys`): empty keys are dropped; a key over [`MAX_KEY_BYTES`] or with a
/// character outside letters, numbers, `-`, `.` and `_` is an error naming the key (a key,
/// never a value).
pub fn validate_keys(map: SecretMap) -> Result<SecretMap, BuildError> {
    let mut out = SecretMap::new();
    for (k, v) in map {
        if k.is_empty() {
            continue;
        }
        if k.len() > MAX_KEY_BYTES {
            return Err(BuildError(format!(
                "key {:?}... is {} bytes, over the {MAX_KEY_BYTES}-byte limit",
                k.chars().take(40).collect::<String>(),
                k.len()
            )));
        }
        if let Some(c) = k.chars().find(|c| !key_char(*c)) {
            return Err(BuildError(format!(
                "key {k:?} has the character {c:?}: only letters, numbers, '-', '.' and '_' are allowed (check dataFrom's rewrite)"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Applies `rewrite[]` in order to every key of `map`, as ESO's `RewriteMap`: `regexp`
/// replaces every match (Rust `regex` syntax, RE2's as Go's), `transform` renders its
/// template (ESO's engine v2, bounded as every template is) with `.value` set to the key,
/// `merge` merges the values' JSON objects ([`super::rewrite_merge`]).
/// Two keys rewritten to the same key keep the value of the later one in key order. Errors:
/// an invalid regexp or template, naming the rewrite's index and the key (a remote name,
/// never a value).
pub fn rewrite_keys(
    map: SecretMap,
    rewrites: &[ExternalSecretRewrite],
) -> Result<SecretMap, BuildError> {
    let mut map = map;
    for (i, rw) in rewrites.iter().enumerate() {
        if let Some(re) = &rw.regexp {
            let pattern = crate::regexes::compile(&re.source)
                .map_err(|e| BuildError(format!("rewrite regexp {:?}: {e}", re.source)))?;
            map = map
                .into_iter()
                .map(|(k, v)| (pattern.replace_all(&k, re.target.as_str()).into_owned(), v))
                .collect();
        } else if let Some(t) = &rw.transform {
            // Every key's render spends from one allowance: the ExternalSecret's, not the key's.
            let allowance = crate::template::Allowance::new();
            let mut out = SecretMap::new();
            for (k, v) in map {
                let input: SecretMap = [(
                    "value".to_string(),
                    SecretValue::new(k.clone().into_bytes()),
                )]
                .into();
                let renderer = crate::template::Renderer::within(&input, allowance.clone())
                    .map_err(BuildError)?;
                let rendered = renderer.render(&t.template).map_err(|cause| {
                    BuildError(format!("rewrite[{i}] transform of key {k:?}: {cause}"))
                })?;
                let key = String::from_utf8(rendered).map_err(|_| {
                    BuildError(format!(
                        "rewrite[{i}] transform of key {k:?}: the result is not UTF-8"
                    ))
                })?;
                out.insert(key, v);
            }
            map = out;
        } else if let Some(m) = &rw.merge {
            map = super::rewrite_merge::merge(m, map)?;
        }
    }
    Ok(map)
}

/// Whether `rewrites` hold a template (`transform`), which is run off the async workers.
pub fn rewrites_render(rewrites: &[ExternalSecretRewrite]) -> bool {
    rewrites.iter().any(|r| r.transform.is_some())
}

/// Lowercase hex SHA-256 over the data, keys in order, each entry as
/// `len(key) key len(value) value` (lengths as 8-byte big-endian) so no two maps collide.
pub fn data_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
    hex::encode(h.finalize())
}

/// Steps one template may take ([`crate::template::MAX_STEPS`]).
pub const TEMPLATE_FUEL: u64 = crate::template::MAX_STEPS;

/// Bytes one template may output ([`crate::template::MAX_OUTPUT_BYTES`]).
pub const TEMPLATE_MAX_OUTPUT: usize = crate::template::MAX_OUTPUT_BYTES;

/// Renders `template.data` over the fetched values with ESO's engine v2 (Go `text/template`
/// syntax and ESO's functions, see [`crate::template`] and `docs/migrating-from-eso.md`,
/// "Templates"): each fetched key is a field of `.` (`{{ .password }}`, or
/// `{{ index . "key-with-dashes" }}`).
///
/// Bounded per template (steps, output, memory, call depth: [`crate::template`]). A value that
/// is not UTF-8 stays bytes: printed, it is copied exactly; `b64enc` encodes it exactly.
/// Errors name the template's key and the failure, never a value.
pub fn render_templates(
    templates: &BTreeMap<String, String>,
    values: &SecretMap,
) -> Result<SecretMap, BuildError> {
    let renderer = crate::template::Renderer::new(values).map_err(BuildError)?;
    let mut out = SecretMap::new();
    for (key, source) in templates {
        let rendered = renderer
            .render(source)
            .map_err(|cause| BuildError(format!("template of key {key:?}: {cause}")))?;
        out.insert(key.clone(), SecretValue::new(rendered));
    }
    Ok(out)
}

/// Everything the desired Secret depends on besides the ExternalSecret.
pub struct BuildInput<'a> {
    /// Values after dataFrom/data, decoding and conversion; key → value.
    pub values: SecretMap,
    /// `<Kind>/<name>` of the store, for the `secret-relay.dev/store` annotation.
    pub store: &'a str,
    /// RFC 3339 time written to `secret-relay.dev/last-refresh`.
    pub now: &'a str,
}

/// Builds the desired Secret of `es` (a complete object for server-side apply): data (after
/// templates), type, labels and annotations (template metadata first, ours win),
/// `ownerReferences` (controller) under `creationPolicy: Owner`, and `immutable`. Without
/// `templateFrom` ConfigMaps or Secrets: see [`desired_secret_with`].
pub fn desired_secret(es: &ExternalSecret, input: BuildInput<'_>) -> Result<Secret, BuildError> {
    desired_secret_with(es, input, &TemplateSources::default())
}

/// [`desired_secret`] with the ConfigMaps and Secrets `template.templateFrom` names, as the
/// controller read them (see [`super::build_template`] for how templates apply).
pub fn desired_secret_with(
    es: &ExternalSecret,
    input: BuildInput<'_>,
    sources: &TemplateSources,
) -> Result<Secret, BuildError> {
    let template = es.spec.target.template.as_ref();
    let templated = super::build_template::apply_template(template, input.values, sources)?;
    check_privileged(
        template.and_then(|t| t.type_.as_deref()),
        &templated.annotations,
    )?;
    check_metadata(&templated.labels, &templated.annotations)?;
    let (values, template_labels, template_annotations) =
        (templated.data, templated.labels, templated.annotations);
    let data: BTreeMap<String, ByteString> = values
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.as_bytes().to_vec())))
        .collect();
    let hash = data_hash(&data);

    let mut labels = template_labels;
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(
        LABEL_EXTERNAL_SECRET.into(),
        es.metadata.name.clone().unwrap_or_default(),
    );
    let mut annotations = template_annotations;
    annotations.insert(
        ANNOTATION_REFRESH_INTERVAL.into(),
        es.spec.refresh_interval.clone(),
    );
    annotations.insert(ANNOTATION_LAST_REFRESH.into(), input.now.into());
    annotations.insert(ANNOTATION_DATA_HASH.into(), hash);
    annotations.insert(ANNOTATION_STORE.into(), input.store.into());

    let owner_references = (es.spec.target.creation_policy == CreationPolicy::Owner)
        .then(|| es.controller_owner_ref(&()))
        .flatten()
        .map(|o: OwnerReference| vec![o]);
    // Merge writes into someone else's Secret: the type stays theirs unless a template sets it
    // (a Secret CreateOrMerge creates is Opaque, the API server's default).
    let type_ = match template.and_then(|t| t.type_.clone()) {
        Some(t) => Some(t),
        None if es.spec.target.creation_policy.merges() => None,
        None => Some("Opaque".into()),
    };
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(es.target_name()),
            namespace: es.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        data: Some(data),
        type_,
        immutable: es.spec.target.immutable.then_some(true),
        ..Default::default()
    })
}

/// Checks the labels and annotations a template gives the Secret before any write, by the
/// API server's rules (`ValidateLabels`, `ValidateAnnotations`): keys are qualified names
/// (an optional DNS-subdomain prefix and `/`, then at most 63 characters of letters, digits,
/// `-`, `_`, `.`, beginning and ending with a letter or digit); label values are empty or a
/// name part of at most 63 characters; annotations total at most 256 KiB. Errors name the
/// key and the rule, never the value (a label value rendered from a secret would otherwise be
/// quoted back by the API server into the condition, the event and the log).
pub fn check_metadata(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<(), BuildError> {
    const NAME_RULE: &str = "at most 63 characters of letters, digits, '-', '_' and '.', beginning and ending with a letter or digit";
    fn name_part(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }
    fn dns_subdomain(s: &str) -> bool {
        s.len() <= 253
            && s.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b.len() <= 63
                    && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                    && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    }
    fn qualified(key: &str) -> bool {
        match key.split_once('/') {
            Some((prefix, name)) => dns_subdomain(prefix) && name_part(name),
            None => name_part(key),
        }
    }
    for (what, map) in [("label", labels), ("annotation", annotations)] {
        for key in map.keys() {
            if !qualified(key) {
                return Err(BuildError(format!(
                    "{what} key {key:?} is not a valid qualified name (an optional DNS subdomain and '/', then {NAME_RULE})"
                )));
            }
        }
    }
    for (key, value) in labels {
        if !value.is_empty() && !name_part(value) {
            return Err(BuildError(format!(
                "the value of label {key:?} is not a valid label value ({NAME_RULE})"
            )));
        }
    }
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 256 * 1024 {
        return Err(BuildError(format!(
            "the Secret's annotations are {total} bytes, over the API server's 262144"
        )));
    }
    Ok(())
}

/// ESO's `validatePrivilegedTemplate`: no Secret an ExternalSecret writes may make the
/// cluster mint a credential beyond its author's RBAC: `kubernetes.io/service-account-token`
/// with the `kubernetes.io/service-account.name` annotation (a long-lived token of that
/// ServiceAccount), from `metadata.annotations` or `templateFrom` alike (checked on the
/// rendered annotations), nor any `bootstrap.kubernetes.io/token`. Errors name the rule.
pub fn check_privileged(
    type_: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Result<(), BuildError> {
    match type_ {
        Some("kubernetes.io/service-account-token")
            if annotations.contains_key("kubernetes.io/service-account.name") =>
        {
            Err(BuildError(
                "template.type kubernetes.io/service-account-token with the annotation kubernetes.io/service-account.name is not allowed (it would mint a ServiceAccount token)".into(),
            ))
        }
        Some("bootstrap.kubernetes.io/token") => Err(BuildError(
            "template.type bootstrap.kubernetes.io/token is not allowed".into(),
        )),
        _ => Ok(()),
    }
}

/// True when `existing` already carries everything `desired` sets, ignoring the
/// `last-refresh` annotation: then no write is needed. Labels, annotations and owners follow
/// [`Fingerprint::covers`] (the rule the managed-Secret cache answers too). `exact`: the data
/// must be equal (we own the whole Secret); otherwise desired's keys must be present with
/// equal values (`Merge`).
pub fn is_up_to_date(existing: &Secret, desired: &Secret, exact: bool) -> bool {
    let empty = BTreeMap::new();
    let want = desired.data.as_ref().unwrap_or(&empty);
    let have = existing.data.as_ref().unwrap_or(&empty);
    let data_matches = if exact {
        want == have
    } else {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    Fingerprint::of(&existing.metadata).covers(&desired.metadata)
        && data_matches
        && (desired.type_.is_none() || existing.type_ == desired.type_)
        && (desired.immutable.is_none() || existing.immutable == desired.immutable)
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
