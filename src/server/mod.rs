//! `fastgen serve`: an OpenAI-compatible HTTP server (axum on tokio) over one loaded model.
//!
//! - `routes`: the HTTP surface (chat and text completions, streaming as SSE, models,
//!   health, metrics) and the OpenAI error shape for everything refused.
//! - `request`: parsing and checking request bodies.
//! - `admission`: slots, the bounded queue and the KV budget.
//! - `engine`: the adapter to the library; the KV-policy seam lives there.
//! - `batch`: the scheduler thread stepping every running request together;
//!   `conversations`: finished requests' caches kept for the next turn.
//! - `listen`: the accept loop, with header, idle (and, in `routes`, body) deadlines.
//! - `stop`, `metrics`, `error`: stop sequences, Prometheus text, OpenAI errors.
//!
//! Generation runs on one scheduler thread (continuous batching), whose matrix products use
//! rayon's global pool; the async executor only moves bytes.

mod admission;
pub mod batch;
pub mod conversations;
pub mod engine;
mod error;
pub mod kv;
mod listen;
mod metrics;
mod request;
mod routes;
mod stop;

use admission::Admission;
use anyhow::{Context, Result};
use engine::Engine;
pub use listen::Timeouts;
use metrics::Metrics;
use request::Limits;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    pub slots: usize,
    pub queue: usize,
    pub kv_budget_bytes: Option<u64>,
    pub recovery_floor: f64,
    pub max_tokens_limit: usize,
    pub max_body_bytes: usize,
    /// How long in-flight requests may run on after SIGTERM / Ctrl-C.
    pub grace: Duration,
    /// How long a client may take over a request head and body, and stay idle.
    pub timeouts: Timeouts,
}

/// Shared by every handler.
pub struct App {
    engine: Arc<Engine>,
    admission: Arc<Admission>,
    metrics: Metrics,
    limits: Limits,
    max_body_bytes: usize,
    timeouts: Timeouts,
    /// Set at the first signal: new requests are refused.
    draining: AtomicBool,
    /// Set when the grace period ends: running generations stop at their next token.
    cancel_all: AtomicBool,
}

/// Serves until SIGTERM or Ctrl-C, then drains and returns.
pub fn run(cfg: ServeConfig, engine: Engine) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fastgen-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(cfg, engine));
    // Generations observe `cancel_all` at every token, so blocking threads end promptly.
    rt.shutdown_timeout(Duration::from_secs(10));
    result
}

async fn serve(cfg: ServeConfig, engine: Engine) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("listening on {}:{}", cfg.host, cfg.port))?;
    let addr = listener.local_addr()?;
    let admission = Admission::new(admission::Config {
        slots: cfg.slots,
        queue: cfg.queue,
        budget: cfg.kv_budget_bytes,
        recovery_floor: cfg.recovery_floor,
    });
    admission.set_kept(Arc::clone(&engine.conversations));
    let app = Arc::new(App {
        engine: Arc::new(engine),
        admission,
        metrics: Metrics::default(),
        limits: Limits {
            max_tokens_limit: cfg.max_tokens_limit,
        },
        max_body_bytes: cfg.max_body_bytes,
        timeouts: cfg.timeouts,
        draining: AtomicBool::new(false),
        cancel_all: AtomicBool::new(false),
    });
    let budget = cfg.kv_budget_bytes.map_or("unlimited".to_string(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    });
    eprintln!(
        "fastgen serve: listening on http://{addr} (model {}, context {}, slots {}, queue {}, \
         KV budget {budget})",
        app.engine.id,
        app.engine.n_ctx(),
        cfg.slots,
        cfg.queue
    );
    let router = routes::router(Arc::clone(&app));
    let signal = {
        let app = Arc::clone(&app);
        let grace = cfg.grace;
        async move {
            shutdown_signal().await;
            begin_shutdown(app, grace);
        }
    };
    listen::serve(listener, router, cfg.timeouts, signal).await;
    eprintln!("fastgen serve: stopped");
    Ok(())
}

/// Stops taking requests; in-flight ones may finish within `grace`, then they are cancelled
/// (as they are at once on a second signal).
fn begin_shutdown(app: Arc<App>, grace: Duration) {
    app.draining.store(true, Ordering::Relaxed);
    let s = app.admission.snapshot();
    eprintln!(
        "fastgen serve: shutting down; {} generating and {} waiting may finish within {:.0} s",
        s.active,
        s.waiting,
        grace.as_secs_f64()
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = shutdown_signal() => {}
        }
        let s = app.admission.snapshot();
        if s.active + s.waiting > 0 {
            eprintln!(
                "fastgen serve: cancelling {} generating and {} waiting",
                s.active, s.waiting
            );
        }
        app.cancel_all.store(true, Ordering::Relaxed);
        app.admission.close();
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
