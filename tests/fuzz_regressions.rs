//! Inputs the fuzz harness (examples/fuzz) once found crashing or refused without a clear
//! error, kept so that they stay fixed. Each names the harness run that found it.

use fastgen::chat::{ChatMessage, ChatTemplate};

/// A template's render error, which must be one line that names the problem.
fn render_error(source: &str) -> String {
    let t = ChatTemplate::new(source, "<s>", "</s>").expect("compiles");
    let e = t
        .render(&[ChatMessage::user("hello")], true)
        .expect_err("refused")
        .to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// `--target template --seed 1`, input 294: `str.join` over a list repeated 2^63 - 1 times
/// sized its buffer from the list's claimed length and panicked (caught in the sandbox,
/// reported as "the template engine panicked").
#[test]
fn join_over_a_huge_repeated_list_is_a_clear_error() {
    let e = render_error("{{ ''.join(['a'] * 9223372036854775807) }}");
    assert!(
        e.contains("join over 9223372036854775807 items is past the limit"),
        "{e}"
    );
    // Joins of real sizes still work.
    let t = ChatTemplate::new("{{ '-'.join(['a', 'b'] * 2) }}", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "a-b-a-b");
}

#[allow(dead_code)]
#[path = "../examples/fuzz/gguf.rs"]
mod gguf;
#[allow(dead_code)]
#[path = "../examples/fuzz/outcome.rs"]
mod outcome;
#[allow(dead_code)]
#[path = "../examples/fuzz/rng.rs"]
mod rng;

use fastgen::gguf::MetaValue;
use fastgen::model::Model;

/// The fuzz seed with `key` set to `value` (added if absent), loaded: the error's text.
fn load_error_with(key: &str, value: MetaValue) -> String {
    let mut w = gguf::seed();
    match w.kvs.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = value.clone(),
        None => w.kvs.push((key.to_string(), value.clone())),
    }
    let path = std::env::temp_dir().join(format!(
        "fastgen-fuzz-regression-{}-{}.gguf",
        std::process::id(),
        key.replace('.', "_")
    ));
    std::fs::write(&path, w.build()).unwrap();
    let e = match Model::load(&path) {
        Ok(_) => panic!("{key} = {value:?} was accepted"),
        Err(e) => e.to_string(),
    };
    let _ = std::fs::remove_file(&path);
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// Buffers sized from the file's numbers (the logits from the vocabulary, the KV cache and
/// workspaces from the context and widths, the layers from block_count) are checked at load
/// against the tensors and sane bounds, so a file cannot make an allocation abort.
#[test]
fn sizes_from_metadata_are_checked_at_load() {
    // A vocabulary longer than the embedding has rows.
    let tokens = (0..100_000)
        .map(|i| MetaValue::Str(format!("t{i}")))
        .collect();
    let e = load_error_with("tokenizer.ggml.tokens", MetaValue::Array(tokens));
    assert!(
        e.contains("token_embd.weight") && e.contains("100000"),
        "{e}"
    );
    let e = load_error_with("llama.context_length", MetaValue::U32(u32::MAX));
    assert!(e.contains("context_length 4294967295 out of range"), "{e}");
    let e = load_error_with("llama.block_count", MetaValue::U64(u64::MAX));
    assert!(e.contains("block_count"), "{e}");
    let e = load_error_with("llama.feed_forward_length", MetaValue::U32(1 << 30));
    assert!(e.contains("feed_forward_length 1073741824"), "{e}");
    let e = load_error_with("llama.embedding_length", MetaValue::U32(u32::MAX));
    assert!(e.contains("embedding_length 4294967295"), "{e}");
}
