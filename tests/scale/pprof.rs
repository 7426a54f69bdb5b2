//! kube-apiserver's CPU profile under the floor and under the initial sync (issue 28: where
//! the API server's CPU beyond the floor's goes), when `SECRET_RELAY_BENCH_PPROF_SECS` is set
//! (hack/bench.sh then starts the test environment's API server with `--profiling`).
//!
//! Each profile is Go's `/debug/pprof/profile?seconds=S`, read with `kubectl get --raw` (the
//! admin kubeconfig), for `go tool pprof` (`-top`, or `-diff_base` the floor's). Two uses:
//! - a window of the phase's middle (`pprof_whole` false): one profile of S seconds from
//!   [`DELAY`] after the phase starts, `<log_dir>/apiserver-<phase>-<N>.pprof`. The phase
//!   should outlast `DELAY + S`; at N = 10,000 the floor takes about 28 s and the initial sync
//!   about 45 s, so S = 20 fits;
//! - the whole phase (`pprof_whole`): profiles of S seconds back to back from the phase's
//!   start until it ends, `<log_dir>/apiserver-<phase>-<N>-<K>.pprof` (K = 0, 1, ...; `go tool
//!   pprof` merges the files it is given). The run waits for the last one before its next step,
//!   so at most S seconds of an idle API server are in it after the phase, never the next
//!   phase: S = 5 keeps that small however long the phase takes.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinHandle;

use super::Params;
use crate::common::TestEnv;

/// How long after its phase starts a window profile begins: past the phase's first requests.
const DELAY: Duration = Duration::from_secs(3);

/// A profile being taken in the background (none when `pprof_secs` is 0).
pub struct Profile(Option<Taking>);

struct Taking {
    /// The phase's file-name word.
    phase: String,
    /// What the profile covers, for the run's notes.
    what: String,
    /// Ends a whole-phase profile after its current chunk.
    stop: Arc<AtomicBool>,
    /// The profile's files once taken.
    task: JoinHandle<Result<Vec<PathBuf>>>,
}

/// One profile of `secs` seconds into `path`.
async fn take(kubectl: &Path, kubeconfig: &Path, secs: u64, path: &Path) -> Result<()> {
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
    std::fs::write(path, &out.stdout).with_context(|| format!("writing {}", path.display()))
}

/// Starts taking the profile of `phase` (a file-name word: `floor`, `initial-sync`).
pub fn start(env: &TestEnv, p: &Params, phase: &str) -> Profile {
    if p.pprof_secs == 0 {
        return Profile(None);
    }
    let kubectl = env.tool("KUBECTL");
    let kubeconfig = env.kubeconfig.clone();
    let secs = p.pprof_secs;
    let stop = Arc::new(AtomicBool::new(false));
    let (what, task) = if p.pprof_whole {
        let stem = p.log_dir.join(format!("apiserver-{phase}-{}", p.n));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            // Earlier chunks of the same name are of an earlier run.
            for k in 0.. {
                let path = PathBuf::from(format!("{}-{k}.pprof", stem.display()));
                if std::fs::remove_file(&path).is_err() {
                    break;
                }
            }
            let mut paths = Vec::new();
            while !stopped.load(Ordering::Acquire) {
                let path = PathBuf::from(format!("{}-{}.pprof", stem.display(), paths.len()));
                take(&kubectl, &kubeconfig, secs, &path).await?;
                paths.push(path);
            }
            Ok(paths)
        });
        (format!("the whole phase in profiles of {secs} s"), task)
    } else {
        let path = p.log_dir.join(format!("apiserver-{phase}-{}.pprof", p.n));
        let task = tokio::spawn(async move {
            tokio::time::sleep(DELAY).await;
            take(&kubectl, &kubeconfig, secs, &path).await?;
            Ok(vec![path])
        });
        (
            format!("{secs} s from {} s after it started", DELAY.as_secs()),
            task,
        )
    };
    Profile(Some(Taking {
        phase: phase.to_string(),
        what,
        stop,
        task,
    }))
}

impl Profile {
    /// Ends a whole-phase profile (after its current chunk) or waits for a window; a line for
    /// the run's observations: where it is, or why not.
    pub async fn finish(self) -> Option<String> {
        let Taking {
            phase,
            what,
            stop,
            task,
        } = self.0?;
        stop.store(true, Ordering::Release);
        Some(match task.await {
            Ok(Ok(paths)) => format!(
                "kube-apiserver's CPU profile of the {phase}: {what}, in {} (`go tool pprof \
                 -top`)",
                paths
                    .iter()
                    .map(|p| p
                        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                        .unwrap_or(p)
                        .display()
                        .to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Ok(Err(e)) => format!("kube-apiserver's CPU profile of the {phase} failed: {e:#}"),
            Err(e) => format!("kube-apiserver's CPU profile of the {phase} failed: {e}"),
        })
    }
}
