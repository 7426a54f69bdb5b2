//! kube-apiserver's CPU profile under the floor and under the initial sync (issue 28: where
//! the API server's CPU beyond the floor's goes), when `SECRET_RELAY_BENCH_PPROF_SECS` is set
//! (hack/bench.sh then starts the test environment's API server with `--profiling`).
//!
//! Each profile is Go's `/debug/pprof/profile?seconds=S`, read with `kubectl get --raw` (the
//! admin kubeconfig) from [`DELAY`] after its phase starts, and saved as
//! `<log_dir>/apiserver-<phase>-<N>.pprof` for `go tool pprof` (`-top`, or `-diff_base` the
//! floor's). The phase should outlast `DELAY + S`, or the profile's tail is of the next phase:
//! at N = 10,000 the floor takes about 28 s and the initial sync about 45 s, so S = 20 fits.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinHandle;

use super::Params;
use crate::common::TestEnv;

/// How long after its phase starts a profile begins: past the phase's first requests.
const DELAY: Duration = Duration::from_secs(3);

/// A profile being taken in the background: its phase, seconds and task (none when
/// `pprof_secs` is 0).
pub struct Profile(Option<(String, u64, JoinHandle<Result<PathBuf>>)>);

/// Starts taking the profile of `phase` (a file-name word: `floor`, `initial-sync`).
pub fn start(env: &TestEnv, p: &Params, phase: &str) -> Profile {
    if p.pprof_secs == 0 {
        return Profile(None);
    }
    let kubectl = env.tool("KUBECTL");
    let kubeconfig = env.kubeconfig.clone();
    let secs = p.pprof_secs;
    let path = p.log_dir.join(format!("apiserver-{phase}-{}.pprof", p.n));
    let task = tokio::spawn(async move {
        tokio::time::sleep(DELAY).await;
        let out = tokio::process::Command::new(kubectl)
            .args([
                "get",
                "--raw",
                &format!("/debug/pprof/profile?seconds={secs}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running kubectl get --raw /debug/pprof/profile")?;
        if !out.status.success() {
            bail!(
                "kubectl get --raw /debug/pprof/profile: {} (is the API server started with \
                 --profiling? hack/bench.sh does so when SECRET_RELAY_BENCH_PPROF_SECS is set)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::create_dir_all(path.parent().expect("a file in log_dir"))?;
        std::fs::write(&path, &out.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    });
    Profile(Some((phase.to_string(), secs, task)))
}

impl Profile {
    /// Waits for the profile; a line for the run's observations: where it is, or why not.
    pub async fn finish(self) -> Option<String> {
        let (phase, secs, task) = self.0?;
        Some(match task.await {
            Ok(Ok(path)) => format!(
                "kube-apiserver's CPU profile of the {phase}: {secs} s from {} s after it \
                 started, in {} (`go tool pprof -top`)",
                DELAY.as_secs(),
                path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(&path)
                    .display()
            ),
            Ok(Err(e)) => format!("kube-apiserver's CPU profile of the {phase} failed: {e:#}"),
            Err(e) => format!("kube-apiserver's CPU profile of the {phase} failed: {e}"),
        })
    }
}
