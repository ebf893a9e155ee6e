//! A little of the fuzz harness (examples/fuzz) on every test run: GGUF mutants through the
//! loading path, hostile chat templates and hostile text through the SmolLM2 tokenizer, in
//! process, from fixed seeds. None may panic or be refused without a clear one-line error.

#[allow(dead_code)]
#[path = "../examples/fuzz/gguf.rs"]
mod gguf;
#[allow(dead_code)]
#[path = "../examples/fuzz/outcome.rs"]
mod outcome;
#[allow(dead_code)]
#[path = "../examples/fuzz/rng.rs"]
mod rng;
#[allow(dead_code)]
#[path = "../examples/fuzz/template.rs"]
mod template;
#[allow(dead_code)]
#[path = "../examples/fuzz/tokenizer.rs"]
mod tokenizer;

use outcome::{Outcome, Tally};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `check` on inputs `0..n`, a panic counting as a crash.
fn tally(n: u64, mut check: impl FnMut(u64) -> Outcome) -> Tally {
    let mut t = Tally::default();
    for i in 0..n {
        let o = catch_unwind(AssertUnwindSafe(|| check(i)))
            .unwrap_or_else(|_| Outcome::Crash("panicked".into()));
        t.add(format!("#{i}"), o);
    }
    t
}

fn assert_clean(name: &str, t: &Tally) {
    eprintln!("{name}: {t}");
    assert_eq!(t.failed(), 0, "{name}: {t}; failures: {:?}", t.failures);
}

#[test]
fn gguf_mutants_load_or_fail_clearly() {
    let path = std::env::temp_dir().join(format!("fastgen-fuzz-smoke-{}.gguf", std::process::id()));
    let seed_file = gguf::seed();
    std::fs::write(&path, seed_file.build()).unwrap();
    assert_eq!(gguf::check(&path), Outcome::Ok, "the seed file itself runs");
    let t = tally(300, |i| {
        std::fs::write(&path, gguf::mutant(&seed_file, 7, i)).unwrap();
        gguf::check(&path)
    });
    let _ = std::fs::remove_file(&path);
    assert_clean("gguf", &t);
    assert!(t.ok > 0 && t.clear > 0, "the mutants reach both ends: {t}");
}

#[test]
fn hostile_templates_render_or_fail_clearly() {
    let t = tally(100, |i| template::check(&template::generate(7, i)));
    assert_clean("template", &t);
    assert!(t.clear > 50, "most hostile templates are refused: {t}");
}

#[test]
fn hostile_text_tokenizes() {
    let path = fastgen::fetch::resolve_model("smollm2").unwrap();
    let g = fastgen::gguf::Gguf::open(&path).unwrap();
    let tok = fastgen::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let t = tally(300, |i| tokenizer::check(&tok, &tokenizer::generate(7, i)));
    assert_clean("tokenizer", &t);
}
