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
