//! How long tokenizing takes: `cargo run --release --example tokenize_speed -- MODEL [BYTES]`.
//! MODEL is a short name or a GGUF path; the text is the first BYTES (default 50,000) of the
//! pinned essays, concatenated. Prints the time of building the tokenizer, of cutting the
//! special tokens and of the whole encode (best of 5).

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("smollm2", String::as_str);
    let want: usize = args.get(1).map_or(Ok(50_000), |s| s.parse())?;
    let path = fastgen::fetch::resolve_model(model)?;
    let g = fastgen::gguf::Gguf::open(&path)?;
    let t = Instant::now();
    let tok = fastgen::tokenizer::Tokenizer::from_gguf(&g)?;
    let build = t.elapsed();

    let mut text = String::new();
    for name in ["worked.txt", "apple.txt", "avg.txt", "before.txt"] {
        text.push_str(&fastgen::fetch::essay_text(name)?);
        text.push('\n');
    }
    while text.len() > want {
        text.pop();
    }
    let mut best = f64::INFINITY;
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        n = tok.encode(&text)?.len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{model}: built in {:.1} ms; {} bytes -> {n} tokens in {:.1} ms (best of 5)",
        build.as_secs_f64() * 1e3,
        text.len(),
        best * 1e3
    );
    Ok(())
}
