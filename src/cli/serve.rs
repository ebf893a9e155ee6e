//! `fastgen serve`: the OpenAI-compatible HTTP server (see `crate::server`).

use super::ModelArgs;
use crate::server::{self, engine::Engine, ServeConfig};
use anyhow::{ensure, Context, Result};
use clap::Args;
use fastgen::kv_cache::KvDtype;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[command(flatten)]
    model: ModelArgs,
    /// Requests that generate at once, batched together in each step.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// Requests that may wait for a slot; past that, 429.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// KV-cache bytes (MiB) all running requests may hold together (default: no limit).
    #[arg(long)]
    kv_budget_mib: Option<f64>,
    /// Lowest FastGen recovery T a request may be lowered to so that it fits the KV budget.
    #[arg(long, default_value_t = 0.8)]
    kv_recovery_floor: f64,
    /// Largest max_tokens a request may ask for; also the default.
    #[arg(long, default_value_t = 2048)]
    max_tokens_limit: usize,
    /// Largest request body in KiB; larger ones get 413.
    #[arg(long, default_value_t = 1024)]
    max_body_kib: usize,
    /// Seconds in-flight requests may run on after SIGTERM / Ctrl-C before they are cancelled.
    #[arg(long, default_value_t = 10.0)]
    grace_secs: f64,
    /// Seconds a client may take to send a request's headers, from their first byte; then
    /// the connection is closed.
    #[arg(long, default_value_t = 10.0)]
    header_timeout_secs: f64,
    /// Seconds a client may take to send a request's body; then 408.
    #[arg(long, default_value_t = 30.0)]
    body_timeout_secs: f64,
    /// Seconds a connection may stay open with no request in flight; then it is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout_secs: f64,
    /// Use the chat template in this file instead of the model's.
    #[arg(long)]
    chat_template: Option<std::path::PathBuf>,
    /// MiB of finished conversations' KV caches kept, so that a chat's next turn prefills
    /// only its new tokens (0: keep none). Within --kv-budget-mib when that is set.
    #[arg(long, default_value_t = 256.0)]
    keep_conversations_mib: f64,
    /// Element type of the KV cache: f16 or f32.
    #[arg(long, default_value = "f16")]
    kv_dtype: KvDtype,
}

pub fn run(a: ServeArgs) -> Result<()> {
    ensure!(a.slots >= 1, "--slots must be at least 1");
    ensure!(
        a.max_tokens_limit >= 1,
        "--max-tokens-limit must be at least 1"
    );
    ensure!(a.max_body_kib >= 1, "--max-body-kib must be at least 1");
    ensure!(
        a.grace_secs.is_finite() && a.grace_secs >= 0.0,
        "--grace-secs must be a number >= 0"
    );
    let timeouts = server::Timeouts {
        header: positive_secs(a.header_timeout_secs, "--header-timeout-secs")?,
        body: positive_secs(a.body_timeout_secs, "--body-timeout-secs")?,
        idle: positive_secs(a.idle_timeout_secs, "--idle-timeout-secs")?,
    };
    ensure!(
        a.kv_recovery_floor > 0.0 && a.kv_recovery_floor <= 1.0,
        "--kv-recovery-floor must be in (0, 1]"
    );
    let kv_budget_bytes = match a.kv_budget_mib {
        None => None,
        Some(m) => {
            ensure!(
                m.is_finite() && m > 0.0,
                "--kv-budget-mib must be a number > 0"
            );
            Some((m * 1024.0 * 1024.0) as u64)
        }
    };
    ensure!(
        a.keep_conversations_mib.is_finite() && a.keep_conversations_mib >= 0.0,
        "--keep-conversations-mib must be a number >= 0"
    );
    let kept_bytes = (a.keep_conversations_mib * 1024.0 * 1024.0) as u64;
    let loaded = a.model.load()?;
    // A model whose own template does not compile still serves completions; its chat
    // requests are refused with that error. A template file given here must compile.
    let template = match (
        loaded.chat_template(a.chat_template.as_deref()),
        &a.chat_template,
    ) {
        (Err(e), None) => {
            eprintln!("warning: {e:#}; /v1/chat/completions will refuse requests");
            Err(format!("{e:#}"))
        }
        (t, _) => Ok(t?),
    };
    let engine = Engine::new(
        loaded.model,
        loaded.tokenizer,
        template,
        a.kv_dtype,
        kept_bytes,
    )
    .context("starting the scheduler thread")?;
    server::run(
        ServeConfig {
            host: a.host,
            port: a.port,
            slots: a.slots,
            queue: a.queue,
            kv_budget_bytes,
            recovery_floor: a.kv_recovery_floor,
            max_tokens_limit: a.max_tokens_limit,
            max_body_bytes: a.max_body_kib * 1024,
            grace: Duration::from_secs_f64(a.grace_secs),
            timeouts,
        },
        engine,
    )
}

/// A timeout flag's value: more than 0 and at most a day.
fn positive_secs(v: f64, flag: &str) -> Result<Duration> {
    ensure!(
        v.is_finite() && v > 0.0 && v <= 86_400.0,
        "{flag} must be a number of seconds in (0, 86400]"
    );
    Ok(Duration::from_secs_f64(v))
}
