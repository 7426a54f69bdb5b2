//! kube-apiserver's CPU profile under the floor and under the initial sync (issue 28: where
//! the API server's CPU beyond the floor's goes), when `SECRET_RELAY_BENCH_PPROF_SECS` is set
//! (hack/bench.sh then starts the test environment's API server with `--profiling`).
//!
//! Each profile is Go's `/debug/pprof/profile?seconds=S`, read with `kubectl get --raw` (the
//! admin kubeconfig) from `pprof_delay_secs` (D) after its phase starts, and saved as
//! `<log_dir>/apiserver-<phase>-<N>.pprof` for `go tool pprof` (`-top`, or `-diff_base` the
//! floor's). Two uses:
//! - a window of the phase's middle: D = 3 (past its first requests) and a phase that outlasts
//!   D + S; at N = 10,000 the floor takes about 28 s and the initial sync about 45 s, so S = 20
//!   fits;
//! - the whole phase: D = 0 and S longer than the phase. The run waits for the profile before
//!   its next phase, so the profile's tail is of an idle API server (its own background work,
//!   which the floor's profile has too), never of the next phase.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinHandle;

use super::Params;
use crate::common::TestEnv;

/// A profile being taken in the background: its phase, seconds, delay and task (none when
/// `pprof_secs` is 0).
pub struct Profile(Option<(String, u64, u64, JoinHandle<Result<PathBuf>>)>);

/// Starts taking the profile of `phase` (a file-name word: `floor`, `initial-sync`).
pub fn start(env: &TestEnv, p: &Params, phase: &str) -> Profile {
    if p.pprof_secs == 0 {
        return Profile(None);
    }
    let kubectl = env.tool("KUBECTL");
    let kubeconfig = env.kubeconfig.clone();
    let secs = p.pprof_secs;
    let delay = Duration::from_secs(p.pprof_delay_secs);
    let path = p.log_dir.join(format!("apiserver-{phase}-{}.pprof", p.n));
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
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
    Profile(Some((phase.to_string(), secs, p.pprof_delay_secs, task)))
}

impl Profile {
    /// Waits for the profile; a line for the run's observations: where it is, or why not.
    pub async fn finish(self) -> Option<String> {
        let (phase, secs, delay, task) = self.0?;
        Some(match task.await {
            Ok(Ok(path)) => format!(
                "kube-apiserver's CPU profile of the {phase}: {secs} s from {} s after it \
                 started, in {} (`go tool pprof -top`)",
                delay,
                path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(&path)
                    .display()
            ),
            Ok(Err(e)) => format!("kube-apiserver's CPU profile of the {phase} failed: {e:#}"),
            Err(e) => format!("kube-apiserver's CPU profile of the {phase} failed: {e}"),
        })
    }
}
