//! Readiness, observed by a watch on the run's ExternalSecrets (listed in pages).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use secret_relay::api::ExternalSecret;

use super::{LABEL_RUN, PAGE, log, operator::Fleet, procs::loadavg};

#[derive(Default)]
pub struct Tracker {
    listed: bool,
    /// First time each ExternalSecret was seen Ready, and its lastTransitionTime (ms).
    pub ready: HashMap<String, (Instant, Option<i64>)>,
    /// Current Ready reason of each ExternalSecret.
    pub reason: HashMap<String, String>,
}

pub struct Watch {
    pub tracker: Arc<Mutex<Tracker>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    pub fn start(client: &Client, run: &str) -> Watch {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let api: Api<ExternalSecret> = Api::all(client.clone());
        let stream = watcher(
            api,
            watcher::Config::default()
                .labels(&format!("{LABEL_RUN}={run}"))
                .page_size(PAGE),
        )
        .default_backoff();
        let t = tracker.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(es) | watcher::Event::InitApply(es)) => {
                        observe(&t, &es)
                    }
                    Ok(watcher::Event::InitDone) => t.lock().unwrap().listed = true,
                    _ => {}
                }
            }
        });
        Watch { tracker, task }
    }

    /// Waits for the watch's first list of `n` ExternalSecrets (120 s, and 1 s more per
    /// 1,000 objects).
    pub async fn wait_listed(&self, n: usize) -> Result<()> {
        let limit = Duration::from_secs(120 + n as u64 / 1000);
        let deadline = Instant::now() + limit;
        while !self.tracker.lock().unwrap().listed {
            if Instant::now() > deadline {
                bail!(
                    "the ExternalSecret watch did not list within {} s",
                    limit.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub fn ready_count(&self, keys: &[String]) -> usize {
        let t = self.tracker.lock().unwrap();
        keys.iter().filter(|k| t.ready.contains_key(*k)).count()
    }
}

fn observe(t: &Mutex<Tracker>, es: &ExternalSecret) {
    let key = format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any());
    let status = es.status.as_ref();
    let cond = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let current = status.is_some_and(|s| s.observed_generation == es.metadata.generation);
    let mut t = t.lock().unwrap();
    match cond {
        Some(c) if c.status == "True" && c.reason == "SecretSynced" && current => {
            let ltt = c.last_transition_time.0.as_millisecond();
            t.ready
                .entry(key.clone())
                .or_insert_with(|| (Instant::now(), Some(ltt)));
            t.reason.insert(key, c.reason.clone());
        }
        Some(c) => {
            let first = c.message.split(':').next().unwrap_or("").to_string();
            t.reason.insert(key, format!("{} ({first})", c.reason));
        }
        None => {
            t.reason.insert(key, "no Ready condition yet".into());
        }
    }
}

/// Waits until `keys` are all Ready (watch) or the deadline; logs progress every 10 s.
/// Returns whether all were Ready, and an error text if an operator process died.
pub async fn wait_all_ready(
    watch: &Watch,
    keys: &[String],
    fleet: &mut Fleet,
    timeout: Duration,
    what: &str,
) -> (bool, Option<String>) {
    let start = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let ready = watch.ready_count(keys);
        if ready == keys.len() {
            return (true, None);
        }
        if !fleet.alive() {
            return (
                false,
                Some(format!(
                    "an operator process exited during {what} ({ready} of {} Ready)",
                    keys.len()
                )),
            );
        }
        if start.elapsed() > timeout {
            return (false, None);
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            log(format!(
                "{what}: {ready} / {} Ready after {:.0} s; operator RSS {} MiB, load {}",
                keys.len(),
                start.elapsed().as_secs_f64(),
                fleet.rss_text(),
                loadavg()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
