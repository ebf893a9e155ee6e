//! Malformed requests against a real `fastgen serve`: JSON with fields deleted, retyped or
//! set to extreme values, deep nesting, huge bodies, invalid UTF-8, wrong Content-Types.
//! Every answer must be a documented status (200, or a 4xx with OpenAI's error object), and
//! /health must stay 200.

use crate::outcome::{cut, Outcome};
use crate::rng::Rng;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a request may take to be answered (a long prompt's prefill on a busy machine
/// takes tens of seconds).
const ANSWER_WITHIN: Duration = Duration::from_secs(300);
/// Marks an exchange that timed out (a hang, not a crash).
const HANG: &str = "hang";

pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(model: &str) -> Server {
        let mut child = Command::new(crate::cli::fastgen_bin())
            .args([
                "serve",
                "--port",
                "0",
                "--max-tokens-limit",
                "8",
                "-m",
                model,
            ])
            .args(["--header-timeout-secs", "5", "--body-timeout-secs", "5"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("fastgen serve starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
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

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends raw bytes; (status, body) or why there was no answer.
    pub fn exchange(&self, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut s = TcpStream::connect(&self.addr).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        // The server may answer (413) before it has read all of a large body.
        let _ = s.write_all(raw);
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(format!(
                        "{HANG}: no answer within {} s",
                        ANSWER_WITHIN.as_secs()
                    ))
                }
                Err(e) if out.is_empty() => return Err(format!("read: {e}")),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&out);
        let Some((head, _)) = text.split_once("\r\n\r\n") else {
            return Err(format!("no response head: {:?}", cut(&text, 200)));
        };
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        let body_at = head.len() + 4;
        status
            .map(|st| (st, out[body_at..].to_vec()))
            .ok_or_else(|| format!("bad status line: {:?}", cut(head, 200)))
    }

    pub fn health(&self) -> bool {
        let req = b"GET /health HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n";
        matches!(self.exchange(req), Ok((200, _)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn valid(rng: &mut Rng) -> (&'static str, Value) {
    if rng.chance(50) {
        let v = json!({"messages": [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hi"}],
                       "max_tokens": 2, "temperature": 0, "stream": false});
        ("/v1/chat/completions", v)
    } else {
        (
            "/v1/completions",
            json!({"prompt": "Once", "max_tokens": 2, "temperature": 0.5}),
        )
    }
}

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(1e308),
        4 => json!(-0.0),
        5 => json!(""),
        6 => json!("x".repeat(rng.below(50_000))),
        7 => json!([]),
        8 => json!({}),
        9 => json!([1, "a", null, {"role": 5}]),
        10 => json!(true),
        _ => json!(i64::MIN),
    }
}

/// Changes a JSON value at a random place (field deleted, retyped, added, emptied).
fn mutate(rng: &mut Rng, v: &mut Value, depth: usize) {
    match v {
        Value::Object(map) if !map.is_empty() && depth < 4 && rng.chance(70) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            match rng.below(4) {
                0 => {
                    map.remove(&k);
                }
                1 => {
                    let name = *rng.pick(&[
                        "stop",
                        "seed",
                        "top_p",
                        "top_k",
                        "n",
                        "logprobs",
                        "kv",
                        "stream_options",
                        "ignore_eos",
                        "model",
                    ]);
                    map.insert(name.into(), odd_value(rng));
                }
                _ => mutate(rng, map.get_mut(&k).unwrap(), depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 4 && rng.chance(70) => {
            let i = rng.below(items.len());
            if rng.chance(20) {
                let copy = items[i].clone();
                // Up to 200 copies: prompts of a few thousand tokens at most, whose
                // prefill stays well within the answer deadline.
                items.extend(std::iter::repeat_n(copy, rng.below(200)));
            } else {
                mutate(rng, &mut items[i], depth + 1);
            }
        }
        _ => *v = odd_value(rng),
    }
}

/// Request `index` of the run with `seed`: its raw bytes.
pub fn generate(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng::for_input(seed, index);
    let (mut path, mut v) = valid(&mut rng);
    let mut content_type = "application/json";
    let body: Vec<u8> = match rng.below(10) {
        0 => {
            // Deep nesting.
            let d = *rng.pick(&[10, 200, 5_000, 100_000]);
            let inner = "[".repeat(d) + &"]".repeat(d);
            format!("{{\"prompt\": {inner}, \"max_tokens\": 1}}").into_bytes()
        }
        1 => {
            // Invalid UTF-8 inside a string, or bytes cut mid-character.
            let mut b = v.to_string().into_bytes();
            let at = b.len() / 2;
            b.splice(at..at, [0xFF, 0xC3, 0x28, 0xED, 0xA0, 0x80]);
            b
        }
        2 => {
            // Huge: past the 1 MiB body limit, or just under it.
            let n = *rng.pick(&[(1 << 20) - 200, 1 << 20, 3 << 20]);
            json!({"prompt": "a".repeat(n), "max_tokens": 1})
                .to_string()
                .into_bytes()
        }
        3 => {
            let mut b = v.to_string().into_bytes();
            let cut = rng.below(b.len());
            b.truncate(cut);
            b
        }
        4 => {
            content_type = *rng.pick(&[
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-8",
                "",
            ]);
            v.to_string().into_bytes()
        }
        5 => {
            path = *rng.pick(&[
                "/v1/completions",
                "/v1/chat/completions",
                "/v1/embeddings",
                "/health/../v1/completions",
                "/%ff",
            ]);
            v.to_string().into_bytes()
        }
        6 => {
            let n = rng.below(2000);
            rng.bytes(n)
        }
        _ => {
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut v, 0);
            }
            v.to_string().into_bytes()
        }
    };
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    if !content_type.is_empty() {
        head += &format!("Content-Type: {content_type}\r\n");
    }
    head += &format!("Content-Length: {}\r\n\r\n", body.len());
    let mut raw = head.into_bytes();
    raw.extend(body);
    raw
}

/// Whether an answer is documented: 200 with a JSON or SSE body, or a 4xx with the error
/// object (`message`, `type`, `param`, `code`).
pub fn classify(answer: Result<(u16, Vec<u8>), String>) -> Outcome {
    let (status, body) = match answer {
        Ok(a) => a,
        Err(why) if why.starts_with(HANG) => return Outcome::Hang(why),
        Err(why) => return Outcome::Crash(why),
    };
    let text = String::from_utf8_lossy(&body);
    match status {
        200 => Outcome::Ok,
        400..=499 => {
            // A chunked body: the JSON is between the chunk sizes.
            let json = text
                .find('{')
                .zip(text.rfind('}'))
                .map(|(a, b)| &text[a..=b]);
            let v: Option<Value> = json.and_then(|j| serde_json::from_str(j).ok());
            let shaped = v.as_ref().is_some_and(|v| {
                let e = &v["error"];
                ["message", "type", "param", "code"]
                    .iter()
                    .all(|k| e.get(k).is_some())
            });
            if shaped {
                Outcome::Clear(format!("{status} {}", v.unwrap()["error"]["code"]))
            } else {
                Outcome::Unclear(format!(
                    "{status} without the error object: {:?}",
                    cut(&text, 200)
                ))
            }
        }
        _ => Outcome::Unclear(format!("status {status}: {:?}", cut(&text, 200))),
    }
}
