//! Where tenants' templates run: a pool of render slots, one per core, on Tokio's blocking
//! threads (never on the async workers that run the watches, the admin server and every
//! other reconcile), shared fairly between namespaces.
//!
//! One process-wide slot, taken while holding a reconcile worker, let one tenant with 24
//! heavy-template ExternalSecrets fill the slot's queue and every reconcile worker waiting for
//! it: another namespace's first sync waited 52 to 125 s (issue 27). Now:
//! - renders run on at most [`TemplatePool::slots`] blocking threads at once (the cores);
//! - a namespace may have at most as many renders waiting or running as there are slots
//!   ([`TemplatePool::share`]); a reconcile that would exceed it is put off at once
//!   ([`super::Error::TemplatesBusy`], retried in about 2 s without a word), so one namespace
//!   holds at most that many reconcile workers here, and the queue for a slot holds at most
//!   that many renders of any namespace ahead of another's;
//! - each render is bounded by its ExternalSecret's allowance of steps and time
//!   ([`crate::template::Allowance`]), checked inside the engine: a render whose reconcile
//!   gave up (its deadline passed) still ends within that time, and its slot with it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Semaphore;

use super::Error;

/// Render slots and each namespace's renders waiting or running (module docs).
pub struct TemplatePool {
    slots: Arc<Semaphore>,
    size: usize,
    per_namespace: Arc<Mutex<HashMap<String, usize>>>,
}

/// A namespace's place in the pool, given back when the render it was taken for ends (on the
/// blocking thread, even if the reconcile that asked was dropped meanwhile).
struct Share {
    namespace: String,
    per_namespace: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut counts = self.per_namespace.lock().expect("template pool lock");
        if let Some(n) = counts.get_mut(&self.namespace) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.namespace);
            }
        }
    }
}

impl TemplatePool {
    /// A pool of `slots` (at least 1) render slots.
    pub fn new(slots: usize) -> Self {
        let size = slots.max(1);
        TemplatePool {
            slots: Arc::new(Semaphore::new(size)),
            size,
            per_namespace: Arc::default(),
        }
    }

    /// A pool with one slot per core this process may use.
    pub fn for_cores() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Renders that run at once.
    pub fn slots(&self) -> usize {
        self.size
    }

    /// Renders one namespace may have waiting or running: the number of slots.
    pub fn share(&self) -> usize {
        self.size
    }

    /// Runs `render` on a blocking thread once a slot is free, for an ExternalSecret of
    /// `namespace`. Errors: [`Error::TemplatesBusy`] at once when the namespace already has
    /// its [`TemplatePool::share`] of renders waiting or running.
    pub async fn render<T: Send + 'static>(
        &self,
        namespace: &str,
        render: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let share = {
            let mut counts = self.per_namespace.lock().expect("template pool lock");
            let n = counts.entry(namespace.to_string()).or_default();
            if *n >= self.share() {
                return Err(Error::TemplatesBusy {
                    namespace: namespace.to_string(),
                    share: self.share(),
                });
            }
            *n += 1;
            Share {
                namespace: namespace.to_string(),
                per_namespace: self.per_namespace.clone(),
            }
        };
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let _held = (permit, share);
            render()
        })
        .await
        .map_err(|e| {
            Error::InvalidSpec(super::build::BuildError(format!(
                "rendering the templates failed: {e}"
            )))
        })
    }

    /// Renders waiting or running for `namespace` (for tests).
    pub fn in_use(&self, namespace: &str) -> usize {
        self.per_namespace
            .lock()
            .expect("template pool lock")
            .get(namespace)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A namespace gets at most its share; another namespace still gets a slot next, and the
    /// share comes back when a render ends, even one whose caller went away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_namespace_holds_at_most_its_share_and_another_gets_the_next_slot() {
        let pool = Arc::new(TemplatePool::new(2));
        let gate = Arc::new(std::sync::Barrier::new(3));
        let running = Arc::new(AtomicUsize::new(0));
        let mut hostile = Vec::new();
        for _ in 0..2 {
            let (pool, gate, running) = (pool.clone(), gate.clone(), running.clone());
            hostile.push(tokio::spawn(async move {
                pool.render("tenant", move || {
                    running.fetch_add(1, Ordering::SeqCst);
                    gate.wait();
                })
                .await
            }));
        }
        while running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // The third render of the namespace is refused at once, without waiting.
        match pool.render("tenant", || ()).await {
            Err(Error::TemplatesBusy { namespace, share }) => {
                assert_eq!((namespace.as_str(), share), ("tenant", 2))
            }
            other => panic!("{other:?}"),
        }
        // Another namespace waits for a slot only, and gets the first one freed.
        let canary = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.render("canary", || "rendered").await })
        };
        gate.wait();
        for h in hostile {
            h.await.unwrap().unwrap();
        }
        assert_eq!(canary.await.unwrap().unwrap(), "rendered");
        assert_eq!((pool.in_use("tenant"), pool.in_use("canary")), (0, 0));
    }
}
