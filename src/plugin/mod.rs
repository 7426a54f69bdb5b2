//! `kubectl secret-relay …`: the day-two commands for the people who run the operator, in the
//! same binary (installed a second time, or linked, as `kubectl-secret_relay`, which kubectl
//! runs for `kubectl secret-relay`; `secret-relay status …` works the same).
//!
//! - [`status`]: what is not Ready, and why, grouped by namespace;
//! - [`sync`]: force a refresh (the `secret-relay.dev/force-sync` annotation) and wait for the
//!   outcome of each object;
//! - [`render`]: the Secret an ExternalSecret would produce from given remote values, built by
//!   the operator's own code;
//! - [`check`]: offline validation of manifests against the CRDs' schemas and CEL rules, and the
//!   ESO fields secret-relay does not have;
//! - [`migrate`]: ESO manifests rewritten to secret-relay's API.
//!
//! Output goes to stdout; the exit code is 0 when all is well, 1 when something the command
//! looked at is not (an object not Ready, a failed sync, an invalid manifest), 2 for a usage
//! or connection error.

pub mod check;
pub mod migrate;
pub mod render;
pub mod status;
pub mod sync;

use std::path::{Path, PathBuf};

/// The plugin's subcommands (flattened into the binary's own).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// ExternalSecrets, stores and ClusterExternalSecrets that are not Ready, with why.
    Status(status::Args),
    /// Force a refresh of ExternalSecrets and wait for the outcome.
    Sync(sync::Args),
    /// Print the Secret an ExternalSecret would produce from given remote values.
    Render(render::Args),
    /// Validate manifests offline against secret-relay's CRDs (schemas and CEL rules).
    Check(check::Args),
    /// Rewrite External Secrets Operator manifests to secret-relay's API.
    Migrate(migrate::Args),
}

/// A failure of a plugin command (exit code 2), as opposed to a finding (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster could not be reached or refused a request.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// No kubeconfig, or a broken one.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Input that cannot be used (a manifest that does not parse, a bad flag combination).
    #[error("{0}")]
    Input(String),
}

/// What a command found: `Ok(true)` when all is well (exit 0), `Ok(false)` when not (exit 1).
pub type Outcome = Result<bool, Error>;

/// Runs `command`; returns whether all was well.
pub async fn run(command: Command) -> Outcome {
    match command {
        Command::Status(args) => status::run(args).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Render(args) => render::run(args).await,
        Command::Check(args) => check::run(args),
        Command::Migrate(args) => migrate::run(args),
    }
}

/// A client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster account,
/// and its default namespace (the context's, else `default`).
pub async fn client() -> Result<(kube::Client, String), Error> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)?;
    Ok((client, namespace))
}

/// The YAML files named by `paths`: files as given, directories walked (`.yaml`, `.yml`),
/// in name order.
pub fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| io(path, source))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let nested: Vec<PathBuf> = entries
                .into_iter()
                .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            out.extend(yaml_files(&nested)?);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Reads `path` as text.
pub fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The documents of a YAML stream with the line each starts on (1-based), empty ones left out.
pub fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
            continue;
        }
        if current.is_empty() && line.trim().is_empty() {
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start, current));
    }
    docs
}

/// How long ago `time` was, for humans: `42s`, `5m`, `3h`, `2d`.
pub fn ago(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    let secs = k8s_openapi::jiff::Timestamp::now()
        .duration_since(time.0)
        .as_secs()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_first_line() {
        let text = "# c\napiVersion: v1\nkind: A\n---\n\n---\nkind: B\n\nx: 1\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 1);
        assert_eq!(docs[1].0, 7);
        assert!(docs[1].1.starts_with("kind: B"));
    }
}
