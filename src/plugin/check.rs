//! `kubectl secret-relay check FILE|DIR…`: offline validation of manifests against
//! secret-relay's CRDs, as the API server would judge them on `kubectl apply` (strict field
//! validation): every field known to the schema (`openAPIV3Schema` of [`crate::crds`]), of the
//! right type, in its `enum`, `required` fields present, and every `x-kubernetes-validations`
//! CEL rule true (evaluated with the `cel` crate, `self` bound to the object at the rule's
//! place). An unknown field is reported as one secret-relay does not have (an ESO field:
//! docs/migrating-from-eso.md says what to do); a document of ESO's `external-secrets.io` API
//! as one to `migrate`. Each finding names the file, the line and the field's path.
//!
//! Exit code 1 when anything is found, for CI.

use std::{fmt, path::PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

use super::{Error, Outcome, documents, read, yaml_files};

/// `check`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories (walked for `.yaml`/`.yml`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `file:line`.
    pub at: String,
    /// `ExternalSecret/app-db`.
    pub object: String,
    /// `spec.data[0].remoteRef.key`, empty for the whole object.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}: {}", self.at, self.object, self.message)
        } else {
            write!(
                f,
                "{}: {}: {}: {}",
                self.at, self.object, self.path, self.message
            )
        }
    }
}

/// A step of a field path: a key, or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The schema of `kind` at `api_version` (`<group>/<version>`) in secret-relay's CRDs, if it
/// is one of ours.
fn schema_of(api_version: &str, kind: &str) -> Option<JSONSchemaProps> {
    crate::crds().into_iter().find_map(|crd| {
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| format!("{}/{}", crd.spec.group, v.name) == api_version)?;
        (crd.spec.names.kind == kind)
            .then(|| version.schema.as_ref()?.open_api_v3_schema.clone())
            .flatten()
    })
}

/// Checks one document (parsed from YAML) against its kind's schema; findings with `path`s.
fn check_value(value: &Value) -> Vec<(Vec<Seg>, String)> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    let ours = api_version == "secret-relay.dev/v1alpha1"
        || api_version == "generators.secret-relay.dev/v1alpha1";
    if api_version.starts_with("external-secrets.io/")
        || api_version.starts_with("generators.external-secrets.io/")
    {
        return vec![(
            vec![Seg::Key("apiVersion".into())],
            format!(
                "{api_version} is External Secrets Operator's API: `kubectl secret-relay migrate` rewrites it"
            ),
        )];
    }
    if !ours {
        return Vec::new();
    }
    let Some(schema) = schema_of(api_version, kind) else {
        return vec![(
            vec![Seg::Key("kind".into())],
            format!("{api_version} has no kind {kind:?}"),
        )];
    };
    let mut findings = Vec::new();
    // The API server checks metadata itself (the schema says only `type: object`), and the
    // type fields are the object's address, not part of its schema.
    let mut body = value.clone();
    if let Some(map) = body.as_object_mut() {
        for field in ["apiVersion", "kind", "metadata"] {
            map.remove(field);
        }
    }
    walk(&schema, &body, &mut Vec::new(), &mut findings);
    findings
}

fn type_matches(ty: &str, value: &Value, int_or_string: bool) -> bool {
    if int_or_string {
        return value.is_string() || value.is_i64() || value.is_u64();
    }
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn walk(
    schema: &JSONSchemaProps,
    value: &Value,
    path: &mut Vec<Seg>,
    out: &mut Vec<(Vec<Seg>, String)>,
) {
    if value.is_null() {
        if schema.nullable != Some(true) {
            out.push((path.clone(), "null is not allowed here".into()));
        }
        return;
    }
    if let Some(ty) = &schema.type_
        && !type_matches(ty, value, schema.x_kubernetes_int_or_string == Some(true))
    {
        out.push((path.clone(), format!("must be of type {ty}")));
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *value)
    {
        let names: Vec<String> = allowed.iter().map(|a| a.0.to_string()).collect();
        out.push((path.clone(), format!("must be one of {}", names.join(", "))));
    }
    match value {
        Value::Object(map) => {
            for field in schema.required.iter().flatten() {
                if !map.contains_key(field) {
                    out.push((path.clone(), format!("required field {field:?} is missing")));
                }
            }
            for (k, v) in map {
                path.push(Seg::Key(k.clone()));
                match schema.properties.as_ref().and_then(|p| p.get(k)) {
                    Some(s) => walk(s, v, path, out),
                    None => match &schema.additional_properties {
                        Some(JSONSchemaPropsOrBool::Schema(s)) => walk(s, v, path, out),
                        Some(JSONSchemaPropsOrBool::Bool(true)) => {}
                        _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                        _ => out.push((
                            path.clone(),
                            "unknown field: secret-relay has no such field (an ESO field? see docs/migrating-from-eso.md)".into(),
                        )),
                    },
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(s)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(s, v, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        match cel_rule(&rule.rule, value) {
            Ok(true) => {}
            Ok(false) => out.push((
                path.clone(),
                rule.message
                    .clone()
                    .unwrap_or_else(|| format!("failed rule: {}", rule.rule)),
            )),
            Err(e) => out.push((path.clone(), format!("rule {:?}: {e}", rule.rule))),
        }
    }
}

/// Evaluates a CEL `rule` with `self` = `value`.
fn cel_rule(rule: &str, value: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(rule).map_err(|e| e.to_string())?;
    let mut context = cel::Context::default();
    let this = cel::to_value(value).map_err(|e| e.to_string())?;
    context.add_variable_from_value("self", this);
    match program.execute(&context).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("not a boolean: {other:?}")),
    }
}

/// The 1-based line (in `text`, a document starting at `first_line`) where `path` is written,
/// for block-style YAML; the closest enclosing field's line when the path cannot be followed
/// (flow style).
fn locate(text: &str, first_line: usize, path: &[Seg]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut from, mut parent_indent, mut found) = (0usize, None::<usize>, 0usize);
    for seg in path {
        let mut hit = None;
        let mut index = 0usize;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let ind = indent(line);
            if i > from && parent_indent.is_some_and(|p| ind <= p) && !trimmed.starts_with("- ") {
                break;
            }
            match seg {
                Seg::Key(k) => {
                    let content = trimmed.strip_prefix("- ").unwrap_or(trimmed);
                    if content.starts_with(&format!("{k}:"))
                        && parent_indent.is_none_or(|p| ind > p || trimmed.starts_with("- "))
                    {
                        hit = Some((i, ind + (trimmed.len() - content.len())));
                        break;
                    }
                }
                Seg::Index(n) => {
                    if trimmed.starts_with("- ") || trimmed == "-" {
                        if index == *n {
                            hit = Some((i, ind));
                            break;
                        }
                        index += 1;
                    }
                }
            }
        }
        match hit {
            Some((i, ind)) => {
                found = i;
                from = match seg {
                    Seg::Key(_) => i + 1,
                    // The item's own first key is on its dash line.
                    Seg::Index(_) => i,
                };
                parent_indent = Some(ind);
            }
            None => break,
        }
    }
    first_line + found
}

/// Checks every document of `text` (from `file`).
pub fn check_text(file: &str, text: &str) -> Result<Vec<Finding>, Error> {
    let mut findings = Vec::new();
    for (line, doc) in documents(text) {
        let value: Value = match serde_yaml::from_str::<serde_yaml::Value>(&doc) {
            Ok(v) => {
                serde_json::to_value(v).map_err(|e| Error::Input(format!("{file}:{line}: {e}")))?
            }
            Err(e) => {
                findings.push(Finding {
                    at: format!("{file}:{line}"),
                    object: "?".into(),
                    path: String::new(),
                    message: format!("not YAML: {e}"),
                });
                continue;
            }
        };
        let object = format!(
            "{}/{}",
            value["kind"].as_str().unwrap_or("?"),
            value["metadata"]["name"].as_str().unwrap_or("?")
        );
        for (path, message) in check_value(&value) {
            findings.push(Finding {
                at: format!("{file}:{}", locate(&doc, line, &path)),
                object: object.clone(),
                path: path_text(&path),
                message,
            });
        }
    }
    Ok(findings)
}

/// Runs `check`: prints each finding and a summary; all well when nothing was found.
pub fn run(args: Args) -> Outcome {
    let files = yaml_files(&args.paths)?;
    let mut count = 0;
    for file in &files {
        let text = read(file)?;
        for f in check_text(&file.display().to_string(), &text)? {
            count += 1;
            println!("{f}");
        }
    }
    println!("{} file(s) checked, {count} problem(s)", files.len());
    Ok(count == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_external_secret_has_no_finding() {
        let text = "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {name: ok}\nspec:\n  secretStoreRef: {name: s}\n  data:\n  - secretKey: a\n    remoteRef: {key: /a}\n";
        assert_eq!(check_text("es.yaml", text).unwrap(), []);
    }

    #[test]
    fn unknown_fields_cel_rules_enums_and_types_are_found_with_their_lines() {
        let text = r#"# an ExternalSecret as ESO users write it
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata:
  name: app
spec:
  secretStoreRef:
    name: s
  target:
    creationPolicy: Sometimes
  dataFrom:
  - extract:
      key: /a
    find:
      path: /b
  data:
  - secretKey: a
    remoteRef:
      key: /a
      unknownThing: x
---
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {name: s}
spec:
  provider:
    aws:
      region: eu-west-1
      externalID: abc
    vault:
      server: https://vault
"#;
        let found: Vec<String> = check_text("f.yaml", text)
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "f.yaml:20: ExternalSecret/app: spec.data[0].remoteRef.unknownThing: unknown field: secret-relay has no such field (an ESO field? see docs/migrating-from-eso.md)",
                "f.yaml:12: ExternalSecret/app: spec.dataFrom[0]: exactly one of extract and find must be set in a dataFrom entry (or sourceRef.generatorRef alone)",
                "f.yaml:10: ExternalSecret/app: spec.target.creationPolicy: must be one of \"Owner\", \"Orphan\", \"Merge\", \"None\", \"CreateOrMerge\"",
                "f.yaml:29: SecretStore/s: spec.provider.aws.externalID: unknown field: secret-relay has no such field (an ESO field? see docs/migrating-from-eso.md)",
                "f.yaml:30: SecretStore/s: spec.provider.vault: required field \"auth\" is missing",
                "f.yaml:26: SecretStore/s: spec.provider: exactly one provider must be set: aws, vault or kms",
            ]
        );
    }

    #[test]
    fn generators_are_checked_against_their_own_group() {
        let ok = "apiVersion: generators.secret-relay.dev/v1alpha1\nkind: Password\nmetadata: {name: pw}\nspec: {length: 32, digits: 4}\n";
        assert_eq!(check_text("g.yaml", ok).unwrap(), []);
        let wrong_group = "apiVersion: secret-relay.dev/v1alpha1\nkind: Password\nmetadata: {name: pw}\nspec: {length: 32}\n";
        let found = check_text("g.yaml", wrong_group).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].message,
            "secret-relay.dev/v1alpha1 has no kind \"Password\""
        );
    }

    #[test]
    fn an_eso_document_is_sent_to_migrate() {
        let text = "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: x}\nspec: {}\n";
        let found = check_text("x.yaml", text).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("migrate"), "{}", found[0]);
        assert_eq!(found[0].at, "x.yaml:1");
    }
}
