//! Chat template rendering: the Jinja template of GGUF `tokenizer.chat_template`, run with
//! minijinja the way llama.cpp and Hugging Face run it (blocks trimmed and left-stripped, the
//! template's final newline dropped), with `bos_token`, `eos_token`, `raise_exception`,
//! `strftime_now` and the Python string and dict methods templates commonly call
//! (`.strip()`, `.startswith()`, `.split()`, `.items()`, `.get()`, ...).

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use minijinja::value::{from_args, ValueKind};
use minijinja::{context, Environment, ErrorKind, State, Value};
use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may know others, such as `tool`).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

fn tmpl_err(e: minijinja::Error) -> Error {
    // `{:#}` includes the template line the error points at.
    Error::Template(format!("{e:#}"))
}

impl ChatTemplate {
    /// The template of `tokenizer.chat_template`, or `None` for a model without one (a base
    /// model). `bos_token` / `eos_token` are the texts of the BOS / EOS ids (empty if unset).
    pub fn from_gguf(g: &Gguf) -> Result<Option<ChatTemplate>> {
        const KEY: &str = "tokenizer.chat_template";
        if g.get(KEY).is_none() {
            return Ok(None);
        }
        let source = g.get_str(KEY)?;
        let id_keys = ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"];
        let mut texts = [String::new(), String::new()];
        if id_keys.iter().any(|k| g.get(k).is_some()) {
            let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
            for (key, text) in id_keys.iter().zip(texts.iter_mut()) {
                if g.get(key).is_none() {
                    continue;
                }
                let id = g.get_u64(key)?;
                *text = usize::try_from(id)
                    .ok()
                    .and_then(|i| tokens.get(i))
                    .map(|t| t.to_string())
                    .ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "{key} = {id} is outside the vocabulary of {} tokens",
                            tokens.len()
                        ))
                    })?;
            }
        }
        let [bos, eos] = texts;
        ChatTemplate::new(source, &bos, &eos).map(Some)
    }

    /// Compiles a template; syntax errors are reported here, not at render time.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(python_method);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(tmpl_err)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends with the opening of
    /// the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(tmpl_err)?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(tmpl_err)
    }
}

/// Python methods on template values, for templates written against Jinja2 in Python.
fn python_method(
    _state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    match value.kind() {
        ValueKind::String => string_method(value.as_str().unwrap_or_default(), method, args),
        ValueKind::Map => map_method(value, method, args),
        _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
    }
}

fn string_method(
    s: &str,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    // Characters `strip` and friends remove: the given set, or whitespace.
    let strips = |chars: Option<&str>, c: char| match chars {
        Some(set) => set.contains(c),
        None => c.is_whitespace(),
    };
    Ok(match method {
        "strip" | "lstrip" | "rstrip" => {
            let (chars,): (Option<&str>,) = from_args(args)?;
            Value::from(match method {
                "strip" => s.trim_matches(|c| strips(chars, c)),
                "lstrip" => s.trim_start_matches(|c| strips(chars, c)),
                _ => s.trim_end_matches(|c| strips(chars, c)),
            })
        }
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "capitalize" => {
            let mut chars = s.chars();
            Value::from(match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            })
        }
        "title" => {
            let mut out = String::with_capacity(s.len());
            let mut in_word = false;
            for c in s.chars() {
                if c.is_alphabetic() {
                    if in_word {
                        out.extend(c.to_lowercase());
                    } else {
                        out.extend(c.to_uppercase());
                    }
                    in_word = true;
                } else {
                    out.push(c);
                    in_word = false;
                }
            }
            Value::from(out)
        }
        "startswith" | "endswith" => {
            let (arg,): (Value,) = from_args(args)?;
            // A string or a tuple (list) of strings.
            let candidates: Vec<String> = match arg.as_str() {
                Some(one) => vec![one.to_string()],
                None => arg
                    .try_iter()?
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_default())
                    .collect(),
            };
            let hit = candidates.iter().any(|c| {
                if method == "startswith" {
                    s.starts_with(c.as_str())
                } else {
                    s.ends_with(c.as_str())
                }
            });
            Value::from(hit)
        }
        "replace" => {
            let (old, new, count): (&str, &str, Option<usize>) = from_args(args)?;
            Value::from(match count {
                Some(n) => s.replacen(old, new, n),
                None => s.replace(old, new),
            })
        }
        "split" => {
            let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
            let limit = maxsplit.filter(|&m| m >= 0).map(|m| m as usize + 1);
            let parts: Vec<Value> = match (sep, limit) {
                (Some(""), _) => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "empty separator",
                    ))
                }
                (Some(sep), Some(n)) => s.splitn(n, sep).map(Value::from).collect(),
                (Some(sep), None) => s.split(sep).map(Value::from).collect(),
                (None, limit) => split_whitespace(s, limit)
                    .into_iter()
                    .map(Value::from)
                    .collect(),
            };
            Value::from(parts)
        }
        "splitlines" => Value::from(s.lines().map(Value::from).collect::<Vec<_>>()),
        "join" => {
            let (items,): (Value,) = from_args(args)?;
            let parts: Vec<String> = items.try_iter()?.map(|v| v.to_string()).collect();
            Value::from(parts.join(s))
        }
        "find" => {
            let (needle,): (&str,) = from_args(args)?;
            // Python counts characters, not bytes.
            Value::from(
                s.find(needle)
                    .map_or(-1, |at| s[..at].chars().count() as i64),
            )
        }
        "count" => {
            let (needle,): (&str,) = from_args(args)?;
            Value::from(if needle.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(needle).count()
            })
        }
        "isdigit" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
        "isspace" => Value::from(!s.is_empty() && s.chars().all(char::is_whitespace)),
        "isalpha" => Value::from(!s.is_empty() && s.chars().all(char::is_alphabetic)),
        _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
    })
}

/// Python's `str.split()` without a separator: runs of whitespace separate, ends trimmed;
/// `limit` caps the number of parts, the last taking the rest.
fn split_whitespace(s: &str, limit: Option<usize>) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if limit.is_some_and(|n| parts.len() + 1 >= n) {
            parts.push(rest.trim_end());
            break;
        }
        match rest.find(char::is_whitespace) {
            Some(end) => {
                parts.push(&rest[..end]);
                rest = rest[end..].trim_start();
            }
            None => {
                parts.push(rest);
                break;
            }
        }
    }
    parts
}

fn map_method(
    map: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    Ok(match method {
        "items" => {
            from_args::<()>(args)?;
            let pairs: Vec<Value> = map
                .try_iter()?
                .map(|k| {
                    let v = map.get_item(&k).unwrap_or_default();
                    Value::from(vec![k, v])
                })
                .collect();
            Value::from(pairs)
        }
        "keys" => {
            from_args::<()>(args)?;
            Value::from(map.try_iter()?.collect::<Vec<_>>())
        }
        "values" => {
            from_args::<()>(args)?;
            let values: Vec<Value> = map
                .try_iter()?
                .map(|k| map.get_item(&k).unwrap_or_default())
                .collect();
            Value::from(values)
        }
        "get" => {
            let (key, default): (Value, Option<Value>) = from_args(args)?;
            match map.get_item(&key) {
                Ok(v) if !v.is_undefined() => v,
                _ => default.unwrap_or(Value::from(())),
            }
        }
        _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
    })
}

/// `raise_exception(message)`: templates call it to refuse a conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC time; supports `%d %m %Y %y %b %B %H %M %S %j %%`.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs, &format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Civil date (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar whose year starts in March, in 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn format_utc(secs: u64, format: &str) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    let name = MONTHS[month as usize - 1];
    let mut out = String::with_capacity(format.len() + 8);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let msgs = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!t.render(&msgs, false).unwrap().ends_with("assistant\n"));
    }

    #[test]
    fn blocks_are_trimmed_and_final_newline_dropped() {
        let src = "{%- for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&[ChatMessage::user("a")], false).unwrap(), "[a]\n");
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ bos_token }}{{ messages[0].content.strip().upper() }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("  hi ")], false).unwrap(),
            "<s>HI"
        );
        let err = t.render(&[ChatMessage::assistant("x")], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn python_string_and_dict_methods() {
        let render = |src: &str| {
            ChatTemplate::new(src, "", "")
                .unwrap()
                .render(&[ChatMessage::user("x")], false)
                .unwrap()
        };
        assert_eq!(
            render("{{ 'xxhixx'.strip('x') }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}"),
            "hi|a | a"
        );
        assert_eq!(
            render("{{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}"),
            "Hello World Hello"
        );
        assert_eq!(
            render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'bc')) }}"),
            "True True"
        );
        assert_eq!(
            render("{{ ' a  b c '.split() }} {{ 'a,b,c'.split(',', 1) }}"),
            r#"["a", "b", "c"] ["a", "b,c"]"#
        );
        assert_eq!(render("{{ ' a  b c '.split(none, 1) }}"), r#"["a", "b c"]"#);
        assert_eq!(
            render(
                "{{ '-'.join(['a', 'b']) }} {{ 'aXbX'.replace('X', '.') }} {{ 'héllo'.find('l') }}"
            ),
            "a-b a.b. 2"
        );
        assert_eq!(
            render("{% set d = {'a': 1} %}{% for k, v in d.items() %}{{ k }}={{ v }}{% endfor %} {{ d.get('a') }} {{ d.get('z', 'none') }} {{ d.get('z') is none }}"),
            "a=1 1 none True"
        );
        let err = ChatTemplate::new("{{ 'x'.no_such_method() }}", "", "")
            .unwrap()
            .render(&[], false);
        assert!(err.is_err());
    }

    #[test]
    fn syntax_errors_surface_at_construction() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    #[test]
    fn utc_formatting() {
        // 2024-11-25 10:09:05 UTC.
        let t = 1_732_529_345;
        assert_eq!(format_utc(t, "%d %b %Y"), "25 Nov 2024");
        assert_eq!(
            format_utc(t, "%Y-%m-%d %H:%M:%S %j %B %%"),
            "2024-11-25 10:09:05 330 November %"
        );
        assert_eq!(format_utc(0, "%d %B %Y"), "01 January 1970");
        assert_eq!(format_utc(951_782_400, "%Y-%m-%d"), "2000-02-29");
    }
}
