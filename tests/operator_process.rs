//! The operator binary as it runs in a pod: metrics scraped from its admin server, graceful
//! shutdown on SIGTERM, and leader election between two replicas with failover.

mod common;
mod operator;

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ssm::types::ParameterType;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::api::{Api, Patch, PatchParams};
use secret_relay::api::ExternalSecret;
use serde_json::json;

use common::TestEnv;
use operator::{
    apply_yaml,
    process::{Process, sample},
    secret_data, wait_for, wait_reason,
};

/// A namespace with an SSM store (moto) and a parameter `<prefix>/token` = `v1`.
struct Setup {
    env: TestEnv,
    ns: String,
    prefix: String,
    ssm: aws_sdk_ssm::Client,
    es: Api<ExternalSecret>,
    secrets: Api<Secret>,
}

async fn setup(test: &str) -> Option<Setup> {
    let env = TestEnv::get(test).await?;
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "proc").await;
    let s = Setup {
        es: Api::namespaced(env.kube.clone(), &ns),
        secrets: Api::namespaced(env.kube.clone(), &ns),
        prefix,
        ssm,
        ns,
        env,
    };
    s.put("v1").await;
    Some(s)
}

impl Setup {
    async fn put(&self, value: &str) {
        self.ssm
            .put_parameter()
            .name(format!("{}/token", self.prefix))
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("put_parameter");
    }

    async fn external_secret(&self, name: &str, key: &str) {
        apply_yaml(
            &self.es,
            &format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: ssm, kind: SecretStore}}
  data:
  - secretKey: token
    remoteRef: {{key: "{prefix}{key}"}}
"#,
                prefix = self.prefix
            ),
        )
        .await;
    }

    async fn force_sync(&self, name: &str) {
        let patch = json!({"metadata": {"annotations": {
            "secret-relay.dev/force-sync": format!("{:?}", Instant::now())
        }}});
        self.es
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate force-sync");
    }

    async fn token(&self, name: &str) -> Option<String> {
        let s = self.secrets.get_opt(name).await.ok()??;
        secret_data(&s).get("token").cloned()
    }

    fn log(&self, name: &str) -> std::path::PathBuf {
        let dir = self
            .env
            .vars
            .get("TESTENV_LOG_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        dir.join(format!("{}-{name}.log", self.ns))
    }

    fn start(&self, name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut args = vec!["--namespace", &self.ns, "--no-cluster-stores"];
        args.extend_from_slice(extra);
        Process::start(&self.env.kubeconfig, &args, envs, &self.log(name))
    }
}

async fn wait_ready(p: &Process) {
    wait_for("/readyz 200", Duration::from_secs(30), || async {
        p.admin_get("/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
}

async fn wait_exit(p: &mut Process, within: Duration) -> std::process::ExitStatus {
    tokio::time::timeout(within, p.child.wait())
        .await
        .unwrap_or_else(|_| panic!("operator did not exit within {within:?}"))
        .expect("wait for the operator")
}

#[tokio::test]
async fn metrics_move_and_sigterm_drains() {
    let Some(s) = setup("metrics_move_and_sigterm_drains").await else {
        return;
    };
    let mut p = s.start("metrics", &[], &[]);
    wait_ready(&p).await;
    s.external_secret("app", "/token").await;
    wait_reason(&s.es, "app", "SecretSynced").await;

    let m = p.metrics().await;
    let synced = |m: &prometheus_parse::Scrape| {
        sample(
            m,
            "secret_relay_syncs_total",
            &[("result", "success"), ("reason", "SecretSynced")],
        )
    };
    let calls = |m: &prometheus_parse::Scrape| {
        sample(
            m,
            "secret_relay_provider_calls_total",
            &[
                ("provider", "aws_ssm"),
                ("operation", "GetParameters"),
                ("outcome", "ok"),
            ],
        )
    };
    assert!(
        synced(&m) >= 1.0,
        "a success sync is counted: {:?}",
        m.samples
    );
    assert!(calls(&m) >= 1.0, "the GetParameters call is counted");
    assert_eq!(
        sample(&m, "secret_relay_externalsecrets", &[("ready", "True")]),
        1.0
    );
    assert_eq!(
        sample(&m, "secret_relay_externalsecrets", &[("ready", "False")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "secret_relay_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(sample(&m, "secret_relay_reconcile_duration_seconds_count", &[]) >= 1.0);

    // A force-sync and a failing ExternalSecret move the counters.
    s.put("v2").await;
    s.force_sync("app").await;
    wait_for("v2 synced", Duration::from_secs(30), || async {
        (s.token("app").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    s.external_secret("broken", "/missing").await;
    wait_reason(&s.es, "broken", "SecretSyncedError").await;
    let after = wait_for("metrics to move", Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (sample(&m, "secret_relay_externalsecrets", &[("ready", "False")]) == 1.0).then_some(m)
    })
    .await;
    assert!(synced(&after) > synced(&m), "syncs_total grew");
    assert!(calls(&after) > calls(&m), "provider calls grew");
    assert!(
        sample(
            &after,
            "secret_relay_syncs_total",
            &[("result", "error"), ("reason", "NotFound")]
        ) >= 1.0,
        "the NotFound failure is counted by reason"
    );
    assert_eq!(
        sample(&after, "secret_relay_externalsecrets", &[("ready", "True")]),
        1.0
    );
    assert!(
        !after
            .samples
            .iter()
            .any(|x| x.labels.values().any(|v| v == "app" || v == "broken")),
        "no per-object label"
    );

    // SIGTERM: not ready, drains and exits 0.
    p.signal("TERM").await;
    let status = wait_exit(&mut p, Duration::from_secs(20)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// Two replicas of the operator binary electing a leader on the Lease `lease` of the test's
/// namespace. Each start is a new replica, `<lease>-<n>` (its `POD_NAME`, so its holder
/// identity is `<lease>-<n>-<suffix>`, and its log name).
struct Replicas<'a> {
    s: &'a Setup,
    args: Vec<String>,
    leases: Api<Lease>,
    lease: String,
    started: usize,
    leader: Replica,
    standby: Replica,
}

struct Replica {
    name: String,
    process: Process,
}

/// One takeover of the Lease by the standby after the leader got a signal.
struct Takeover {
    /// From the signal to the test seeing the standby hold the Lease (polled every 50 ms).
    seen: Duration,
    /// From the signal to the new holder's `acquireTime` (written with its clock, which is
    /// this machine's), in seconds.
    acquired_after_signal_s: f64,
    /// From the old holder's expiry (its last `renewTime` + `leaseDurationSeconds`, read once
    /// it was stopped) to the new holder's `acquireTime`, in seconds; negative would mean the
    /// Lease was taken from a live holder.
    acquired_after_expiry_s: f64,
}

fn system_time(t: &MicroTime) -> SystemTime {
    t.0.into()
}

/// `a - b` in seconds, negative when `a` is earlier.
fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl<'a> Replicas<'a> {
    /// A leader (the first replica, once it holds the Lease) and a standby waiting for it.
    async fn start(s: &'a Setup, lease: &str, duration_secs: u64) -> Replicas<'a> {
        let args = [
            "--leader-elect",
            "--lease-namespace",
            &s.ns,
            "--lease-name",
            lease,
            "--lease-duration",
            &duration_secs.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let leader = spawn(s, &args, lease, 1);
        let standby = spawn(s, &args, lease, 2);
        let r = Replicas {
            s,
            args,
            leases: Api::namespaced(s.env.kube.clone(), &s.ns),
            lease: lease.to_string(),
            started: 2,
            leader,
            standby,
        };
        // The first replica has no one to wait for; the second one may ask first.
        let prefix = |p: &Replica| format!("{}-", p.name);
        let first = wait_for("a replica leading", Duration::from_secs(30), || async {
            r.holder()
                .await
                .filter(|h| h.starts_with(&prefix(&r.leader)) || h.starts_with(&prefix(&r.standby)))
        })
        .await;
        let mut r = r;
        if first.starts_with(&prefix(&r.standby)) {
            std::mem::swap(&mut r.leader, &mut r.standby);
        }
        r.wait_standby().await;
        r
    }

    async fn spec(&self) -> Option<LeaseSpec> {
        self.leases.get_opt(&self.lease).await.ok()??.spec
    }

    async fn holder(&self) -> Option<String> {
        self.spec().await?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Polls (every 50 ms) until `replica` holds the Lease.
    async fn wait_holder(&self, replica: &str, within: Duration) {
        let start = Instant::now();
        let prefix = format!("{replica}-");
        while !self.holder().await.is_some_and(|h| h.starts_with(&prefix)) {
            assert!(
                start.elapsed() < within,
                "{replica} did not take the Lease within {within:?} (holder {:?})",
                self.holder().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The standby is up and waiting: ready, and it has read the Lease.
    async fn wait_standby(&self) {
        wait_ready(&self.standby.process).await;
        let log = self.s.log(&self.standby.name);
        wait_for(
            "the standby waiting for the lease",
            Duration::from_secs(30),
            || async {
                let text = std::fs::read_to_string(&log).ok()?;
                text.contains("waiting for the lease").then_some(())
            },
        )
        .await;
    }

    /// Sends `signal` (`TERM`: a graceful shutdown, which releases the Lease; `KILL`: none)
    /// to the leader and times the standby's takeover; then starts a new standby.
    async fn take_over(&mut self, signal: &str) -> Takeover {
        let before = self.spec().await.expect("the Lease");
        let signalled = SystemTime::now();
        let start = Instant::now();
        self.leader.process.signal(signal).await;
        let old = self.leader.name.clone();
        let standby = self.standby.name.clone();
        let (seen, expiry_spec) = if signal == "TERM" {
            self.wait_holder(&standby, Duration::from_secs(30)).await;
            let seen = start.elapsed();
            let status = wait_exit(&mut self.leader.process, Duration::from_secs(20)).await;
            assert!(
                status.success(),
                "{old}: exit status after SIGTERM: {status}"
            );
            (seen, before)
        } else {
            wait_exit(&mut self.leader.process, Duration::from_secs(10)).await;
            // Its last renewal, read now that it is gone (before, it may still renew); unless
            // the standby was quicker still.
            let after_kill = self
                .spec()
                .await
                .filter(|s| {
                    s.holder_identity
                        .as_deref()
                        .is_some_and(|h| h.starts_with(&format!("{old}-")))
                })
                .unwrap_or(before);
            self.wait_holder(&standby, Duration::from_secs(60)).await;
            (start.elapsed(), after_kill)
        };
        let spec = self.spec().await.expect("the Lease");
        let acquired = system_time(spec.acquire_time.as_ref().expect("acquireTime"));
        let expiry = system_time(expiry_spec.renew_time.as_ref().expect("renewTime"))
            + Duration::from_secs(expiry_spec.lease_duration_seconds.expect("duration") as u64);
        self.started += 1;
        let next = spawn(self.s, &self.args, &self.lease, self.started);
        self.leader = std::mem::replace(&mut self.standby, next);
        self.wait_standby().await;
        Takeover {
            seen,
            acquired_after_signal_s: secs_between(acquired, signalled),
            acquired_after_expiry_s: secs_between(acquired, expiry),
        }
    }
}

/// Replica `<lease>-<n>`.
fn spawn(s: &Setup, args: &[String], lease: &str, n: usize) -> Replica {
    let name = format!("{lease}-{n}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = s.start(&name, &args, &[("POD_NAME", &name)]);
    Replica { name, process }
}

#[tokio::test]
async fn leader_election_failover() {
    let Some(s) = setup("leader_election_failover").await else {
        return;
    };
    let duration = 6;
    let mut r = Replicas::start(&s, "secret-relay", duration).await;

    s.external_secret("app", "/token").await;
    wait_reason(&s.es, "app", "SecretSynced").await;
    assert_eq!(s.token("app").await.as_deref(), Some("v1"));
    // Only the leader runs the controllers: the standby made no sync and no provider call.
    let standby = r.standby.process.metrics().await;
    assert_eq!(sample(&standby, "secret_relay_syncs_total", &[]), 0.0);
    assert_eq!(
        sample(&standby, "secret_relay_provider_calls_total", &[]),
        0.0
    );
    let leader = r.leader.process.metrics().await;
    assert!(sample(&leader, "secret_relay_syncs_total", &[]) >= 1.0);
    // secret_relay_leader names the Lease holder (the dashboard's panel, the NoLeader alert).
    assert_eq!(sample(&standby, "secret_relay_leader", &[]), 0.0);
    assert_eq!(sample(&leader, "secret_relay_leader", &[]), 1.0);

    // Kill the leader without a chance to release the lease; change the value meanwhile.
    s.put("v2").await;
    let killed = Instant::now();
    let t = r.take_over("KILL").await;
    s.force_sync("app").await;
    wait_for(
        "the new leader to sync v2",
        Duration::from_secs(60),
        || async { (s.token("app").await.as_deref() == Some("v2")).then_some(()) },
    )
    .await;
    let gap = killed.elapsed();
    eprintln!(
        "FAILOVER: leader killed → Lease taken {:.2} s after its expiry, seen {:.1?} after the \
         kill; new value synced {gap:.1?} after the kill (lease duration {duration} s)",
        t.acquired_after_expiry_s, t.seen
    );
    // Never before the Lease expired, and at once after: the standby wakes at the expiry.
    assert!(
        t.acquired_after_expiry_s >= 0.0,
        "taken {} s before the expiry",
        t.acquired_after_expiry_s
    );
    assert!(
        t.seen < Duration::from_secs(duration + 3),
        "takeover seen {:?} after the kill",
        t.seen
    );
    assert!(
        gap < Duration::from_secs(duration + 10),
        "failover and sync took {gap:?}"
    );

    // A graceful shutdown releases the lease at once (no standby left to take it).
    r.standby.process.signal("KILL").await;
    r.leader.process.signal("TERM").await;
    let status = wait_exit(&mut r.leader.process, Duration::from_secs(20)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(r.holder().await, None, "the lease is released on shutdown");
}

/// issue 28: a leader stopped by SIGTERM (a Pod deleted, a rollout) releases the Lease and the
/// standby takes it at once, every time, not after the Lease's expiry nor a poll period. Five
/// handovers back and forth, the stopped replica started again each time as the new standby,
/// with the chart's lease duration (15 s), which a takeover that waited for the expiry or a
/// poll would exceed the bound by far.
#[tokio::test]
async fn leader_handover_by_sigterm_is_prompt_every_time() {
    let Some(s) = setup("leader_handover_by_sigterm_is_prompt_every_time").await else {
        return;
    };
    let mut r = Replicas::start(&s, "secret-relay", 15).await;
    s.external_secret("app", "/token").await;
    wait_reason(&s.es, "app", "SecretSynced").await;
    for round in 1..=5 {
        let t = r.take_over("TERM").await;
        eprintln!(
            "HANDOVER {round}: SIGTERM → Lease taken in {:.2} s (seen after {:.1?})",
            t.acquired_after_signal_s, t.seen
        );
        // The figure is 0.1-1 s; the bound holds on a loaded machine.
        assert!(
            t.seen < Duration::from_secs(5),
            "round {round}: takeover seen {:?} after SIGTERM",
            t.seen
        );
    }
    // The last leader runs the controllers.
    s.put("v2").await;
    s.force_sync("app").await;
    wait_for(
        "the last leader to sync v2",
        Duration::from_secs(60),
        || async { (s.token("app").await.as_deref() == Some("v2")).then_some(()) },
    )
    .await;
}

/// A wait before round `round`'s signal, spread over `0..period_ms` in 1.3 s steps.
fn phase(round: usize, period_ms: u64) -> Duration {
    Duration::from_millis(round as u64 * 1_300 % period_ms)
}

/// Figures for RELIABILITY.md (`hack/leader-takeovers.sh`), not a timed test: N takeovers
/// (`SECRET_RELAY_TAKEOVERS`, default 20) after a SIGTERM of the leader with the chart's
/// lease duration (15 s), then N after a SIGKILL with a 6 s lease, each signal 0-12 s (0-9 s)
/// after the new standby is up, so at every phase of the leader's renewals. Prints one
/// `RELIABILITY {json}` line. Asserts only that no Lease was taken before it expired.
#[tokio::test]
#[ignore = "measurement: hack/leader-takeovers.sh"]
async fn leader_takeover_figures() {
    let Some(s) = setup("leader_takeover_figures").await else {
        return;
    };
    let rounds: usize = std::env::var("SECRET_RELAY_TAKEOVERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let ms = |secs: f64| (secs * 1000.0).round() as i64;

    let (term_duration, kill_duration) = (15, 6);
    let mut term = Vec::new();
    let mut r = Replicas::start(&s, "term", term_duration).await;
    for round in 1..=rounds {
        // Signals at every phase of the renewal period (10 s, then 4 s below).
        tokio::time::sleep(phase(round, 12_000)).await;
        let t = r.take_over("TERM").await;
        eprintln!(
            "SIGTERM {round}: taken {:.3} s after the signal",
            t.acquired_after_signal_s
        );
        term.push(ms(t.acquired_after_signal_s));
    }
    r.leader.process.signal("KILL").await;
    r.standby.process.signal("KILL").await;
    drop(r);

    let (mut after_expiry, mut after_kill) = (Vec::new(), Vec::new());
    let mut r = Replicas::start(&s, "kill", kill_duration).await;
    for round in 1..=rounds {
        tokio::time::sleep(phase(round, 9_000)).await;
        let t = r.take_over("KILL").await;
        eprintln!(
            "SIGKILL {round}: taken {:.3} s after the expiry, {:.3} s after the kill",
            t.acquired_after_expiry_s, t.acquired_after_signal_s
        );
        assert!(t.acquired_after_expiry_s >= 0.0, "taken before the expiry");
        after_expiry.push(ms(t.acquired_after_expiry_s));
        after_kill.push(ms(t.acquired_after_signal_s));
    }
    println!(
        "RELIABILITY {}",
        json!({
            "test": "leader_takeover",
            "sigterm_lease_duration_s": term_duration,
            "sigterm_takeover_after_signal_ms": term,
            "sigkill_lease_duration_s": kill_duration,
            "sigkill_takeover_after_expiry_ms": after_expiry,
            "sigkill_takeover_after_kill_ms": after_kill,
        })
    );
}

/// issue 25: every line logged while reconciling names its object: a provider error's line in
/// the operator's JSON log carries the reconcile span's kind, namespace, name and store.
#[tokio::test]
async fn a_provider_errors_log_line_names_its_external_secret() {
    let Some(s) = setup("a_provider_errors_log_line_names_its_external_secret").await else {
        return;
    };
    let p = s.start("json-log", &["--log-format", "json"], &[]);
    wait_ready(&p).await;
    s.external_secret("missing", "/does-not-exist").await;
    wait_reason(&s.es, "missing", "SecretSyncedError").await;
    let line = wait_for("the failure logged", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(s.log("json-log")).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "sync failed")
    })
    .await;
    let span = &line["span"];
    assert_eq!(
        (
            span["name"].as_str(),
            span["kind"].as_str(),
            span["namespace"].as_str(),
            span["object"].as_str(),
            span["store"].as_str(),
        ),
        (
            Some("reconcile"),
            Some("ExternalSecret"),
            Some(s.ns.as_str()),
            Some("missing"),
            Some("SecretStore/ssm"),
        ),
        "{line}"
    );
    assert!(
        line["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ParameterNotFound")),
        "{line}"
    );
    drop(p);
}
