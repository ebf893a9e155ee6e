//! Chat template rendering: the Jinja template of GGUF `tokenizer.chat_template`, run with
//! minijinja the way llama.cpp and Hugging Face run it (blocks trimmed and left-stripped, the
//! template's final newline dropped), with `bos_token`, `eos_token`, `raise_exception`,
//! `strftime_now` and the Python string and dict methods templates commonly call
//! (`.strip()`, `.startswith()`, `.split()`, `.items()`, `.get()`, ...).

mod limits;
mod methods;
mod sandbox;
mod time;

use crate::error::{shown, Error, Result};
use crate::gguf::Gguf;
pub use limits::Limits;
use limits::{human_bytes, CappedWriter};
use minijinja::{context, Environment, ErrorKind};
use sandbox::Ending;
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
/// The GGUF key of a model's template.
const KEY: &str = "tokenizer.chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// How errors name the template (the file and key it came from).
    name: String,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// A minijinja error on one line (its message may hold the template's text or a
/// `raise_exception` message with newlines).
fn one_line(e: &minijinja::Error) -> String {
    shown(&e.to_string())
}

impl ChatTemplate {
    /// The template of `tokenizer.chat_template`, or `None` for a model without one (a base
    /// model). `bos_token` / `eos_token` are the texts of the BOS / EOS ids (empty if unset).
    pub fn from_gguf(g: &Gguf) -> Result<Option<ChatTemplate>> {
        ChatTemplate::from_gguf_named(g, KEY)
    }

    /// [`ChatTemplate::from_gguf`] with the name errors give the template (the file's).
    pub fn from_gguf_named(g: &Gguf, name: &str) -> Result<Option<ChatTemplate>> {
        if g.get(KEY).is_none() {
            return Ok(None);
        }
        let source = g.get_str(KEY)?;
        ChatTemplate::with_gguf_tokens(g, source, name).map(Some)
    }

    /// Compiles `source` with the texts of `g`'s BOS and EOS ids (a template given for a
    /// model in place of its own); `name` names it in errors.
    pub fn with_gguf_tokens(g: &Gguf, source: &str, name: &str) -> Result<ChatTemplate> {
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
        ChatTemplate::compile(name, source, &bos, &eos)
    }

    /// Compiles a template; syntax errors are reported here, not at render time.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        ChatTemplate::compile("the chat template", source, bos_token, eos_token)
    }

    fn compile(name: &str, source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_fuel(Some(limits::FUEL));
        env.set_recursion_limit(limits::RECURSION);
        env.set_unknown_method_callback(methods::python_method);
        env.add_function("raise_exception", methods::raise_exception);
        env.add_function("strftime_now", time::strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| {
                Error::Template(format!(
                    "{} does not compile: {}",
                    shown(name),
                    one_line(&e)
                ))
            })?;
        Ok(ChatTemplate {
            env,
            name: shown(name),
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Names the template in errors (`FILE's tokenizer.chat_template`, a template file).
    pub fn with_name(mut self, name: impl Into<String>) -> ChatTemplate {
        self.name = shown(&name.into());
        self
    }

    /// How errors name the template.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends with the opening of
    /// the assistant's turn. The render runs within [`Limits::for_input`] of the
    /// conversation's size (and minijinja's fuel and recursion limits); past one, the error
    /// names the template and the limit.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let input: usize = (messages.iter())
            .map(|m| m.role.len() + m.content.len())
            .sum::<usize>()
            + self.bos_token.len()
            + self.eos_token.len();
        self.render_within(messages, add_generation_prompt, Limits::for_input(input))
    }

    /// [`ChatTemplate::render`] within the given limits.
    pub fn render_within(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        limits: Limits,
    ) -> Result<String> {
        let ending = sandbox::run(limits.memory_bytes, limits.timeout, || {
            self.render_capped(messages, add_generation_prompt, limits.output_bytes)
        });
        let why = match ending {
            Ending::Returned(Ok(text)) => return Ok(text),
            Ending::Returned(Err(why)) => why,
            Ending::OutOfMemory => format!(
                "exceeded the memory limit of {}",
                human_bytes(limits.memory_bytes)
            ),
            Ending::TimedOut => format!(
                "did not finish within the time limit of {} s",
                limits.timeout.as_secs_f64()
            ),
            Ending::Crashed(how) => how,
        };
        Err(Error::Template(format!("{} {why}", self.name)))
    }

    /// Renders in this process with an output limit; the error says what went wrong, for
    /// `render_within` to prefix with the template's name.
    fn render_capped(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        output_bytes: usize,
    ) -> std::result::Result<String, String> {
        let tmpl = (self.env.get_template(TEMPLATE_NAME)).map_err(|e| one_line(&e))?;
        let mut out = CappedWriter::new(output_bytes);
        let rendered = tmpl.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.buf).map_err(|_| "wrote invalid UTF-8".to_string()),
            Err(_) if out.exceeded => Err(format!(
                "wrote more than the output limit of {}",
                human_bytes(output_bytes)
            )),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(format!(
                "exceeded the limit of {} instructions (minijinja fuel)",
                limits::FUEL
            )),
            Err(e) if e.detail() == Some("recursion limit exceeded") => Err(format!(
                "exceeded the recursion limit of {}",
                limits::RECURSION
            )),
            Err(e) => Err(format!("failed: {}", one_line(&e))),
        }
    }
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

    /// Renders and expects a refusal: one line, naming the template and `limit`.
    fn refused(src: &str, limit: &str) -> String {
        let t = ChatTemplate::new(src, "", "")
            .unwrap()
            .with_name("hostile.jinja");
        let t0 = std::time::Instant::now();
        let err = t
            .render(&[ChatMessage::user("hello there")], true)
            .unwrap_err()
            .to_string();
        eprintln!("{src}\n  -> {err} ({:.2} s)", t0.elapsed().as_secs_f64());
        assert!(!err.contains('\n'), "{err}");
        assert!(err.starts_with("chat template: hostile.jinja "), "{err}");
        assert!(err.contains(limit), "{err}");
        err
    }

    #[test]
    fn hostile_templates_are_refused_by_a_limit() {
        refused("{{ 'x' * 100000000 }}", "output limit of 1.0 MiB");
        refused("{{ (messages | tojson) * 1000000 }}", "output limit");
        let doubling = |n| {
            format!("{{% set ns = namespace(s='x') %}}{{% for i in range({n}) %}}{{% set ns.s = ns.s ~ ns.s %}}{{% endfor %}}{{{{ ns.s | length }}}}")
        };
        refused(&doubling(30), "memory limit of 512");
        refused(&doubling(64), "memory limit of 512");
        refused(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "limit of 50000000 instructions",
        );
        refused(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursion limit of 100",
        );
        refused("{{ raise_exception('no\nway') }}", "no\\nway");
    }

    #[test]
    fn the_time_limit_names_itself() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let limits = Limits {
            timeout: std::time::Duration::from_millis(100),
            ..Limits::for_input(0)
        };
        let err = t.render_within(&[], false, limits).unwrap_err().to_string();
        assert_eq!(
            err,
            "chat template: the chat template did not finish within the time limit of 0.1 s"
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_one_line() {
        let err = ChatTemplate::new("{% for %}\n{{ x }}", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("chat template: the chat template does not compile: syntax error"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    /// Written for these tests in the shape of Llama 3's template: a system header with the
    /// date, trimmed contents, end-of-turn tokens.
    const LLAMA3_STYLE: &str = r#"{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{%- if not date_string is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\nToday Date: " + date_string + "\n\n" }}
{{- system_message + "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}"#;

    /// Written for these tests in the shape of Mistral's: [INST] turns, alternation checked
    /// with raise_exception, the system prompt folded into the last user turn.
    const MISTRAL_STYLE: &str = r#"{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('conversation roles must alternate user/assistant') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.last and system_message is defined %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- else %}
        {{- ' ' + message['content'] + eos_token }}
    {%- endif %}
{%- endfor %}"#;

    /// A system message and `turns` user/assistant pairs, then a user message.
    fn long_chat(turns: usize) -> Vec<ChatMessage> {
        let mut msgs = vec![ChatMessage::system("You are a helpful assistant.")];
        for i in 0..turns {
            msgs.push(ChatMessage::user(
                format!("Question {i}: what is {i} + {i}? ").repeat(20),
            ));
            msgs.push(ChatMessage::assistant(format!("It is {}.", 2 * i)));
        }
        msgs.push(ChatMessage::user("And the last one?"));
        msgs
    }

    /// Instructions (fuel) a render spends.
    fn fuel_spent(t: &ChatTemplate, msgs: &[ChatMessage]) -> u64 {
        let tmpl = t.env.get_template(TEMPLATE_NAME).unwrap();
        let captured = tmpl
            .render_captured(context! {
                messages => msgs,
                add_generation_prompt => true,
                bos_token => t.bos_token,
                eos_token => t.eos_token,
            })
            .unwrap();
        captured.state().fuel_levels().unwrap().0
    }

    #[test]
    fn real_templates_render_long_chats_within_the_limits() {
        let mut templates = vec![
            (
                "llama3-style".to_string(),
                ChatTemplate::new(LLAMA3_STYLE, "<|begin_of_text|>", "<|eot_id|>").unwrap(),
            ),
            (
                "mistral-style".to_string(),
                ChatTemplate::new(MISTRAL_STYLE, "<s>", "</s>").unwrap(),
            ),
            (
                "chatml".to_string(),
                ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap(),
            ),
        ];
        for name in ["smollm2", "qwen2.5-0.5b"] {
            let path = crate::fetch::ensure_model(name).unwrap();
            let g = Gguf::open(&path).unwrap();
            templates.push((
                name.to_string(),
                ChatTemplate::from_gguf(&g).unwrap().unwrap(),
            ));
        }
        // 2,001 turns: 4,003 messages, 1.1 MB.
        let chat = long_chat(2000);
        for (name, t) in &templates {
            let per_message = fuel_spent(t, &chat) / chat.len() as u64;
            let t0 = std::time::Instant::now();
            let text = t
                .render(&chat, true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            eprintln!(
                "{name}: {} messages, {} bytes out, {per_message} instructions per message, {:.0} ms",
                chat.len(),
                text.len(),
                t0.elapsed().as_secs_f64() * 1e3
            );
            assert!(text.contains("And the last one?"), "{name}");
            // The fuel allows chats of over 50,000 messages.
            assert!(per_message * 50_000 < limits::FUEL, "{name}: {per_message}");
        }
    }
}
