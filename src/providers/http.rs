//! HTTP clients shared across stores: a client holds its TLS configuration (the trusted roots,
//! loaded once) and a connection pool, where one client per store would load the roots and
//! keep a pool per store (and vaultrs makes one per login).
//!
//! Kept per Tokio runtime (the operator has one): a pooled connection is served by a task of
//! the runtime that opened it and dies with it, so a client must not outlive its runtime into
//! another (as `#[tokio::test]`s, each with its own runtime, would otherwise see).

use std::{collections::HashMap, hash::Hash, sync::Mutex};

/// Clients by settings key and Tokio runtime.
type Clients<K, C> = HashMap<(K, Option<tokio::runtime::Id>), C>;

/// Clients of type `C` by a settings key `K` and the current Tokio runtime.
pub(crate) struct PerRuntime<K, C> {
    clients: Mutex<Option<Clients<K, C>>>,
}

impl<K: Hash + Eq, C: Clone> PerRuntime<K, C> {
    /// An empty set (usable in a `static`).
    pub(crate) const fn new() -> Self {
        PerRuntime {
            clients: Mutex::new(None),
        }
    }

    /// The client for `key` in the current runtime, made by `make` the first time.
    pub(crate) fn get_or_try_make<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<C, E>,
    ) -> Result<C, E> {
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let mut clients = self.clients.lock().expect("http clients lock");
        let clients = clients.get_or_insert_with(HashMap::new);
        let key = (key, runtime);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = make()?;
        clients.insert(key, client.clone());
        Ok(client)
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
}
