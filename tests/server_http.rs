//! `fastgen serve` end to end over real HTTP on loopback: request validation answered in
//! OpenAI's error shape, 429 past the queue, cancellation on disconnect, the KV budget,
//! and graceful shutdown on SIGTERM. The client is a few lines over `TcpStream`, so the
//! tests can send exactly the bytes they mean (broken JSON, oversized bodies) and hang up
//! mid-stream.
#![cfg(feature = "server")]

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fastgen"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("fastgen serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split(' ').next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("server prints its address");
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }

    /// Sends a request and reads the whole response: (status, body).
    fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = self.connect();
        write_request(&mut s, method, path, body);
        parse_response(&read_all(&mut s))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.send("POST", path, body.to_string().as_bytes());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.send("GET", "/metrics", b"");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Polls a metric until it has the value (or panics after `within`).
    fn wait_metric(&self, name: &str, want: f64, within: Duration) {
        let t0 = Instant::now();
        while self.metric(name) != want {
            assert!(t0.elapsed() < within, "{name} did not reach {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok);
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(t0.elapsed() < within, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_request(s: &mut TcpStream, method: &str, path: &str, body: &[u8]) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
}

/// Everything until the server closes. A server that refuses a body before reading it all
/// may reset the connection after its answer; what arrived before that is the answer.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => panic!("reading the response: {e}"),
            Err(_) => return raw,
        }
    }
}

/// (status, body), undoing chunked transfer encoding.
fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return (status, body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    (status, out)
}

/// The JSON payloads of an SSE body, and whether it ended with `[DONE]`.
fn sse_events(body: &str) -> (Vec<Value>, bool) {
    let mut events = Vec::new();
    let mut done = false;
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).expect("event is JSON"));
        }
    }
    (events, done)
}

fn chat(content: &str, extra: Value) -> Value {
    let mut v = json!({"messages": [{"role": "user", "content": content}], "temperature": 0});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Asserts OpenAI's error shape and returns the error object.
fn error_of(status: u16, want: u16, body: &Value) -> &Value {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error without {key}: {body}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    e
}

/// (path, body, status, param, code) of a request the server must refuse.
type Refused = (
    &'static str,
    Vec<u8>,
    u16,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn requests_and_refusals() {
    let s = Server::start(&["--slots", "2", "--queue", "4", "--max-body-kib", "64"]);
    let (st, health) = s.send("GET", "/health", b"");
    assert_eq!(st, 200, "{health}");
    let (st, models) = s.send("GET", "/v1/models", b"");
    assert_eq!(st, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2");

    // A completion, then the same as a stream: greedy, so the same text. Compression forced
    // from the prompt on (the default keeps so short a chat whole).
    let (st, r) = s.post(
        "/v1/chat/completions",
        &chat(
            "Name a colour.",
            json!({"max_tokens": 12, "model": "smollm2", "kv_compress_from": 0}),
        ),
    );
    assert_eq!(st, 200, "{r}");
    let text = r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.is_empty());
    assert_eq!(r["usage"]["completion_tokens"], 12);
    // FastGen by default: every one of SmolLM2's 30 x 3 KV heads has a policy.
    let heads: u64 = r["kv_stats"]["policy_histogram"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(heads, 90, "{}", r["kv_stats"]);
    assert!(r["kv_stats"]["kv_bytes_full"].as_u64().unwrap() > 0);
    let (st, body) = s.send(
        "POST",
        "/v1/chat/completions",
        chat(
            "Name a colour.",
            json!({"max_tokens": 12, "stream": true, "model": "SmolLM2-135M-Instruct.Q4_1",
                   "kv_compress_from": 0}),
        )
        .to_string()
        .as_bytes(),
    );
    assert_eq!(st, 200);
    let (events, done) = sse_events(&body);
    assert!(done, "{body}");
    let streamed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let last = events.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"], r["usage"]);
    // Same prompt, same policy: the stream's cache was compressed exactly like the first one.
    assert_eq!(
        last["kv_stats"]["pruned_ratio"],
        r["kv_stats"]["pruned_ratio"]
    );
    assert!(last["kv_stats"]["pruned_ratio"].as_f64().unwrap() > 0.0);

    // A stop sequence cuts the text before it.
    let (st, r) = s.post(
        "/v1/completions",
        &json!({"prompt": "1, 2, 3, 4,", "max_tokens": 12, "temperature": 0, "stop": [" 7"]}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    let t = r["choices"][0]["text"].as_str().unwrap();
    assert!(!t.contains(" 7") && t.contains('6'), "{t:?}");

    // Refusals, each in OpenAI's shape with the field at fault.
    let over_context: Vec<u32> = vec![1; 8193];
    let cases: Vec<Refused> = vec![
        (
            "/v1/chat/completions",
            b"{\"messages\": [".to_vec(),
            400,
            None,
            None,
        ),
        ("/v1/chat/completions", b"".to_vec(), 400, None, None),
        ("/v1/chat/completions", b"[1]".to_vec(), 400, None, None),
        (
            "/v1/chat/completions",
            json!({"messages": "hi"}).to_string().into(),
            400,
            Some("messages"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"temperature": "hot"})).to_string().into(),
            400,
            Some("temperature"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"temperature": 7})).to_string().into(),
            400,
            Some("temperature"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"max_tokens": 0})).to_string().into(),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"n": 3})).to_string().into(),
            400,
            Some("n"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"kv_policy": "lru"})).to_string().into(),
            400,
            Some("kv_policy"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"kv_recovery": 1.2})).to_string().into(),
            400,
            Some("kv_recovery"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"kv_compress_from": -1}))
                .to_string()
                .into(),
            400,
            Some("kv_compress_from"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"kv_compress_from": "soon"}))
                .to_string()
                .into(),
            400,
            Some("kv_compress_from"),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("x", json!({"model": "gpt-4o"})).to_string().into(),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            "/v1/completions",
            json!({"prompt": over_context}).to_string().into(),
            400,
            Some("prompt"),
            Some("context_length_exceeded"),
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 99999999]}).to_string().into(),
            400,
            Some("prompt"),
            None,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x".repeat(100_000)}).to_string().into(),
            413,
            None,
            Some("request_too_large"),
        ),
        (
            "/v1/embeddings",
            json!({"input": "x"}).to_string().into(),
            404,
            None,
            Some("not_found"),
        ),
    ];
    for (path, body, want, param, code) in cases {
        let (st, text) = s.send("POST", path, &body);
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        let e = error_of(st, want, &v);
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{v}");
        }
        if let Some(c) = code {
            assert_eq!(e["code"], c, "{v}");
        }
    }
    let (st, text) = s.send("DELETE", "/v1/models", b"");
    error_of(st, 405, &serde_json::from_str(&text).unwrap());
    let (st, text) = s.send("GET", "/v1/models/nope", b"");
    error_of(st, 404, &serde_json::from_str(&text).unwrap());

    // Still healthy, and the refusals were counted.
    assert_eq!(s.send("GET", "/health", b"").0, 200);
    assert!(s.metric("fastgen_generated_tokens_total") >= 24.0);
    let (_, metrics) = s.send("GET", "/metrics", b"");
    assert!(
        metrics.contains("route=\"/v1/chat/completions\",status=\"400\""),
        "{metrics}"
    );
}

#[test]
fn queue_cancellation_and_graceful_shutdown() {
    let mut s = Server::start(&["--slots", "1", "--queue", "0", "--grace-secs", "30"]);
    let long =
        json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "stream": true});

    // One long stream holds the only slot: the next request gets 429.
    let mut stream = s.connect();
    write_request(
        &mut stream,
        "POST",
        "/v1/completions",
        long.to_string().as_bytes(),
    );
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    let mut seen = 0;
    while seen < 5 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.contains("data: ") {
            seen += 1;
        }
    }
    assert_eq!(s.metric("fastgen_slots_busy"), 1.0);
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 4})),
    );
    let e = error_of(st, 429, &v);
    assert_eq!(e["type"], "rate_limit_error");

    // Hanging up cancels the generation and frees its slot and KV at once.
    assert!(s.metric("fastgen_kv_bytes_in_use") > 0.0);
    drop(reader);
    s.wait_metric("fastgen_slots_busy", 0.0, Duration::from_secs(5));
    assert_eq!(s.metric("fastgen_kv_bytes_in_use"), 0.0);
    assert_eq!(s.metric("fastgen_requests_cancelled_total"), 1.0);
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 4})),
    );
    assert_eq!(st, 200, "{v}");

    // SIGTERM while a stream runs: it finishes intact, then the server exits 0.
    let mut stream = s.connect();
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "stream": true});
    write_request(
        &mut stream,
        "POST",
        "/v1/completions",
        body.to_string().as_bytes(),
    );
    let mut first = [0u8; 64];
    let _ = stream.read(&mut first).unwrap();
    s.sigterm();
    let mut raw = first.to_vec();
    stream.read_to_end(&mut raw).unwrap();
    let (st, body) = parse_response(&raw);
    assert_eq!(st, 200);
    let (events, done) = sse_events(&body);
    assert!(done, "{body}");
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 40);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn kv_budget() {
    // SmolLM2 holds 23,040 bytes of f16 KV per token: 2 MiB is 91 tokens.
    let s = Server::start(&["--kv-budget-mib", "2", "--max-tokens-limit", "4096"]);
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 4096})),
    );
    let e = error_of(st, 400, &v);
    assert_eq!(e["code"], "kv_budget_exceeded");
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 8, "kv_recovery": 0.9})),
    );
    assert_eq!(st, 200, "{v}");
    let kv = &v["kv_stats"];
    assert_eq!(kv["kv_policy"], "fastgen");
    assert_eq!(kv["kv_recovery"], 0.9);
    assert_eq!(kv["kv_recovery_requested"], 0.9);
    // The default defers compression: a short chat is never compressed.
    assert_eq!(kv["kv_compress_from"], 512);
    assert_eq!(kv["compressed_at"], Value::Null, "{kv}");
    assert_eq!(kv["pruned_ratio"], 0.0);
    // Forced from the prompt on, the same request is compressed right after its prompt.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 8, "kv_compress_from": 0})),
    );
    assert_eq!(st, 200, "{v}");
    let kv = &v["kv_stats"];
    assert_eq!(kv["compressed_at"], v["usage"]["prompt_tokens"], "{v}");
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 8, "kv_policy": "full"})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["kv_stats"]["kv_recovery"], Value::Null);
    assert_eq!(s.metric("fastgen_kv_budget_bytes"), 2.0 * 1024.0 * 1024.0);
    // Finished chats are kept, within the budget: each admission drops the least recently
    // used until they fit beside what running requests reserve. A request that needs about
    // 80 tokens of the 91 the budget holds drops them all, and is then kept itself.
    assert!(s.metric("fastgen_kept_conversations") >= 2.0);
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat(
            "hello there",
            json!({"max_tokens": 50, "kv_policy": "full", "ignore_eos": true}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.metric("fastgen_kept_conversations"), 1.0);
}

#[test]
fn hostile_chat_template_is_refused_and_the_server_keeps_serving() {
    // A template that doubles a string until it holds gigabytes.
    let dir = std::env::temp_dir().join(format!("fastgen-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tpl = dir.join("doubling.jinja");
    std::fs::write(
        &tpl,
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    )
    .unwrap();
    let s = Server::start(&["--chat-template", tpl.to_str().unwrap()]);
    for _ in 0..3 {
        let (st, v) = s.post(
            "/v1/chat/completions",
            &chat("hi", json!({"max_tokens": 4})),
        );
        let e = error_of(st, 400, &v);
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("doubling.jinja") && msg.contains("memory limit"),
            "{msg}"
        );
        assert_eq!(e["param"], "messages");
        let (st, _) = s.send("GET", "/health", b"");
        assert_eq!(st, 200);
    }
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4);
}

#[test]
fn nan_logits_fail_the_request_and_the_server_keeps_serving() {
    let dir = std::env::temp_dir().join(format!("fastgen-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("nan-norm.gguf");
    common::synth_with_nan(&model);
    let s = Server::start(&["-m", model.to_str().unwrap()]);
    let want = "the model produced NaN logits at step 0 of generation";
    for _ in 0..2 {
        let (st, v) = s.post(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}),
        );
        let e = error_of(st, 500, &v);
        assert!(e["message"].as_str().unwrap().contains(want), "{v}");
        assert_eq!(e["type"], "server_error");
        let (st, _) = s.send("GET", "/health", b"");
        assert_eq!(st, 200);
    }
    // Streamed: the 200 and the first chunk are already out, so the error is an event.
    let (st, body) = s.send(
        "POST",
        "/v1/chat/completions",
        chat("hi", json!({"max_tokens": 4, "stream": true}))
            .to_string()
            .as_bytes(),
    );
    assert_eq!(st, 200);
    let (events, done) = sse_events(&body);
    assert!(done, "{body}");
    assert!(
        events.iter().any(|e| e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(want))),
        "{body}"
    );
}

/// Reads until the server closes the connection or `within` passes: the bytes read and
/// whether it closed (EOF or reset) in time.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (raw, true),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (raw, false)
            }
            Err(_) => return (raw, true),
        }
    }
}

#[test]
fn slow_idle_and_non_json_clients_are_refused() {
    let s = Server::start(&[
        "--header-timeout-secs",
        "1",
        "--body-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "3",
    ]);
    // A client that sends its headers a byte at a time never finishes them: closed once
    // the header deadline passes, though it keeps sending.
    let mut slow = s.connect();
    let t0 = Instant::now();
    let head =
        b"GET /health HTTP/1.1\r\nHost: test\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut closed_after = None;
    for b in head.iter() {
        if slow.write_all(&[*b]).is_err() {
            closed_after = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if closed_after.is_none() {
        let (raw, closed) = read_until_closed(&mut slow, Duration::from_secs(5));
        assert!(closed && raw.is_empty(), "slow headers not closed");
        closed_after = Some(t0.elapsed());
    }
    // The header deadline holds though the connection began idle, with a later deadline.
    let took = closed_after.unwrap();
    assert!(
        took < Duration::from_millis(2500),
        "closed after {took:?}, header timeout 1 s"
    );

    // An idle connection, fresh or after a keep-alive request, is closed after 3 s; a
    // connection that sent nothing is idle, not a slow header.
    let mut idle = s.connect();
    let t0 = Instant::now();
    let (raw, closed) = read_until_closed(&mut idle, Duration::from_secs(8));
    assert!(closed && raw.is_empty());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "idle connection closed after {took:?}, idle timeout 3 s"
    );
    let mut kept = s.connect();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let (raw, closed) = read_until_closed(&mut kept, Duration::from_secs(8));
    assert!(closed, "keep-alive connection not closed when idle");
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
    assert!(t0.elapsed() >= Duration::from_millis(2500));

    // A declared body past the limit (1 MiB): 413 at once, without waiting for the body.
    let mut huge = s.connect();
    huge.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000000000\r\n\r\n{",
    )
    .unwrap();
    let t0 = Instant::now();
    let (raw, _) = read_until_closed(&mut huge, Duration::from_secs(10));
    let (status, text) = parse_response(&raw);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error_of(status, 413, &body)["code"], "request_too_large");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "before the body timeout"
    );

    // A body that stops arriving: 408 in OpenAI's shape.
    let mut partial = s.connect();
    partial
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"prompt\":",
        )
        .unwrap();
    let (raw, _) = read_until_closed(&mut partial, Duration::from_secs(10));
    let (status, text) = parse_response(&raw);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error_of(status, 408, &body)["code"], "request_timeout");

    // Content-Type other than JSON: 415; JSON with a charset is fine.
    let body = json!({"prompt": "Hi", "max_tokens": 1}).to_string();
    for (ct, want) in [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
    ] {
        let mut c = s.connect();
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: {ct}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        let (status, text) = parse_response(&read_all(&mut c));
        let v: Value = serde_json::from_str(&text).unwrap();
        if want == 415 {
            assert_eq!(error_of(status, 415, &v)["code"], "unsupported_media_type");
        } else {
            assert_eq!(status, want, "{ct}: {v}");
        }
    }
    assert_eq!(s.send("GET", "/health", b"").0, 200);
}

/// A chat's next turn continues the kept cache of the previous one: the earlier tokens of its
/// prompt are not run again, and the answer is the one a cold run gives (`cache_prompt:
/// false` runs cold and keeps nothing), with `full` and with the default `fastgen` (which
/// compresses nothing below 512 tokens, so its cache continues too).
#[test]
fn a_conversation_continues_its_kept_cache() {
    let s = Server::start(&[]);
    for policy in ["full", "fastgen"] {
        let mut messages = vec![json!({"role": "user", "content": "Name three colours."})];
        // The previous turn's (prompt, completion) tokens.
        let mut last = (0, 0);
        for turn in 0..3 {
            let body = json!({"messages": messages, "max_tokens": 20, "temperature": 0,
                              "kv_policy": policy});
            let (st, warm) = s.post("/v1/chat/completions", &body);
            assert_eq!(st, 200, "{warm}");
            let mut cold_body = body.clone();
            cold_body["cache_prompt"] = json!(false);
            let (st, cold) = s.post("/v1/chat/completions", &cold_body);
            assert_eq!(st, 200, "{cold}");
            let answer = warm["choices"][0]["message"]["content"].clone();
            assert_eq!(
                answer, cold["choices"][0]["message"]["content"],
                "{policy} {turn}"
            );
            let reused = warm["kv_stats"]["prompt_tokens_reused"].as_u64().unwrap();
            let prompt = warm["usage"]["prompt_tokens"].as_u64().unwrap();
            assert_eq!(cold["kv_stats"]["prompt_tokens_reused"], 0);
            if turn == 0 {
                assert_eq!(reused, 0, "{policy}: nothing kept yet");
            } else {
                // `full` keeps the previous prompt (its answer runs again, as in a cold
                // run); FastGen also the answer's tokens but the last (never decoded).
                let want = match policy {
                    "full" => last.0,
                    _ => last.0 + last.1 - 1,
                };
                assert_eq!(reused, want, "{policy} {turn}");
                assert!(reused < prompt);
                assert_eq!(warm["kv_stats"]["prompt_reused_pruned_ratio"], 0.0);
            }
            let completion = warm["usage"]["completion_tokens"].as_u64().unwrap();
            last = (prompt, completion);
            messages.push(json!({"role": "assistant", "content": answer}));
            messages.push(json!({"role": "user", "content": "And three more?"}));
        }
    }
    // Compressed after the first prompt, FastGen continues too: the next turn runs over
    // what its heads kept (so its answer may differ from a cold run, which profiles the
    // whole prompt) and says how much earlier eviction had removed.
    let mut messages = vec![json!({"role": "user", "content": "Name three colours."})];
    for turn in 0..2 {
        let body = json!({"messages": messages, "max_tokens": 20, "temperature": 0,
                          "kv_compress_from": 0});
        let (st, v) = s.post("/v1/chat/completions", &body);
        assert_eq!(st, 200, "{v}");
        let kv = &v["kv_stats"];
        assert_eq!(
            kv["compressed_at"], v["usage"]["prompt_tokens"],
            "chosen again: {kv}"
        );
        if turn == 1 {
            assert!(kv["prompt_tokens_reused"].as_u64().unwrap() > 0, "{kv}");
            assert!(
                kv["prompt_reused_pruned_ratio"].as_f64().unwrap() > 0.0,
                "{kv}"
            );
        }
        let answer = v["choices"][0]["message"]["content"].clone();
        messages.push(json!({"role": "assistant", "content": answer}));
        messages.push(json!({"role": "user", "content": "And three more?"}));
    }
    // One kept cache per conversation and settings (each turn's replaced the one before).
    assert_eq!(s.metric("fastgen_kept_conversations"), 3.0);
    assert!(s.metric("fastgen_kept_conversation_bytes") > 0.0);
    assert_eq!(s.metric("fastgen_kv_bytes_in_use"), 0.0);
}

/// A long prompt that arrives while another request streams runs in parts between that
/// stream's decode steps, so the stream keeps getting tokens while the prompt is prefilled
/// (run whole, it would get none until the prefill ended).
#[test]
fn a_long_prompt_does_not_stall_a_running_stream() {
    let s = Server::start(&["--slots", "2"]);
    let streaming = json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0,
                           "stream": true, "ignore_eos": true, "kv_policy": "full"});
    let mut stream = s.connect();
    write_request(
        &mut stream,
        "POST",
        "/v1/completions",
        streaming.to_string().as_bytes(),
    );
    // Each event's arrival time, from a reader thread.
    let (tx, events) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stream).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("data: ") && tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    for _ in 0..3 {
        events
            .recv_timeout(Duration::from_secs(60))
            .expect("the stream starts");
    }
    // 1,536 prompt tokens: 24 parts of 64, and one token to generate.
    let ids: Vec<u32> = (0..1536).map(|i| 200 + (i * 37) % 5000).collect();
    let long = json!({"prompt": ids, "max_tokens": 1, "temperature": 0, "kv_policy": "full"});
    let sent = Instant::now();
    let (st, v) = s.post("/v1/completions", &long);
    let answered = Instant::now();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 1536);
    let during = events
        .try_iter()
        .filter(|&t| t > sent && t < answered)
        .count();
    assert!(
        during >= 12,
        "only {during} tokens streamed during the long prefill"
    );
    drop(events);
    drop(s);
    let _ = reader.join();
}
