//! The admin HTTP server on one port: `/livez`, `/readyz` (true once every cache has synced),
//! `/metrics` (Prometheus text format).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus_client::registry::Registry;

/// Readiness flag shared with the controllers.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    ready: Readiness,
    registry: Arc<Registry>,
}

/// Serves the admin endpoints on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, ready: Readiness) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    crate::metrics::register(&mut registry);
    let state = AdminState {
        ready,
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.ready.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
                    Ok(()) => (StatusCode::OK, out),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                }
            }),
        )
        .with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}
