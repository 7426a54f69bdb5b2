//! Objects read back as written (issue 26): every manifest of our kinds in the repository
//! (examples/ as Kustomize builds its overlays, and as files; the YAML blocks of docs/ and
//! the READMEs) applied with `kubectl apply` client-side and server-side, then read back with
//! `kubectl get -o json`: the stored `spec` must equal the file's at every depth. A schema
//! default the API server writes into a list item (`data[].remoteRef.conversionStrategy`)
//! keeps Argo CD's diff OutOfSync for ever. (The ported ESO cases and every other test's
//! manifests are checked by `operator::apply_yaml` as they are applied.)

mod common;
mod operator;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use common::{TestEnv, random_suffix};
use operator::first_difference;

/// Our kinds, and whether each is namespaced.
const KINDS: [(&str, bool); 4] = [
    ("ExternalSecret", true),
    ("SecretStore", true),
    ("ClusterSecretStore", false),
    ("ClusterExternalSecret", false),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents of a YAML stream that are objects of our kinds, each with where it came from.
fn ours(source: &str, text: &str, out: &mut Vec<(String, Value)>) {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let Ok(value) = serde_json::to_value(
            <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or(serde_yaml::Value::Null),
        ) else {
            continue;
        };
        let ours = value["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("secret-relay.dev/"))
            && KINDS.iter().any(|(k, _)| value["kind"] == *k);
        if ours {
            out.push((format!("{source} #{i}"), value));
        }
    }
}

/// The ```yaml blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn files(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path
            .extension()
            .is_some_and(|e| ext.iter().any(|x| e == *x))
        {
            out.push(path);
        }
    }
}

/// Every manifest of our kinds in the repository.
fn manifests(kubectl: &Path) -> Vec<(String, Value)> {
    let root = repo();
    let mut found = Vec::new();
    // examples/ as its users apply it: `kubectl apply -k` of each overlay...
    for overlay in ["examples/overlays/dev", "examples/overlays/prod"] {
        let out = Command::new(kubectl)
            .arg("kustomize")
            .arg(root.join(overlay))
            .output()
            .expect("kubectl kustomize");
        assert!(
            out.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ours(overlay, &String::from_utf8_lossy(&out.stdout), &mut found);
    }
    // ...and every file of it.
    let mut yaml = Vec::new();
    files(&root.join("examples"), &["yaml", "yml"], &mut yaml);
    for path in yaml {
        let text = std::fs::read_to_string(&path).unwrap();
        ours(&path.display().to_string(), &text, &mut found);
    }
    // The YAML blocks of the docs.
    let mut markdown = vec![
        root.join("README.md"),
        root.join("examples/README.md"),
        root.join("charts/secret-relay/README.md"),
    ];
    files(&root.join("docs"), &["md"], &mut markdown);
    for path in markdown {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, block) in yaml_blocks(&text).iter().enumerate() {
            ours(&format!("{} block {i}", path.display()), block, &mut found);
        }
    }
    found
}

/// `kubectl ARGS` with the environment's kubeconfig; panics with its stderr on failure.
fn kubectl(env: &TestEnv, args: &[&str], stdin: Option<&Path>) -> String {
    let mut cmd = Command::new(env.tool("KUBECTL"));
    cmd.args(args).env("KUBECONFIG", &env.kubeconfig);
    if let Some(file) = stdin {
        cmd.arg("-f").arg(file);
    }
    let out = cmd.output().expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn every_manifest_reads_back_as_written_client_and_server_side() {
    let Some(env) = TestEnv::get("every_manifest_reads_back_as_written").await else {
        return;
    };
    operator::install_crds(&env.kube).await;
    let found = manifests(&env.tool("KUBECTL"));
    let kinds: std::collections::BTreeSet<&str> = found
        .iter()
        .filter_map(|(_, v)| v["kind"].as_str())
        .collect();
    println!("{} manifests of kinds {kinds:?}", found.len());
    assert!(
        found.len() >= 10,
        "too few manifests found: {}",
        found.len()
    );
    assert!(kinds.contains("ExternalSecret") && kinds.contains("SecretStore"));
    let dir = std::env::temp_dir().join(format!("read-back-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for side in ["client", "server"] {
        let ns = env.namespace(&format!("read-back-{side}")).await;
        for (i, (source, manifest)) in found.iter().enumerate() {
            let kind = manifest["kind"].as_str().unwrap();
            let namespaced = KINDS.iter().any(|(k, n)| *k == kind && *n);
            let mut object = manifest.clone();
            let meta = object["metadata"].as_object_mut().expect("metadata");
            // Each object in the test's namespace, a cluster-scoped one under a name of its own.
            let name = if namespaced {
                meta.insert("namespace".into(), Value::String(ns.clone()));
                format!("{}-{i}", meta["name"].as_str().unwrap())
            } else {
                format!("{}-{}", meta["name"].as_str().unwrap(), random_suffix())
            };
            meta.insert("name".into(), Value::String(name.clone()));
            let file = dir.join(format!("{side}-{i}.json"));
            std::fs::write(&file, serde_json::to_vec(&object).unwrap()).unwrap();
            let mut args = vec!["apply"];
            if side == "server" {
                args.extend(["--server-side", "--field-manager", "read-back-test"]);
            }
            kubectl(&env, &args, Some(&file));
            let mut get = vec!["get", kind, &name, "-o", "json"];
            if namespaced {
                get.extend(["-n", &ns]);
            }
            let stored: Value = serde_json::from_str(&kubectl(&env, &get, None)).unwrap();
            if let Some(diff) = first_difference(&object["spec"], &stored["spec"], "spec") {
                failures.push(format!("{side}-side {source} ({kind}): {diff}"));
            }
            if !namespaced {
                kubectl(&env, &["delete", kind, &name], None);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "objects that do not read back as written:\n{}",
        failures.join("\n")
    );
}

/// The reader itself: a default written into a list item is found.
#[test]
fn a_default_in_a_list_item_is_a_difference() {
    let written = serde_json::json!({"data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]});
    let stored = serde_json::json!({"data": [{"secretKey": "a", "remoteRef": {"key": "k", "conversionStrategy": "Default"}}]});
    assert_eq!(
        first_difference(&written, &stored, "spec"),
        Some(
            "spec.data[0].remoteRef.conversionStrategy: written None, stored Some(String(\"Default\"))"
                .into()
        )
    );
    assert_eq!(first_difference(&written, &written, "spec"), None);
}
