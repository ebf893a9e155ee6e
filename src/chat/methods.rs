//! Python methods on template values (`.strip()`, `.startswith()`, `.split()`, `.items()`,
//! `.get()`, ...) and `raise_exception`, for templates written against Jinja2 in Python.

use minijinja::value::{from_args, ValueKind};
use minijinja::{ErrorKind, State, Value};

/// Most items `str.join` takes: far past any real template, well short of a length that
/// overflows a buffer's size.
const MAX_JOIN_ITEMS: usize = 1 << 24;

/// Python methods on template values, for templates written against Jinja2 in Python.
pub(super) fn python_method(
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
            // A repeated list (`['a'] * 10**18`) claims a length nothing can hold; collecting
            // it would size a buffer from that claim and panic (found by examples/fuzz).
            if let Some(n) = items.len().filter(|&n| n > MAX_JOIN_ITEMS) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("join over {n} items is past the limit of {MAX_JOIN_ITEMS}"),
                ));
            }
            let mut out = String::new();
            for (i, v) in items.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(s);
                }
                out.push_str(&v.to_string());
            }
            Value::from(out)
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
pub(super) fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}
