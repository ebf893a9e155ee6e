//! Tokenizer and chat-template parity with llama.cpp on the reference fixtures:
//! `tokenize-MODEL.jsonl` (`{"text", "ids"}` from llama-server `/tokenize`, special tokens
//! parsed, nothing prepended) and, for the chat models, `greedy-MODEL.jsonl` (`prompt` = the
//! chat-rendered or raw text, `prompt_ids`). For every line: `encode(text) == ids` and
//! `decode(ids) == text` (also streamed token by token); for the chat lines, rendering the user
//! message with the model's template gives `prompt`. Gemma-3-270m (SentencePiece, a base model
//! without a chat template) has only the tokenize fixture.

use fastgen::chat::{ChatMessage, ChatTemplate};
use fastgen::tokenizer::{StreamDecoder, Tokenizer};
use std::path::PathBuf;

mod common;
use common::{ids as ids_of, read_jsonl};

/// Path of a pinned model's GGUF (fetched on first use).
fn model_path(short_name: &str) -> PathBuf {
    fastgen::fetch::ensure_model(short_name).unwrap_or_else(|e| panic!("model {short_name}: {e}"))
}

/// Tokenizer and chat template of a pinned model, from its GGUF.
fn load(short_name: &str) -> (Tokenizer, Option<ChatTemplate>) {
    let g = fastgen::gguf::Gguf::open(&model_path(short_name)).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let tpl = ChatTemplate::from_gguf(&g).unwrap();
    (tok, tpl)
}

/// Shortens a string for failure messages.
fn clip(s: &str) -> String {
    let c: String = s.chars().take(80).collect();
    if c.len() < s.len() {
        format!("{c:?}...")
    } else {
        format!("{c:?}")
    }
}

/// Tokenizes every line of both fixtures of one model; returns failures (empty when all
/// match).
fn check_model(short_name: &str, fixture: &str) -> Vec<String> {
    let (tok, tpl) = load(short_name);
    let mut failures = check_tokenize(short_name, &tok, fixture);
    failures.extend(check_greedy(short_name, &tok, tpl.as_ref(), fixture));
    failures
}

/// The text SentencePiece gives back: a U+2581 written in the text is a space once decoded
/// (llama.cpp encodes it as the `▁` token, which decodes to a space).
fn spm_decoded(tok: &Tokenizer, text: &str) -> String {
    if tok.model() == "llama" {
        text.replace('\u{2581}', " ")
    } else {
        text.to_string()
    }
}

/// `tokenize-FIXTURE.jsonl`: encode, decode and streamed decode of every line.
fn check_tokenize(short_name: &str, tok: &Tokenizer, fixture: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let lines = read_jsonl(&format!("tokenize-{fixture}.jsonl"));
    let mut matched = 0;
    for (i, line) in lines.iter().enumerate() {
        let text = line["text"].as_str().unwrap();
        let want = ids_of(&line["ids"]);
        let got = tok.encode(text).unwrap();
        let mut ok = true;
        if got != want {
            ok = false;
            failures.push(format!(
                "{fixture} tokenize line {i} {}: encode\n  got  {got:?}\n  want {want:?}",
                clip(text)
            ));
        }
        // Byte-level BPE: the `tokenizers` pipeline alone (its own special-token matching)
        // agrees too.
        if let Some(hf) = tok.hf() {
            let hf = hf.encode(text, false).unwrap();
            if hf.get_ids() != want.as_slice() {
                ok = false;
                failures.push(format!(
                    "{fixture} tokenize line {i}: tokenizers pipeline gives {:?}",
                    hf.get_ids()
                ));
            }
        }
        let back = tok.decode(&want);
        let want_back = spm_decoded(tok, text);
        let mut stream = StreamDecoder::new(tok);
        let mut streamed: String = want.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.flush());
        if back != want_back || streamed != want_back {
            ok = false;
            failures.push(format!(
                "{fixture} tokenize line {i}: decode gives {} / streams to {}",
                clip(&back),
                clip(&streamed)
            ));
        }
        matched += usize::from(ok);
    }
    eprintln!(
        "{short_name}: {matched}/{} tokenize lines match",
        lines.len()
    );
    failures
}

/// `greedy-FIXTURE.jsonl`: prompts, generated texts and chat renders.
fn check_greedy(
    short_name: &str,
    tok: &Tokenizer,
    tpl: Option<&ChatTemplate>,
    fixture: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    let greedy = read_jsonl(&format!("greedy-{fixture}.jsonl"));
    let (mut prompts_ok, mut generated_ok, mut chats, mut chats_ok) = (0, 0, 0, 0);
    for (i, line) in greedy.iter().enumerate() {
        let kind = line["kind"].as_str().unwrap();
        let prompt = line["prompt"].as_str().unwrap();
        let want = ids_of(&line["prompt_ids"]);
        let got = tok.encode(prompt).unwrap();
        let mut ok = true;
        if got != want {
            ok = false;
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
            failures.push(format!(
                "{fixture} greedy line {i} ({kind}): encode differs at {first_diff:?} \
                 (lengths {} vs {})",
                got.len(),
                want.len()
            ));
        }
        if tok.decode(&want) != prompt {
            ok = false;
            failures.push(format!(
                "{fixture} greedy line {i} ({kind}): decode differs"
            ));
        }
        prompts_ok += usize::from(ok);

        // Generated text: llama.cpp leaves the end-of-generation token out of it; streaming
        // token by token gives the same text as decoding all at once.
        let gen: Vec<u32> = ids_of(&line["greedy_ids"])
            .into_iter()
            .filter(|&id| !tok.is_eog(id))
            .collect();
        let want_text = line["greedy_text"].as_str().unwrap();
        let mut stream = StreamDecoder::new(tok);
        let mut streamed: String = gen.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.flush());
        let decoded = tok.decode(&gen);
        if decoded == want_text && streamed == want_text {
            generated_ok += 1;
        } else {
            failures.push(format!(
                "{fixture} greedy line {i}: generated text decodes to {} / streams to {}, want {}",
                clip(&decoded),
                clip(&streamed),
                clip(want_text)
            ));
        }

        if kind == "chat" {
            chats += 1;
            let tpl = tpl.expect("chat model without a chat template");
            let user = user_message(prompt)
                .unwrap_or_else(|| panic!("line {i}: no single user turn in {}", clip(prompt)));
            let rendered = tpl.render(&[ChatMessage::user(user)], true).unwrap();
            if rendered == prompt {
                chats_ok += 1;
            } else {
                failures.push(format!(
                    "{fixture} greedy line {i}: template renders\n  {}\nwant\n  {}",
                    clip(&rendered),
                    clip(prompt)
                ));
            }
        }
    }
    eprintln!(
        "{short_name}: {prompts_ok}/{n} greedy prompts match, {generated_ok}/{n} generated texts \
         decode alike, {chats_ok}/{chats} chat renders match",
        n = greedy.len()
    );
    failures
}

/// The user message of a ChatML prompt with one user turn and the assistant's opening.
fn user_message(prompt: &str) -> Option<&str> {
    const OPEN: &str = "<|im_start|>user\n";
    const CLOSE: &str = "<|im_end|>\n<|im_start|>assistant\n";
    let start = prompt.find(OPEN)? + OPEN.len();
    prompt[start..].strip_suffix(CLOSE)
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    assert_no_failures(check_model("smollm2", "smollm2"));
}

#[test]
fn qwen25_matches_llama_cpp() {
    assert_no_failures(check_model("qwen2.5-0.5b", "qwen2.5-0.5b"));
}

#[test]
fn gemma3_matches_llama_cpp() {
    let (tok, tpl) = load("gemma3-270m");
    assert!(
        tpl.is_none(),
        "gemma-3-270m is a base model without a chat template"
    );
    assert!(tok.hf().is_none());
    assert_no_failures(check_tokenize("gemma3-270m", &tok, "gemma3-270m"));
}

#[test]
fn gemma3_special_ids_follow_llama_cpp() {
    let (tok, _) = load("gemma3-270m");
    assert_eq!(tok.model(), "llama");
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(2), Some(1)));
    // llama.cpp's "printing all EOG tokens": <eos>, <end_of_turn> and `</s>` (a user-defined
    // HTML tag that llama.cpp's text list makes a control token).
    assert_eq!(tok.eog_ids(), &[1, 106, 212]);
    assert_eq!(tok.eot_id(), Some(106));
    // `llama-tokenize -p "Hello world"` (BOS added, the model asks for it).
    assert!(tok.add_bos());
    assert_eq!(tok.encode_prompt("Hello world").unwrap(), [2, 9259, 1902]);
    assert_eq!(tok.encode("Hello world").unwrap(), [9259, 1902]);
}

#[test]
fn eog_ids_follow_llama_cpp() {
    let (tok, _) = load("smollm2");
    // <|endoftext|>, <|im_end|> (EOS) and <reponame> (FIM repository token).
    assert_eq!(tok.eog_ids(), &[0, 2, 4]);
    assert_eq!(tok.vocab_size(), 49152);
    let (tok, _) = load("qwen2.5-0.5b");
    // `</s>` (a normal token that llama.cpp's text list makes an end-of-generation control
    // token: its "printing all EOG tokens" lists it), <|endoftext|>, <|im_end|>, <|fim_pad|>,
    // <|repo_name|>, <|file_sep|>.
    assert_eq!(
        tok.eog_ids(),
        &[128247, 151643, 151645, 151662, 151663, 151664]
    );
    assert_eq!(
        tok.token_type(128247),
        fastgen::tokenizer::token_type::CONTROL
    );
    assert_eq!(tok.encode("a</s>b").unwrap()[1], 128247);
    assert_eq!(tok.vocab_size(), 151936);
}

/// `fastgen tokenize --json` prints what `llama-tokenize --ids` prints: BOS first for Gemma
/// (which asks for it), nothing for SmolLM2; `--no-bos` leaves it out. It reads only the
/// tokenizer, so it works for Gemma, whose architecture the engine does not run.
#[test]
fn cli_tokenize_prepends_bos_like_llama_tokenize() {
    let tokenize = |model: &str, extra: &[&str]| -> String {
        let path = model_path(model);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fastgen"))
            .args(["tokenize", "--json", "--text", "Hello world", "-m"])
            .arg(&path)
            .args(extra)
            .output()
            .expect("fastgen runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(tokenize("gemma3-270m", &[]), "[2,9259,1902]");
    assert_eq!(tokenize("gemma3-270m", &["--no-bos"]), "[9259,1902]");
    assert_eq!(tokenize("smollm2", &[]), "[19556,905]");
}

/// GPT-2's byte-level alphabet: the character byte `b` is written as before BPE (printable
/// bytes stand for themselves, the rest are U+0100 on in byte order).
fn byte_level_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }
}

/// Bytes SmolLM2's tokenizer drops, exactly as llama.cpp drops them (issue 18). SmolLM2's
/// byte-level BPE vocabulary has no token for the byte-level characters of 0x04, 0x06, 0x13,
/// 0x14, 0x16, 0x1D, 0xF1 and 0xF2 (and byte-level BPE has no byte-fallback tokens): llama.cpp
/// (llm_tokenizer_bpe_session::tokenize) then looks each byte of the unmatched piece up on its
/// own and skips those with no token, and so does fastgen. A code point U+40000-U+BFFFF loses
/// only its lead byte (0xF1 or 0xF2); its continuation bytes stay. Ids measured with the
/// llama.cpp build in ~/.cache/fastgen/llama.cpp, each case as
/// `llama-tokenize -m ~/.cache/fastgen/models/SmolLM2-135M-Instruct.Q4_1.gguf -p $'a\x04b'
/// --ids --log-disable` (the text written with bash's `$'...'`, `\U00050000` for U+50000).
#[test]
fn smollm2_drops_the_bytes_llama_cpp_drops() {
    let (tok, _) = load("smollm2");
    let cases: &[(&str, &[u32])] = &[
        ("a\u{4}b", &[81, 82]),
        (
            "a\u{6}b\u{13}c\u{14}d\u{16}e\u{1d}f",
            &[81, 82, 83, 84, 85, 86],
        ),
        ("a\u{5}b", &[81, 194, 82]),               // 0x05 has a token
        ("a\u{50000}b", &[81, 234, 218, 218, 82]), // F1 90 80 80
        (
            "a\u{40000}b\u{bffff}c",
            &[81, 218, 218, 218, 82, 140, 140, 140, 83],
        ),
        ("x\u{c0000}y", &[104, 188, 218, 218, 218, 105]), // F3 80 80 80: kept whole
    ];
    for (text, want) in cases {
        assert_eq!(tok.encode_prompt(text).unwrap(), *want, "{text:?}");
    }
    // The reason: of the bytes UTF-8 text can hold (not 0xC0, 0xC1, 0xF5-0xFF, which have no
    // token either), exactly these have no token of their own.
    let missing: Vec<u8> = (0..=255u8)
        .filter(|b| !matches!(b, 0xC0 | 0xC1 | 0xF5..=0xFF))
        .filter(|&b| tok.token_id(&byte_level_char(b).to_string()).is_none())
        .collect();
    assert_eq!(missing, [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2]);
}
