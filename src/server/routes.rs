//! Routes and handlers: request in, admission, generation on a blocking thread, response or
//! SSE stream out.

use super::admission::Refusal;
use super::batch::Hooks;
use super::engine::{Finish, Job, Outcome};
use super::error::ApiError;
use super::kv::estimate_kv_bytes;
use super::request::{self, GenRequest};
use super::App;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, MatchedPath, Path, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fastgen::sampling::SamplerConfig;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

type Shared = Arc<App>;

const ROUTES: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/models/{model}",
    "/health",
    "/metrics",
];

pub fn router(app: Shared) -> Router {
    let max_body = app.max_body_bytes;
    Router::new()
        .route(ROUTES[0], post(chat_completions))
        .route(ROUTES[1], post(completions))
        .route(ROUTES[2], get(list_models))
        .route(ROUTES[3], get(get_model))
        .route(ROUTES[4], get(health))
        .route(ROUTES[5], get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            count_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn count_requests(
    State(app): State<Shared>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .and_then(|m| ROUTES.iter().copied().find(|r| *r == m.as_str()))
        .unwrap_or("other");
    let resp = next.run(req).await;
    app.metrics.count_request(route, resp.status().as_u16());
    resp
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::wrong_method(method.as_str(), uri.path())
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn health(State(app): State<Shared>) -> Response {
    let adm = app.admission.snapshot();
    let draining = app.draining.load(Ordering::Relaxed);
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(
        status,
        &json!({
            "status": if draining { "shutting_down" } else { "ok" },
            "model": app.engine.id,
            "slots": app.admission.config().slots,
            "slots_busy": adm.active,
            "queue_depth": adm.waiting,
        }),
    )
}

async fn metrics(State(app): State<Shared>) -> Response {
    let cfg = app.admission.config();
    let text = app.metrics.render(
        app.admission.snapshot(),
        app.engine.gauges(),
        cfg.slots,
        cfg.budget,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn model_object(app: &App) -> Value {
    json!({
        "id": app.engine.id,
        "object": "model",
        "created": app.engine.created,
        "owned_by": "fastgen",
        "context_length": app.engine.n_ctx(),
    })
}

async fn list_models(State(app): State<Shared>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [model_object(&app)]}),
    )
}

async fn get_model(State(app): State<Shared>, Path(model): Path<String>) -> Response {
    if app.engine.serves(&model) {
        json_response(StatusCode::OK, &model_object(&app))
    } else {
        ApiError::unknown_model(&model, &app.engine.id).into_response()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

async fn chat_completions(State(app): State<Shared>, req: Request) -> Response {
    generate(app, Endpoint::Chat, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Shared>, req: Request) -> Response {
    generate(app, Endpoint::Completion, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether a Content-Type names JSON: `application/json`, with parameters such as
/// `charset=utf-8` or not, in any case. A request without one is taken as JSON.
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(v) = content_type else { return true };
    let essence = v
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// How many times `--max-body-kib` of an oversized body is read and dropped before its 413.
const DRAIN_LIMITS: u64 = 8;

/// The body of a generation request: refused with 415 unless it is JSON, with 413 past the
/// size limit and with 408 if it does not arrive within the body timeout.
async fn read_body(app: &App, req: Request) -> Result<Bytes, ApiError> {
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        let got = String::from_utf8_lossy(req.headers()[header::CONTENT_TYPE].as_bytes());
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "the request body must be JSON (Content-Type: application/json), not {}",
                fastgen::error::shown(&got)
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("unsupported_media_type"),
        });
    }
    // A declared length past the limit is refused without keeping the body. Up to
    // `DRAIN_LIMITS` limits of it are read and dropped first (within the body timeout): a
    // client still sending when the connection closed would get a broken pipe instead of
    // the 413. A larger one (a terabyte, or a body that never comes) is refused at once.
    let declared = (req.headers().get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let limit = app.timeouts.body;
    if let Some(n) = declared.filter(|&n| n > app.max_body_bytes as u64) {
        if n <= DRAIN_LIMITS * app.max_body_bytes as u64 {
            let mut data = req.into_body().into_data_stream();
            let drain = async { while let Some(Ok(_)) = data.next().await {} };
            let _ = tokio::time::timeout(limit, drain).await;
        }
        return Err(ApiError::too_large(app.max_body_bytes));
    }
    match tokio::time::timeout(limit, Bytes::from_request(req, &())).await {
        Ok(body) => body.map_err(|r| body_error(app, r)),
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within the timeout of {} s",
                limit.as_secs_f64()
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_timeout"),
        }),
    }
}

fn body_error(app: &App, rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(app.max_body_bytes)
    } else {
        ApiError::invalid(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

fn refusal_error(app: &App, r: Refusal, param: &str) -> ApiError {
    let cfg = app.admission.config();
    match r {
        Refusal::QueueFull => ApiError::queue_full(cfg.slots, cfg.queue),
        Refusal::ShuttingDown => ApiError::shutting_down(),
        Refusal::OverBudget { need, budget } => ApiError::invalid_param(
            param,
            format!(
                "the request needs {:.1} MiB of KV cache (prompt plus max_tokens) but the \
                 server's KV budget is {:.1} MiB; lower max_tokens or shorten the prompt",
                need as f64 / MIB,
                budget as f64 / MIB
            ),
        )
        .with_code("kv_budget_exceeded"),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Sets its flag when dropped: the generation of a request whose handler or stream is
/// dropped (its client went away) stops at the next token.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

enum Msg {
    Text(String),
    Done(Result<Outcome, ApiError>),
}

/// What both endpoints' responses share.
struct Meta {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    queue_ms: f64,
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

async fn generate(app: Shared, endpoint: Endpoint, req: Request) -> Result<Response, ApiError> {
    let body = read_body(&app, req).await?;
    let value = request::parse_json(&body)?;
    let req: GenRequest = match endpoint {
        Endpoint::Chat => request::parse_chat(&value, &app.limits)?,
        Endpoint::Completion => request::parse_completion(&value, &app.limits)?,
    };
    drop(value);
    if let Some(m) = &req.model {
        if !app.engine.serves(m) {
            return Err(ApiError::unknown_model(m, &app.engine.id));
        }
    }
    if app.draining.load(Ordering::Relaxed) {
        return Err(ApiError::shutting_down());
    }
    let param = req.prompt.param();
    let prompt_ids = {
        let engine = Arc::clone(&app.engine);
        let prompt = req.prompt.clone();
        tokio::task::spawn_blocking(move || engine.prompt_ids(&prompt))
            .await
            .map_err(|e| ApiError::internal(format!("preparing the prompt: {e}")))??
    };
    let max_tokens = req.max_tokens.unwrap_or(app.limits.max_tokens_limit);
    let tokens = (prompt_ids.len() + max_tokens).min(app.engine.n_ctx());
    let shape = app.engine.kv_shape();
    let (kind, from) = (req.kv.kind, req.kv.compress_from);
    let queued_at = Instant::now();
    let permit = app
        .admission
        .admit(req.kv, &move |t| {
            estimate_kv_bytes(&shape, tokens, kind, t, from)
        })
        .await
        .map_err(|r| refusal_error(&app, r, param))?;
    let queue_ms = queued_at.elapsed().as_secs_f64() * 1e3;

    let job = Job {
        prompt_ids,
        max_tokens,
        sampler: SamplerConfig {
            temperature: req.temperature,
            top_k: req.top_k,
            top_p: req.top_p,
            seed: req.seed.unwrap_or_else(random_u64),
        },
        stop: req.stop.clone(),
        ignore_eos: req.ignore_eos,
        cache_prompt: req.cache_prompt,
        kv: permit.grant,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(Arc::clone(&cancel));
    let (tx, rx) = mpsc::unbounded_channel();
    let hooks = {
        let (a, c) = (Arc::clone(&app), Arc::clone(&app));
        let text_tx = tx.clone();
        // Held until the generation's cache is gone: then the slot and budget go back.
        Hooks {
            cancel: Box::new(move || {
                cancel.load(Ordering::Relaxed) || a.cancel_all.load(Ordering::Relaxed)
            }),
            on_text: Box::new(move |text| text_tx.send(Msg::Text(text)).is_ok()),
            on_done: Box::new(move |result| {
                if let Ok(o) = &result {
                    c.metrics.record_generation(
                        o.prompt_tokens,
                        o.completion_tokens,
                        o.timing.decode_ms,
                        o.kv.pruned_ratio,
                    );
                    if o.finish == Finish::Cancelled {
                        c.metrics.count_cancelled();
                    }
                }
                // Released before the client hears "done", so a client that sends its
                // next request the moment this one ends finds the slot free.
                drop(permit);
                let _ = tx.send(Msg::Done(result));
            }),
        }
    };
    app.engine.submit(job, hooks);
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let meta = Meta {
        endpoint,
        id: format!("{prefix}-{:016x}", random_u64()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: app.engine.id.clone(),
        include_usage: req.include_usage,
        queue_ms,
    };
    if req.stream {
        Ok(stream_response(meta, rx, guard))
    } else {
        collect_response(meta, rx, guard).await
    }
}

async fn collect_response(
    meta: Meta,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    _guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Msg::Text(t)) => text.push_str(&t),
            Some(Msg::Done(Ok(o))) if o.finish == Finish::Cancelled => {
                return Err(ApiError::shutting_down())
            }
            Some(Msg::Done(Ok(o))) => {
                let finish = o.finish.as_str();
                let choice = match meta.endpoint {
                    Endpoint::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish,
                    }),
                    Endpoint::Completion => json!({
                        "text": text,
                        "index": 0,
                        "logprobs": null,
                        "finish_reason": finish,
                    }),
                };
                let mut v = envelope(&meta, false);
                v["choices"] = json!([choice]);
                add_totals(&mut v, &meta, &o);
                return Ok(json_response(StatusCode::OK, &v));
            }
            Some(Msg::Done(Err(e))) => return Err(e),
            None => return Err(ApiError::internal("the generation ended unexpectedly")),
        }
    }
}

/// The fields every response and chunk carries.
fn envelope(meta: &Meta, chunk: bool) -> Value {
    let object = match (meta.endpoint, chunk) {
        (Endpoint::Chat, false) => "chat.completion",
        (Endpoint::Chat, true) => "chat.completion.chunk",
        (Endpoint::Completion, _) => "text_completion",
    };
    json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": concat!("fastgen-", env!("CARGO_PKG_VERSION")),
    })
}

/// `usage`, `kv_stats` and `timings`.
fn add_totals(v: &mut Value, meta: &Meta, o: &Outcome) {
    let t = &o.timing;
    v["usage"] = json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
    });
    v["kv_stats"] = o.kv.to_json();
    v["timings"] = json!({
        "queue_ms": meta.queue_ms,
        "prompt_ms": t.prefill_ms,
        "prompt_tokens_per_second": t.prefill_tok_s(),
        "decode_ms": t.decode_ms,
        "decode_tokens_per_second": t.decode_tok_s(),
    });
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// A chunk with one choice carrying `text` (and `finish_reason`).
fn chunk(meta: &Meta, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let mut delta = json!({});
            if role {
                delta["role"] = json!("assistant");
            }
            if let Some(t) = text {
                delta["content"] = json!(t);
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        }
        Endpoint::Completion => json!({
            "text": text.unwrap_or(""),
            "index": 0,
            "logprobs": null,
            "finish_reason": finish,
        }),
    };
    let mut v = envelope(meta, true);
    v["choices"] = json!([choice]);
    v
}

/// The SSE stream: OpenAI chunks as the text comes, the last chunk with `finish_reason`,
/// `usage` and `kv_stats` (plus OpenAI's usage-only chunk when `include_usage`), then
/// `data: [DONE]`.
struct Streamer {
    meta: Meta,
    rx: mpsc::UnboundedReceiver<Msg>,
    out: VecDeque<Bytes>,
    done: bool,
    /// Dropped with the stream when the client goes away.
    _guard: CancelOnDrop,
}

impl Streamer {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Some(Msg::Text(t)) => {
                    let c = chunk(&self.meta, Some(&t), false, None);
                    self.out.push_back(sse(&c));
                }
                Some(Msg::Done(Ok(o))) if o.finish == Finish::Cancelled => {
                    self.fail(ApiError::shutting_down())
                }
                Some(Msg::Done(Ok(o))) => {
                    let mut last = chunk(&self.meta, None, false, o.finish.as_str());
                    add_totals(&mut last, &self.meta, &o);
                    self.out.push_back(sse(&last));
                    if self.meta.include_usage {
                        let mut u = envelope(&self.meta, true);
                        u["choices"] = json!([]);
                        add_totals(&mut u, &self.meta, &o);
                        self.out.push_back(sse(&u));
                    }
                    self.finish();
                }
                Some(Msg::Done(Err(e))) => self.fail(e),
                None => self.fail(ApiError::internal("the generation ended unexpectedly")),
            }
        }
    }

    fn fail(&mut self, e: ApiError) {
        self.out.push_back(sse(&e.body()));
        self.finish();
    }

    fn finish(&mut self) {
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.done = true;
    }
}

fn stream_response(meta: Meta, rx: mpsc::UnboundedReceiver<Msg>, guard: CancelOnDrop) -> Response {
    let mut s = Streamer {
        meta,
        rx,
        out: VecDeque::new(),
        done: false,
        _guard: guard,
    };
    // The first chunk goes out at once: the role for chat, empty text for completions.
    let first = chunk(
        &s.meta,
        (s.meta.endpoint == Endpoint::Chat).then_some(""),
        s.meta.endpoint == Endpoint::Chat,
        None,
    );
    s.out.push_back(sse(&first));
    let body = futures_util::stream::unfold(s, |mut s| async move {
        s.next().await.map(|b| (Ok::<_, Infallible>(b), s))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
