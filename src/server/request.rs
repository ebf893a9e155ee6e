//! Request bodies: JSON in, a checked [`GenRequest`] out, or an OpenAI-shaped 400 naming the
//! field at fault. Pure functions (no model, no I/O), so every rule is unit-tested here.
//!
//! Fields follow OpenAI's chat and legacy completions APIs; `null` means absent. Fields that
//! ask for something fastgen cannot do (`n` > 1, penalties, logprobs, tools, ...) are refused
//! rather than silently ignored; fields it has no use for (`user`, `metadata`, ...) are ignored.

use super::error::ApiError;
use super::kv::{served_kind, served_names, KvKind, KvRequest, DEFAULT_RECOVERY};
use fastgen::chat::ChatMessage;
use fastgen::compress::DEFAULT_COMPRESS_FROM;
use serde_json::{Map, Value};

/// Most stop sequences per request (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// OpenAI's range for `temperature`.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Server-wide limits the request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `max_tokens` a request may ask for; also the default.
    pub max_tokens_limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// `/v1/chat/completions`: rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// `/v1/completions` with text: sent as is.
    Text(String),
    /// `/v1/completions` with token ids.
    Tokens(Vec<u32>),
}

impl Prompt {
    /// The request field the prompt came from (for error messages).
    pub fn param(&self) -> &'static str {
        match self {
            Prompt::Chat(_) => "messages",
            Prompt::Text(_) | Prompt::Tokens(_) => "prompt",
        }
    }
}

/// A checked generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    /// None: up to the server's limit (and the context).
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    /// Extension (as in llama.cpp): keep the K most likely tokens, 0 = off.
    pub top_k: usize,
    /// None: a fresh seed per request.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`: add OpenAI's final usage-only chunk.
    pub include_usage: bool,
    /// Extension (as in llama.cpp and vLLM): generate past end-of-generation tokens, up to
    /// `max_tokens` (for benchmarks).
    pub ignore_eos: bool,
    /// Extension (as in llama.cpp): continue the kept cache of a conversation whose tokens
    /// begin this prompt, and keep this one's for its next turn (default true).
    pub cache_prompt: bool,
    pub kv: KvRequest,
}

type R<T> = Result<T, ApiError>;

/// Parses a body as JSON (400 with the parser's position when it is not).
pub fn parse_json(body: &[u8]) -> R<Value> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::invalid(
            "the request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))
}

/// `POST /v1/chat/completions`.
pub fn parse_chat(body: &Value, limits: &Limits) -> R<GenRequest> {
    let f = Fields::of(body)?;
    let messages = match f.get("messages") {
        None => {
            return Err(ApiError::invalid_param(
                "messages",
                "'messages' is required",
            ))
        }
        Some(v) => parse_messages(v)?,
    };
    f.refuse_unless(
        "logprobs",
        |v| v == &Value::Bool(false),
        "logprobs are not supported",
    )?;
    f.refuse_unless("top_logprobs", is_zero, "logprobs are not supported")?;
    f.refuse_unless("tools", is_empty, "tools are not supported")?;
    f.refuse_unless("functions", is_empty, "function calling is not supported")?;
    f.refuse_unless(
        "response_format",
        |v| v.get("type").and_then(Value::as_str) == Some("text"),
        "only the text response format is supported",
    )?;
    let max_tokens = match f.uint("max_completion_tokens")? {
        Some(n) => Some(n),
        None => f.uint("max_tokens")?,
    };
    let param = if f.get("max_completion_tokens").is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    common(&f, Prompt::Chat(messages), max_tokens, param, limits)
}

/// `POST /v1/completions`.
pub fn parse_completion(body: &Value, limits: &Limits) -> R<GenRequest> {
    let f = Fields::of(body)?;
    let prompt = match f.get("prompt") {
        None => return Err(ApiError::invalid_param("prompt", "'prompt' is required")),
        Some(v) => parse_prompt(v)?,
    };
    f.refuse_unless("logprobs", is_zero, "logprobs are not supported")?;
    f.refuse_unless(
        "echo",
        |v| v == &Value::Bool(false),
        "echo is not supported",
    )?;
    f.refuse_unless(
        "suffix",
        |v| v.as_str() == Some(""),
        "suffix is not supported",
    )?;
    f.refuse_unless("best_of", |v| v.as_u64() == Some(1), "best_of must be 1")?;
    let max_tokens = f.uint("max_tokens")?;
    common(&f, prompt, max_tokens, "max_tokens", limits)
}

/// The fields both endpoints share.
fn common(
    f: &Fields,
    prompt: Prompt,
    max_tokens: Option<usize>,
    max_tokens_param: &str,
    limits: &Limits,
) -> R<GenRequest> {
    let model = f.string("model")?.map(str::to_string);
    if let Some(n) = max_tokens {
        if n == 0 || n > limits.max_tokens_limit {
            return Err(ApiError::invalid_param(
                max_tokens_param,
                format!(
                    "'{max_tokens_param}' must be between 1 and {} (the server's limit), got {n}",
                    limits.max_tokens_limit
                ),
            ));
        }
    }
    let temperature = f.number("temperature")?.unwrap_or(1.0);
    if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
        return Err(ApiError::invalid_param(
            "temperature",
            format!("'temperature' must be between 0 and {MAX_TEMPERATURE}, got {temperature}"),
        ));
    }
    let top_p = f.number("top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid_param(
            "top_p",
            format!("'top_p' must be greater than 0 and at most 1, got {top_p}"),
        ));
    }
    let top_k = f.uint("top_k")?.unwrap_or(0);
    let seed = f.seed("seed")?;
    let stop = parse_stop(f.get("stop"))?;
    let stream = f.boolean("stream")?.unwrap_or(false);
    let ignore_eos = f.boolean("ignore_eos")?.unwrap_or(false);
    let cache_prompt = f.boolean("cache_prompt")?.unwrap_or(true);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(wrong_type("stream_options.include_usage", "a boolean", v)),
        },
        Some(v) => return Err(wrong_type("stream_options", "an object", v)),
    };
    if let Some(n) = f.uint("n")? {
        if n != 1 {
            return Err(ApiError::invalid_param(
                "n",
                format!("'n' must be 1 (one choice per request), got {n}"),
            ));
        }
    }
    f.refuse_unless("presence_penalty", is_zero, "penalties are not supported")?;
    f.refuse_unless("frequency_penalty", is_zero, "penalties are not supported")?;
    f.refuse_unless("logit_bias", is_empty, "logit_bias is not supported")?;
    let kv = parse_kv(f)?;
    Ok(GenRequest {
        model,
        prompt,
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        stop,
        stream,
        include_usage,
        ignore_eos,
        cache_prompt,
        kv,
    })
}

/// `kv_policy` (default `fastgen`), `kv_recovery` T, 0 < T <= 1, and `kv_compress_from`
/// (default `DEFAULT_COMPRESS_FROM`; 0 compresses right after the prompt).
fn parse_kv(f: &Fields) -> R<KvRequest> {
    let kind = match f.string("kv_policy")? {
        None => KvKind::FastGen,
        Some(s) => served_kind(s).ok_or_else(|| {
            ApiError::invalid_param(
                "kv_policy",
                format!("'kv_policy' must be one of {}, got '{s}'", served_names()),
            )
        })?,
    };
    let recovery = f.number_f64("kv_recovery")?.unwrap_or(DEFAULT_RECOVERY);
    if !(recovery > 0.0 && recovery <= 1.0) {
        return Err(ApiError::invalid_param(
            "kv_recovery",
            format!("'kv_recovery' must be greater than 0 and at most 1, got {recovery}"),
        ));
    }
    let compress_from = f.uint("kv_compress_from")?.unwrap_or(DEFAULT_COMPRESS_FROM);
    Ok(KvRequest {
        kind,
        recovery,
        compress_from,
    })
}

fn parse_messages(v: &Value) -> R<Vec<ChatMessage>> {
    let arr = v
        .as_array()
        .ok_or_else(|| wrong_type("messages", "an array of messages", v))?;
    if arr.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "'messages' must hold at least one message",
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect()
}

fn parse_message(i: usize, m: &Value) -> R<ChatMessage> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let obj = m
        .as_object()
        .ok_or_else(|| wrong_type(&format!("messages[{i}]"), "an object", m))?;
    let role = match obj.get("role") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param(
                &at("role"),
                format!("'{}' is required", at("role")),
            ))
        }
        Some(v) => return Err(wrong_type(&at("role"), "a string", v)),
    };
    let role = match role {
        "system" | "user" | "assistant" => role,
        // OpenAI's newer name for the system role.
        "developer" => "system",
        other => {
            return Err(ApiError::invalid_param(
                &at("role"),
                format!(
                    "'{}' must be system, developer, user or assistant, got '{other}'",
                    at("role")
                ),
            ))
        }
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        // An assistant turn may carry no text.
        None | Some(Value::Null) if role == "assistant" => String::new(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param(
                &at("content"),
                format!("'{}' is required", at("content")),
            ))
        }
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let part = format!("messages[{i}].content[{j}]");
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => {
                        return Err(ApiError::invalid_param(
                            &part,
                            format!("'{part}.text' must be a string"),
                        ))
                    }
                    (Some(other), _) => {
                        return Err(ApiError::invalid_param(
                            &part,
                            format!(
                                "content parts of type '{other}' are not supported (text only)"
                            ),
                        ))
                    }
                    (None, _) => {
                        return Err(ApiError::invalid_param(
                            &part,
                            format!("'{part}' must be an object with a 'type'"),
                        ))
                    }
                }
            }
            texts.join("\n")
        }
        Some(v) => {
            return Err(wrong_type(
                &at("content"),
                "a string or an array of text parts",
                v,
            ))
        }
    };
    Ok(ChatMessage::new(role, content))
}

/// `prompt`: a string, a one-element array of strings, token ids, or a one-element array of
/// token-id arrays (OpenAI's batch forms, limited to one prompt).
fn parse_prompt(v: &Value) -> R<Prompt> {
    const EXPECTED: &str = "a string or an array of token ids";
    match v {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(a) if a.is_empty() => Err(ApiError::invalid_param(
            "prompt",
            "'prompt' must not be an empty array",
        )),
        Value::Array(a) if a.len() == 1 && (a[0].is_string() || a[0].is_array()) => {
            parse_prompt(&a[0])
        }
        Value::Array(a) if a.iter().all(|x| x.is_string() || x.is_array()) => {
            Err(ApiError::invalid_param(
                "prompt",
                format!("one prompt per request is supported, got {}", a.len()),
            ))
        }
        Value::Array(a) => a
            .iter()
            .map(|x| match x.as_u64() {
                Some(id) if id <= u32::MAX as u64 => Ok(id as u32),
                _ => Err(ApiError::invalid_param(
                    "prompt",
                    format!("'prompt' must be {EXPECTED}; found element {x}"),
                )),
            })
            .collect::<R<Vec<u32>>>()
            .map(Prompt::Tokens),
        other => Err(wrong_type("prompt", EXPECTED, other)),
    }
}

fn parse_stop(v: Option<&Value>) -> R<Vec<String>> {
    let list = match v {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong_type("stop", "a string or an array of strings", x))
            })
            .collect::<R<Vec<_>>>()?,
        Some(other) => return Err(wrong_type("stop", "a string or an array of strings", other)),
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid_param(
            "stop",
            format!("at most {MAX_STOP} stop sequences, got {}", list.len()),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            "stop",
            "stop sequences must not be empty",
        ));
    }
    Ok(list)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid_param(
        param,
        format!("'{param}' must be {expected}, got {}", type_name(got)),
    )
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0) || v == &Value::Bool(false)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Typed access to the top-level fields; `null` reads as absent.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(body: &'a Value) -> R<Self> {
        match body {
            Value::Object(obj) => Ok(Fields { obj }),
            other => Err(ApiError::invalid(format!(
                "the request body must be a JSON object, got {}",
                type_name(other)
            ))),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> R<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong_type(name, "a string", v)),
        }
    }

    fn boolean(&self, name: &str) -> R<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong_type(name, "a boolean", v)),
        }
    }

    fn number(&self, name: &str) -> R<Option<f32>> {
        Ok(self.number_f64(name)?.map(|x| x as f32))
    }

    fn number_f64(&self, name: &str) -> R<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(wrong_type(name, "a number", v)),
        }
    }

    /// A non-negative integer.
    fn uint(&self, name: &str) -> R<Option<usize>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(x) => Ok(Some(usize::try_from(x).unwrap_or(usize::MAX))),
                None => Err(ApiError::invalid_param(
                    name,
                    format!("'{name}' must be a non-negative integer, got {n}"),
                )),
            },
            Some(v) => Err(wrong_type(name, "an integer", v)),
        }
    }

    /// Any integer; negative seeds wrap into u64.
    fn seed(&self, name: &str) -> R<Option<u64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(x), _) => Ok(Some(x)),
                (None, Some(x)) => Ok(Some(x as u64)),
                _ => Err(ApiError::invalid_param(
                    name,
                    format!("'{name}' must be an integer, got {n}"),
                )),
            },
            Some(v) => Err(wrong_type(name, "an integer", v)),
        }
    }

    /// 400 if the field is present with a value other than the accepted default.
    fn refuse_unless(&self, name: &str, ok: impl Fn(&Value) -> bool, why: &str) -> R<()> {
        match self.get(name) {
            Some(v) if !ok(v) => Err(ApiError::invalid_param(name, format!("{why} ('{name}')"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_tokens_limit: 512,
    };

    fn chat(v: Value) -> R<GenRequest> {
        parse_chat(&v, &LIMITS)
    }
    fn completion(v: Value) -> R<GenRequest> {
        parse_completion(&v, &LIMITS)
    }
    fn param_of<T: std::fmt::Debug>(r: R<T>) -> String {
        let e = r.expect_err("should be refused");
        assert_eq!(e.status.as_u16(), 400, "{e}");
        assert_eq!(e.kind, "invalid_request_error");
        e.param.unwrap_or_default()
    }
    fn hi() -> Value {
        json!([{"role": "user", "content": "hi"}])
    }

    #[test]
    fn minimal_chat_gets_openai_defaults() {
        let r = chat(json!({"messages": hi()})).unwrap();
        assert_eq!(r.prompt, Prompt::Chat(vec![ChatMessage::user("hi")]));
        assert_eq!(r.model, None);
        assert_eq!(r.max_tokens, None);
        assert_eq!((r.temperature, r.top_p, r.top_k), (1.0, 1.0, 0));
        assert_eq!(r.seed, None);
        assert!(!r.stream && !r.include_usage && !r.ignore_eos && r.stop.is_empty());
        assert!(r.cache_prompt);
        assert_eq!(r.kv.kind, KvKind::FastGen);
        assert_eq!(r.kv.recovery, DEFAULT_RECOVERY);
    }

    #[test]
    fn full_chat_request_is_read() {
        let r = chat(json!({
            "model": "smollm2",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null},
            ],
            "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 3,
            "seed": -1, "stop": ["x", "yz"], "stream": true,
            "stream_options": {"include_usage": true}, "n": 1,
            "kv_policy": "h2o", "kv_recovery": 0.9,
            "presence_penalty": 0, "logit_bias": {}, "user": "ignored", "logprobs": false,
        }))
        .unwrap();
        assert_eq!(
            r.prompt,
            Prompt::Chat(vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("a\nb"),
                ChatMessage::assistant(""),
            ])
        );
        assert_eq!(r.model.as_deref(), Some("smollm2"));
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!((r.temperature, r.top_p, r.top_k), (0.0, 0.5, 3));
        assert_eq!(r.seed, Some(u64::MAX));
        assert_eq!(r.stop, vec!["x".to_string(), "yz".to_string()]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.kv.kind, KvKind::H2o);
        assert!((r.kv.recovery - 0.9).abs() < 1e-6);
    }

    #[test]
    fn nulls_read_as_absent() {
        let r = chat(
            json!({"messages": hi(), "max_tokens": null, "temperature": null,
            "stop": null, "stream": null, "kv_policy": null, "model": null}),
        )
        .unwrap();
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.temperature, 1.0);
    }

    #[test]
    fn malformed_json_and_non_objects_are_400() {
        for body in [&b"{"[..], b"", b"  ", b"{\"messages\": [}", b"nul"] {
            let e = parse_json(body).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
        }
        for v in [json!([1, 2]), json!("x"), json!(3), json!(null)] {
            let e = chat(v).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains("JSON object"), "{}", e.message);
        }
    }

    #[test]
    fn wrong_types_name_their_field() {
        let cases = [
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [3]}), "messages[0]"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": 1, "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0]",
            ),
            (json!({"messages": hi(), "model": 3}), "model"),
            (json!({"messages": hi(), "max_tokens": "10"}), "max_tokens"),
            (json!({"messages": hi(), "max_tokens": 1.5}), "max_tokens"),
            (json!({"messages": hi(), "max_tokens": -1}), "max_tokens"),
            (
                json!({"messages": hi(), "temperature": "hot"}),
                "temperature",
            ),
            (json!({"messages": hi(), "top_p": [1]}), "top_p"),
            (json!({"messages": hi(), "seed": 1.5}), "seed"),
            (json!({"messages": hi(), "seed": "1"}), "seed"),
            (json!({"messages": hi(), "stop": 3}), "stop"),
            (json!({"messages": hi(), "stop": ["a", 3]}), "stop"),
            (json!({"messages": hi(), "stream": "yes"}), "stream"),
            (json!({"messages": hi(), "ignore_eos": 1}), "ignore_eos"),
            (
                json!({"messages": hi(), "stream_options": 1}),
                "stream_options",
            ),
            (json!({"messages": hi(), "kv_policy": 1}), "kv_policy"),
            (
                json!({"messages": hi(), "kv_recovery": "high"}),
                "kv_recovery",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(chat(body.clone())), param, "{body}");
        }
    }

    #[test]
    fn out_of_range_settings_are_400() {
        let cases = [
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 513}), "max_tokens"),
            (
                json!({"max_completion_tokens": 10_000}),
                "max_completion_tokens",
            ),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_p": 1.01}), "top_p"),
            (json!({"n": 2}), "n"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": ""}), "stop"),
            (json!({"kv_policy": "snapkv"}), "kv_policy"),
            (json!({"kv_recovery": 0}), "kv_recovery"),
            (json!({"kv_recovery": 1.5}), "kv_recovery"),
            (json!({"kv_recovery": -0.5}), "kv_recovery"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"frequency_penalty": 1}), "frequency_penalty"),
            (json!({"logit_bias": {"1": 5}}), "logit_bias"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
        ];
        for (extra, param) in cases {
            let mut body = json!({"messages": hi()});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            assert_eq!(param_of(chat(body.clone())), param, "{body}");
        }
    }

    #[test]
    fn limits_at_the_edges_are_accepted() {
        for extra in [
            json!({"max_tokens": 512, "temperature": 2, "top_p": 1, "kv_recovery": 1}),
            json!({"max_tokens": 1, "temperature": 0, "top_p": 1e-6, "kv_recovery": 1e-6}),
        ] {
            let mut body = json!({"messages": hi()});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            chat(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn completion_prompt_forms() {
        let p = |v: Value| completion(json!({"prompt": v})).map(|r| r.prompt);
        assert_eq!(p(json!("abc")).unwrap(), Prompt::Text("abc".into()));
        assert_eq!(p(json!(["abc"])).unwrap(), Prompt::Text("abc".into()));
        assert_eq!(p(json!([1, 2, 3])).unwrap(), Prompt::Tokens(vec![1, 2, 3]));
        assert_eq!(p(json!([[4, 5]])).unwrap(), Prompt::Tokens(vec![4, 5]));
        for bad in [
            json!([]),
            json!(["a", "b"]),
            json!([[1], [2]]),
            json!([1, -2]),
            json!([1, 1.5]),
            json!([1, 5_000_000_000u64]),
            json!([1, "a"]),
            json!(3),
            json!({"text": "x"}),
        ] {
            assert_eq!(param_of(p(bad.clone())), "prompt", "{bad}");
        }
        assert_eq!(param_of(completion(json!({}))), "prompt");
        assert_eq!(
            param_of(completion(json!({"prompt": "a", "echo": true}))),
            "echo"
        );
        assert_eq!(
            param_of(completion(json!({"prompt": "a", "best_of": 2}))),
            "best_of"
        );
        assert_eq!(
            param_of(completion(json!({"prompt": "a", "logprobs": 3}))),
            "logprobs"
        );
        assert_eq!(
            param_of(completion(json!({"prompt": "a", "suffix": "z"}))),
            "suffix"
        );
        // The chat endpoint's messages are not a completion prompt.
        assert_eq!(param_of(completion(json!({"messages": hi()}))), "prompt");
        assert_eq!(param_of(chat(json!({"prompt": "a"}))), "messages");
    }

    #[test]
    fn error_body_has_openai_shape() {
        let e = chat(json!({"messages": hi(), "top_p": 3})).unwrap_err();
        let b = e.body();
        let err = b["error"].as_object().unwrap();
        let mut keys: Vec<_> = err.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["code", "message", "param", "type"]);
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["param"], "top_p");
        assert!(err["message"].as_str().unwrap().contains("top_p"));
    }
}
