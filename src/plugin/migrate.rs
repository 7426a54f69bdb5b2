//! `kubectl secret-relay migrate FILE|DIR… [--in-place]`: External Secrets Operator manifests
//! rewritten to secret-relay's API, as docs/migrating-from-eso.md says: the `apiVersion` of
//! ESO's `ExternalSecret`, `SecretStore`, `ClusterSecretStore` and `ClusterExternalSecret`
//! (`external-secrets.io/v1`, `v1beta1`) becomes `secret-relay.dev/v1alpha1`, and that of its
//! `Password` and `VaultDynamicSecret` generators (`generators.external-secrets.io/v1alpha1`)
//! `generators.secret-relay.dev/v1alpha1`; the text is
//! otherwise kept as written (comments, order, Kustomize patches around it). Then every
//! migrated document is checked ([`super::check`]) and what cannot be migrated is listed on
//! stderr: kinds secret-relay has not (PushSecret, generators), providers it has not, fields it
//! has not, each with file, line and path.
//!
//! Without `--in-place` the result is printed (one YAML stream per file, `# file:` headers
//! when several); exit code 1 when something cannot be migrated.

use std::path::{Path, PathBuf};

use super::{Error, Outcome, check, documents, read, yaml_files};

/// `migrate`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories (walked for `.yaml`/`.yml`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Rewrite the files instead of printing the result.
    #[arg(long)]
    pub in_place: bool,
}

/// The kinds secret-relay serves under `secret-relay.dev/v1alpha1`.
const KINDS: [&str; 4] = [
    "ExternalSecret",
    "SecretStore",
    "ClusterSecretStore",
    "ClusterExternalSecret",
];
/// The generator kinds secret-relay serves under `generators.secret-relay.dev/v1alpha1`.
const GENERATOR_KINDS: [&str; 2] = ["Password", "VaultDynamicSecret"];

/// Our apiVersion for ESO's `api_version` and `kind`, if secret-relay has that kind.
fn ours(api_version: &str, kind: &str) -> Option<&'static str> {
    if api_version.starts_with("generators.external-secrets.io/") {
        GENERATOR_KINDS
            .contains(&kind)
            .then_some("generators.secret-relay.dev/v1alpha1")
    } else {
        KINDS.contains(&kind).then_some("secret-relay.dev/v1alpha1")
    }
}

/// The result of migrating one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// The file's new text.
    pub text: String,
    /// Documents rewritten.
    pub rewritten: usize,
    /// What cannot be migrated, `file:line: object: [path: ]why`.
    pub left: Vec<String>,
}

/// Migrates the text of `file`.
pub fn migrate_text(file: &str, text: &str) -> Result<Migrated, Error> {
    let mut out = Migrated::default();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (first, doc) in documents(text) {
        let value: serde_yaml::Value = match serde_yaml::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                out.left.push(format!("{file}:{first}: not YAML: {e}"));
                continue;
            }
        };
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("?");
        let eso = api_version.starts_with("external-secrets.io/")
            || api_version.starts_with("generators.external-secrets.io/");
        if !eso {
            continue;
        }
        let Some(target) = ours(api_version, kind) else {
            out.left.push(format!(
                "{file}:{first}: {kind}/{name}: secret-relay has no kind {kind} ({api_version}); left as it is"
            ));
            continue;
        };
        // The `apiVersion:` line of this document (top level: no indentation).
        let doc_lines = doc.lines().count();
        let Some(at) = (first - 1..(first - 1 + doc_lines).min(lines.len()))
            .find(|i| lines[*i].starts_with("apiVersion:"))
        else {
            out.left.push(format!(
                "{file}:{first}: {kind}/{name}: apiVersion is not a top-level line; left as it is"
            ));
            continue;
        };
        lines[at] = format!("apiVersion: {target}");
        out.rewritten += 1;
        let migrated: String = lines[first - 1..(first - 1 + doc_lines).min(lines.len())]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        for f in check::check_text(file, &migrated)? {
            let line =
                f.at.rsplit(':')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| n + first - 1)
                    .unwrap_or(first);
            let path = if f.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", f.path)
            };
            out.left
                .push(format!("{file}:{line}: {}: {path}{}", f.object, f.message));
        }
    }
    out.text = lines.join("\n");
    if text.ends_with('\n') {
        out.text.push('\n');
    }
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `migrate`.
pub fn run(args: Args) -> Outcome {
    let files = yaml_files(&args.paths)?;
    let (mut rewritten, mut left) = (0, 0);
    for file in &files {
        let text = read(file)?;
        let m = migrate_text(&file.display().to_string(), &text)?;
        rewritten += m.rewritten;
        left += m.left.len();
        for l in &m.left {
            eprintln!("{l}");
        }
        if args.in_place {
            if m.rewritten > 0 {
                write(file, &m.text)?;
            }
        } else {
            if files.len() > 1 {
                println!("# file: {}", file.display());
            }
            print!("{}", m.text);
        }
    }
    eprintln!("{rewritten} object(s) migrated, {left} thing(s) left to do by hand");
    Ok(left == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eso_objects_get_our_api_version_and_the_rest_stays_as_written() {
        let text = r#"# the app's secrets
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: db # keep me
spec:
  secretStoreRef: {name: aws}
  data:
  - secretKey: password
    remoteRef: {key: /db/password}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: external-secrets.io/v1beta1
kind: SecretStore
metadata: {name: aws}
spec:
  provider:
    aws:
      service: SecretsManager
      region: eu-west-1
      externalID: abc
---
apiVersion: external-secrets.io/v1alpha1
kind: PushSecret
metadata: {name: push}
---
apiVersion: generators.external-secrets.io/v1alpha1
kind: Password
metadata: {name: pw}
spec: {length: 32}
"#;
        let m = migrate_text("s.yaml", text).unwrap();
        assert_eq!(m.rewritten, 3);
        assert_eq!(
            m.text,
            text.replacen(
                "apiVersion: external-secrets.io/v1\n",
                "apiVersion: secret-relay.dev/v1alpha1\n",
                1
            )
            .replacen(
                "apiVersion: external-secrets.io/v1beta1\n",
                "apiVersion: secret-relay.dev/v1alpha1\n",
                1
            )
            .replacen(
                "apiVersion: generators.external-secrets.io/v1alpha1\n",
                "apiVersion: generators.secret-relay.dev/v1alpha1\n",
                1
            )
        );
        assert_eq!(
            m.left,
            [
                "s.yaml:24: SecretStore/aws: spec.provider.aws.externalID: unknown field: secret-relay has no such field (an ESO field? see docs/migrating-from-eso.md)",
                "s.yaml:26: PushSecret/push: secret-relay has no kind PushSecret (external-secrets.io/v1alpha1); left as it is",
            ]
        );
    }
}
