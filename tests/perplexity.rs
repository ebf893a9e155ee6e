//! Perplexity on `worked.txt` by the protocol of `tests/reference/README.md`
//! (chunks of 1,024 tokens, 8 chunks, second half scored) lands within 1% of llama.cpp's
//! (`llama-perplexity -m MODEL -f worked.txt -c 1024 -b 1024 -t 2 --chunks 8`).

use fastgen::model::Model;
use fastgen::perplexity::perplexity;
use fastgen::tokenizer::Tokenizer;

fn check(model_name: &str, llama_cpp_ppl: f64) {
    let model = Model::load(&fastgen::fetch::ensure_model(model_name).unwrap()).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let text = fastgen::fetch::essay_text("worked.txt").unwrap();
    // As llama-perplexity: BOS first where the model wants it, and at the start of each chunk.
    let ids = tok.encode_prompt(&text).unwrap();
    let bos = tok.bos_id().filter(|_| tok.add_bos());
    let r = perplexity(&model, &ids, bos, 1024, 8, &mut |_, _| {}).unwrap();
    let rel = (r.ppl - llama_cpp_ppl).abs() / llama_cpp_ppl;
    eprintln!(
        "{model_name}: PPL {:.4} +/- {:.4} over {} tokens (llama.cpp {llama_cpp_ppl}; {:.2}% apart); running {:?}",
        r.ppl,
        r.ppl_err,
        r.scored_tokens,
        rel * 100.0,
        r.running.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>()
    );
    assert_eq!(r.scored_tokens, 8 * 511);
    assert!(
        rel < 0.01,
        "{model_name}: PPL {} is {:.2}% from llama.cpp's {llama_cpp_ppl}",
        r.ppl,
        rel * 100.0
    );
}

#[test]
fn smollm2_perplexity_within_1_percent_of_llama_cpp() {
    check("smollm2", 24.0854);
}

#[test]
fn qwen25_perplexity_within_1_percent_of_llama_cpp() {
    check("qwen2.5-0.5b", 31.6075);
}

#[test]
fn gemma3_perplexity_within_1_percent_of_llama_cpp() {
    check("gemma3-270m", 20.4340);
}
