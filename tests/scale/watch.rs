//! Readiness, observed by a watch on the run's ExternalSecrets (listed in pages).

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
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
    /// The keys of `ready` in the order they were first seen Ready, so that a waiter counts
    /// each once instead of looking up all its keys at every poll (N lookups every 200 ms
    /// made this process's CPU grow as N², BENCHMARKS-growth.md).
    pub ready_order: Vec<String>,
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
    let mut guard = t.lock().unwrap();
    let t = &mut *guard;
    match cond {
        Some(c) if c.status == "True" && c.reason == "SecretSynced" && current => {
            let ltt = c.last_transition_time.0.as_millisecond();
            if let Entry::Vacant(v) = t.ready.entry(key.clone()) {
                v.insert((Instant::now(), Some(ltt)));
                t.ready_order.push(key.clone());
            }
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
    // Each key seen Ready is counted once, as the watch reports it (not N lookups a poll).
    let wanted: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let (mut seen, mut ready) = (0, 0);
    loop {
        {
            let t = watch.tracker.lock().unwrap();
            ready += t.ready_order[seen..]
                .iter()
                .filter(|k| wanted.contains(k.as_str()))
                .count();
            seen = t.ready_order.len();
        }
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
