//! Keeps one backend's trouble to itself: a backend that stops answering must not hold the
//! controller's reconcile slots (all ExternalSecrets share them), and every ExternalSecret on
//! it should say so promptly.
//!
//! Each [`super::SharedProvider`] admits its backend calls through a [`Health`]:
//! - **Slow:** a read waits at most [`SLOW_AFTER`] for its call. While a call has been waiting
//!   longer than that, a new call is not started and a read does not wait at all: it is
//!   deferred ([`ErrorKind::Busy`], requeued quietly), so the reconcile slots go to
//!   ExternalSecrets of other backends.
//! - **Down:** after a call fails as unreachable ([`ErrorKind::Transient`]: connection,
//!   timeout, 5xx), one call at a time probes the backend, and every other read fails at once
//!   with that failure's message, so each affected ExternalSecret reports the cause at its
//!   next attempt instead of waiting for its own timeout. Any answer (a value, not found,
//!   access denied) ends it.
//!
//! Like a circuit breaker (closed / half-open), but with no timer of its own: the
//! ExternalSecrets' own backoff paces the probes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{ErrorKind, ProviderError};

/// How long a call may wait before the backend counts as slow: 5 s (an SSM or Vault read
/// answers in tens of milliseconds; the SDK's own timeouts are longer).
pub const SLOW_AFTER: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    next_id: u64,
    /// Calls started and not finished, by id: when they started.
    in_flight: HashMap<u64, Instant>,
    /// The failure that says the backend is unreachable, until an answer comes.
    down: Option<ProviderError>,
    /// Whether a probe of a down backend is in flight.
    probing: bool,
}

impl State {
    /// Whether a call has waited longer than [`SLOW_AFTER`].
    fn slow(&self) -> bool {
        self.in_flight.values().any(|t| t.elapsed() > SLOW_AFTER)
    }
}

/// The admission state of one backend. See the module documentation.
pub struct Health {
    /// Provider label of the metrics.
    name: &'static str,
    state: Mutex<State>,
}

/// One admitted call; dropping it (also when the call is cancelled) ends it.
pub struct Admitted {
    health: Arc<Health>,
    id: u64,
    probe: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.health.state.lock().expect("health lock");
        s.in_flight.remove(&self.id);
        if self.probe {
            s.probing = false;
        }
    }
}

impl Admitted {
    /// Records the call's outcome: an answer (anything but `Transient`) means the backend is
    /// up; `Transient` means it is down, with that error as the cause others get.
    pub fn finish<T>(self, result: &Result<T, ProviderError>) {
        let mut s = self.health.state.lock().expect("health lock");
        match result {
            Err(e) if e.kind == ErrorKind::Transient => {
                if s.down.is_none() {
                    crate::metrics::provider_down(self.health.name, 1);
                }
                s.down = Some(e.clone());
            }
            _ => {
                if s.down.take().is_some() {
                    crate::metrics::provider_down(self.health.name, -1);
                }
            }
        }
    }
}

impl Health {
    /// A healthy backend, labelled `name` in metrics.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Health {
            name,
            state: Mutex::default(),
        })
    }

    /// Admits a new backend call, or says why not: `Transient` with the cause while the
    /// backend is down and another call probes it; `Busy` while a call has waited longer
    /// than [`SLOW_AFTER`].
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, ProviderError> {
        let mut s = self.state.lock().expect("health lock");
        let probe = match &s.down {
            Some(cause) if s.probing => {
                return Err(ProviderError::new(
                    ErrorKind::Transient,
                    format!(
                        "{} (the backend is not answering; one call at a time probes it)",
                        cause.message
                    ),
                ));
            }
            Some(_) => true,
            None => {
                if s.slow() {
                    return Err(ProviderError::new(
                        ErrorKind::Busy,
                        format!(
                            "the backend has not answered a call for over {} s; this read waits",
                            SLOW_AFTER.as_secs()
                        ),
                    ));
                }
                false
            }
        };
        s.probing |= probe;
        s.next_id += 1;
        let id = s.next_id;
        s.in_flight.insert(id, Instant::now());
        Ok(Admitted {
            health: Arc::clone(self),
            id,
            probe,
        })
    }

    /// How long a reader may wait for a call: [`SLOW_AFTER`], or nothing once a call has
    /// waited longer than that (the backend is slow: a reader that joined a stuck call would
    /// hold its reconcile slot for nothing).
    pub fn wait_budget(&self) -> Duration {
        if self.state.lock().expect("health lock").slow() {
            Duration::ZERO
        } else {
            SLOW_AFTER
        }
    }

    /// Whether the backend is down (for tests and readiness).
    pub fn is_down(&self) -> bool {
        self.state.lock().expect("health lock").down.is_some()
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        let down = self
            .state
            .get_mut()
            .map(|s| s.down.is_some())
            .unwrap_or(false);
        if down {
            crate::metrics::provider_down(self.name, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> Result<(), ProviderError> {
        Err(ProviderError::new(kind, "ssm GetParameters: timed out"))
    }

    #[test]
    fn a_down_backend_is_probed_one_call_at_a_time() {
        let h = Health::new("test");
        // Up: calls go.
        let a = h.admit().unwrap();
        let b = h.admit().unwrap();
        b.finish(&Ok::<(), ProviderError>(()));
        // A timeout: down. The next call is the probe; the others fail at once, naming the
        // cause.
        a.finish(&err(ErrorKind::Transient));
        assert!(h.is_down());
        let probe = h.admit().unwrap();
        let refused = h.admit().err().unwrap();
        assert_eq!(refused.kind, ErrorKind::Transient);
        assert_eq!(
            refused.message,
            "ssm GetParameters: timed out (the backend is not answering; one call at a time probes it)"
        );
        // The probe fails: still down, and the next call probes again.
        probe.finish(&err(ErrorKind::Transient));
        let probe = h.admit().unwrap();
        // A cancelled probe frees the turn too.
        drop(probe);
        let probe = h.admit().unwrap();
        // Any answer (here: not found) means it is up again.
        probe.finish(&err(ErrorKind::NotFound));
        assert!(!h.is_down());
        h.admit().unwrap();
        h.admit().unwrap();
    }

    #[test]
    fn a_slow_call_defers_new_ones_but_not_for_good() {
        let h = Health::new("test");
        let slow = h.admit().unwrap();
        h.state.lock().unwrap().in_flight.insert(
            slow.id,
            Instant::now() - SLOW_AFTER - Duration::from_millis(1),
        );
        let deferred = h.admit().err().unwrap();
        assert_eq!(deferred.kind, ErrorKind::Busy);
        // Readers do not wait for a stuck call either.
        assert_eq!(h.wait_budget(), Duration::ZERO);
        // Once the slow call ends, calls go again.
        slow.finish(&Ok::<(), ProviderError>(()));
        assert_eq!(h.wait_budget(), SLOW_AFTER);
        h.admit().unwrap();
    }
}
