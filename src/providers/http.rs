//! HTTP clients shared across stores: a client holds its TLS configuration (the trusted roots,
//! loaded once) and a connection pool, where one client per store would load the roots and
//! keep a pool per store (and vaultrs makes one per login).
//!
//! Kept per Tokio runtime (the operator has one): a pooled connection is served by a task of
//! the runtime that opened it and dies with it, so a client must not outlive its runtime into
//! another (as `#[tokio::test]`s, each with its own runtime, would otherwise see).

use std::{hash::Hash, sync::OnceLock, time::Duration};

/// Clients kept at most per set (each key is a store's TLS settings, which a tenant chooses:
/// a CA bundle per SecretStore would otherwise grow the set for ever).
pub(crate) const MAX_CLIENTS: u64 = 256;

/// A client unused this long is dropped (its pool and roots with it): 1 hour.
pub(crate) const CLIENT_IDLE: Duration = Duration::from_secs(3600);

/// Clients of type `C` by a settings key `K` and the current Tokio runtime; at most
/// [`MAX_CLIENTS`], each dropped after [`CLIENT_IDLE`] unused (moka).
pub(crate) struct PerRuntime<K, C> {
    clients: OnceLock<moka::sync::Cache<(K, Option<tokio::runtime::Id>), C>>,
}

impl<K, C> PerRuntime<K, C>
where
    K: Hash + Eq + Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    /// An empty set (usable in a `static`).
    pub(crate) const fn new() -> Self {
        PerRuntime {
            clients: OnceLock::new(),
        }
    }

    /// The client for `key` in the current runtime, made by `make` the first time.
    pub(crate) fn get_or_try_make<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<C, E>,
    ) -> Result<C, E> {
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let clients = self.clients.get_or_init(|| {
            moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(CLIENT_IDLE)
                .build()
        });
        let key = (key, runtime);
        if let Some(c) = clients.get(&key) {
            return Ok(c);
        }
        let client = make()?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Clients kept now (moka's count may lag its evictions).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.clients.get().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_client_per_key_and_runtime() {
        static CLIENTS: PerRuntime<u8, u32> = PerRuntime::new();
        let mut made = 0;
        let mut make = || {
            made += 1;
            Ok::<_, ()>(made)
        };
        assert_eq!(CLIENTS.get_or_try_make(1, &mut make), Ok(1));
        assert_eq!(CLIENTS.get_or_try_make(1, &mut make), Ok(1));
        assert_eq!(CLIENTS.get_or_try_make(2, &mut make), Ok(2));
        // Another runtime gets its own.
        let other = std::thread::spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { CLIENTS.get_or_try_make(1, || Ok::<_, ()>(99)) })
        })
        .join()
        .unwrap();
        assert_eq!(other, Ok(99));
    }

    /// issue 27: keys a tenant chooses (a CA bundle per store) never grow the set past its
    /// bound.
    #[tokio::test]
    async fn the_set_is_bounded() {
        static CLIENTS: PerRuntime<u32, u32> = PerRuntime::new();
        for key in 0..(MAX_CLIENTS as u32 * 4) {
            CLIENTS.get_or_try_make(key, || Ok::<_, ()>(key)).unwrap();
        }
        assert!(CLIENTS.len() <= MAX_CLIENTS, "{}", CLIENTS.len());
    }
}
