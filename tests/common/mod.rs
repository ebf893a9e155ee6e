//! Shared by the model tests: where the llama.cpp reference outputs are, and how to read them.
#![allow(dead_code)]

use std::path::PathBuf;

/// `tests/reference`: llama.cpp's outputs on the pinned models (how they were made: its README).
pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference")
}

/// One JSON value per line of a reference file.
pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("reference line is JSON"))
        .collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The two models of the reference files: (short name, reference file suffix).
pub const MODELS: &[(&str, &str)] = &[("smollm2", "smollm2"), ("qwen2.5-0.5b", "qwen2.5-0.5b")];

/// A small random-weight Llama (two layers) with SmolLM2's tokenizer and `template` as its
/// `tokenizer.chat_template`, written to `path`: a model file whose template is hostile.
pub fn synth_with_template(path: &std::path::Path, template: &str) {
    use fastgen::gguf::{Gguf, MetaValue};
    let smol = fastgen::fetch::ensure_model("smollm2").expect("smollm2 is fetched");
    let tokenizer = Gguf::open(&smol).unwrap();
    let mut w = fastgen::model::synth::SynthModel::llama_gqa()
        .writer(Some(&tokenizer))
        .unwrap();
    w.kvs.retain(|(k, _)| k != "tokenizer.chat_template");
    let w = w.kv("tokenizer.chat_template", MetaValue::Str(template.into()));
    std::fs::write(path, w.build()).unwrap();
}

/// A small random-weight Llama with SmolLM2's tokenizer whose `output_norm.weight` holds a
/// NaN, written to `path`: every logit it produces is NaN.
pub fn synth_with_nan(path: &std::path::Path) {
    use fastgen::gguf::Gguf;
    let smol = fastgen::fetch::ensure_model("smollm2").expect("smollm2 is fetched");
    let tokenizer = Gguf::open(&smol).unwrap();
    let mut w = fastgen::model::synth::SynthModel::llama_gqa()
        .writer(Some(&tokenizer))
        .unwrap();
    let norm = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "output_norm.weight")
        .expect("the synthetic model has an output norm");
    assert_eq!(norm.type_id, 0, "output_norm.weight is F32");
    norm.data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, w.build()).unwrap();
}
