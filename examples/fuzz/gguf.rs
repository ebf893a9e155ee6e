//! GGUF mutants: a small valid model file (written here, so that a mutant loads and runs in
//! milliseconds) changed the ways a hostile or broken file differs from a real one, and the
//! library's loading path run on each: `Model::load`, the tokenizer, the chat template and
//! two forward passes, as `fastgen run` does.

use crate::outcome::Outcome;
use crate::rng::Rng;
use fastgen::chat::{ChatMessage, ChatTemplate};
use fastgen::gguf::write::GgufWriter;
use fastgen::gguf::{Gguf, MetaValue};
use fastgen::kv_cache::KvDtype;
use fastgen::model::{Model, Workspace};
use fastgen::tokenizer::Tokenizer;
use half::f16;
use std::path::Path;

const N_EMBD: u64 = 32;
const N_FF: u64 = 256;
const N_HEADS: u64 = 2;
const N_KV_HEADS: u64 = 1;
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 4] = [("h", "e"), ("Ġ", "t"), ("i", "n"), ("Ġt", "he")];
const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// GPT-2's byte-level alphabet: the printable bytes stand for themselves, the others for
/// code points from U+0100 on.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut next = 0x100;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    v.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    v.extend(SPECIALS.iter().map(|s| s.to_string()));
    v
}

/// `rows` rows of `cols` weights of type `ty` (0 F32, 1 F16, 2 Q4_0, 8 Q8_0, 12 Q4_K) with
/// small random values: well-formed blocks whose scales are finite.
fn weights(rng: &mut Rng, ty: u32, rows: u64, cols: u64) -> Vec<u8> {
    let n = (rows * cols) as usize;
    let small = |rng: &mut Rng| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
    let scale = f16::from_f32(0.02).to_bits().to_le_bytes();
    let mut out = Vec::new();
    match ty {
        0 => (0..n).for_each(|_| out.extend_from_slice(&(small(rng) * 0.1).to_le_bytes())),
        1 => (0..n).for_each(|_| {
            out.extend_from_slice(&f16::from_f32(small(rng) * 0.1).to_bits().to_le_bytes())
        }),
        2 => (0..n / 32).for_each(|_| {
            out.extend_from_slice(&scale);
            out.extend(rng.bytes(16));
        }),
        8 => (0..n / 32).for_each(|_| {
            out.extend_from_slice(&scale);
            out.extend(rng.bytes(32));
        }),
        12 => (0..n / 256).for_each(|_| {
            out.extend_from_slice(&scale);
            out.extend_from_slice(&[0, 0]);
            out.extend((0..12).map(|_| rng.next_u64() as u8 & 0x3F));
            out.extend(rng.bytes(128));
        }),
        _ => unreachable!("no writer for type {ty}"),
    }
    out
}

/// The valid file every mutant starts from: a one-layer Llama with a GPT-2 byte-level
/// vocabulary of 265 tokens, a chat template and weights of five types.
pub fn seed() -> GgufWriter {
    let mut rng = Rng::new(0x5EED);
    let tokens = vocab();
    let n_vocab = tokens.len() as u64;
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| {
            if i >= tokens.len() - SPECIALS.len() {
                3
            } else {
                1
            }
        })
        .collect();
    let u32v = |v: u64| MetaValue::U32(v as u32);
    let strs = |v: Vec<String>| MetaValue::Array(v.into_iter().map(MetaValue::Str).collect());
    let special = |s: &str| u32v(tokens.iter().position(|t| t == s).unwrap() as u64);
    let w = GgufWriter::new()
        .kv("general.architecture", MetaValue::Str("llama".into()))
        .kv("general.name", MetaValue::Str("fuzz-seed".into()))
        .kv("llama.block_count", u32v(1))
        .kv("llama.context_length", u32v(64))
        .kv("llama.embedding_length", u32v(N_EMBD))
        .kv("llama.feed_forward_length", u32v(N_FF))
        .kv("llama.attention.head_count", u32v(N_HEADS))
        .kv("llama.attention.head_count_kv", u32v(N_KV_HEADS))
        .kv("llama.rope.freq_base", MetaValue::F32(10000.0))
        .kv("llama.rope.dimension_count", u32v(N_EMBD / N_HEADS))
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        )
        .kv("tokenizer.ggml.model", MetaValue::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", MetaValue::Str("smollm".into()))
        .kv("tokenizer.ggml.tokens", strs(tokens.clone()))
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        )
        .kv(
            "tokenizer.ggml.merges",
            strs(MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect()),
        )
        .kv("tokenizer.ggml.bos_token_id", special("<|im_start|>"))
        .kv("tokenizer.ggml.eos_token_id", special("<|im_end|>"))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(false))
        .kv("tokenizer.chat_template", MetaValue::Str(TEMPLATE.into()));
    let (d, ff) = (N_EMBD, N_FF);
    let kv_dim = d / N_HEADS * N_KV_HEADS;
    let norm = |n: u64| {
        (0..n)
            .flat_map(|_| 1.0f32.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let mut tensor = |w: GgufWriter, name: &str, ty: u32, rows: u64, cols: u64| {
        let data = weights(&mut rng, ty, rows, cols);
        w.tensor(name, &[cols, rows], ty, data)
    };
    let w = tensor(w, "token_embd.weight", 8, n_vocab, d);
    let w = w.tensor("output_norm.weight", &[d], 0, norm(d));
    let w = tensor(w, "output.weight", 1, n_vocab, d);
    let w = w.tensor("blk.0.attn_norm.weight", &[d], 0, norm(d));
    let w = tensor(w, "blk.0.attn_q.weight", 2, d, d);
    let w = tensor(w, "blk.0.attn_k.weight", 8, kv_dim, d);
    let w = tensor(w, "blk.0.attn_v.weight", 0, kv_dim, d);
    let w = tensor(w, "blk.0.attn_output.weight", 1, d, d);
    let w = w.tensor("blk.0.ffn_norm.weight", &[d], 0, norm(d));
    let w = tensor(w, "blk.0.ffn_gate.weight", 8, ff, d);
    let w = tensor(w, "blk.0.ffn_up.weight", 2, ff, d);
    tensor(w, "blk.0.ffn_down.weight", 12, d, ff)
}

/// Numbers a hostile file puts in counts, lengths, dimensions, ids and offsets.
fn boundary(rng: &mut Rng, current: u64) -> u64 {
    let choices = [
        0,
        1,
        2,
        3,
        current.wrapping_add(1),
        current.wrapping_sub(1),
        current.wrapping_mul(2),
        current / 2,
        255,
        256,
        65_535,
        1 << 20,
        1 << 31,
        u32::MAX as u64 - 1,
        u32::MAX as u64,
        1 << 32,
        1 << 40,
        1 << 62,
        i64::MAX as u64,
        u64::MAX - 1,
        u64::MAX,
        rng.next_u64(),
        rng.next_u64() % 100_000,
    ];
    *rng.pick(&choices)
}

/// Marks a field (its width) as a string or array length.
const LENGTH: usize = 0x100;

/// Where the fields of a file from `GgufWriter::build` are: (offset, width in bytes, with
/// [`LENGTH`] set on string and array lengths).
fn fields(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut w = Walker {
        bytes,
        p: 24,
        out: vec![(4, 4), (8, 8), (16, 8)],
    };
    let (n_tensors, n_kv) = (w.u64_at(8), w.u64_at(16));
    for _ in 0..n_kv {
        w.string();
        let ty = w.u32_at(w.p);
        w.out.push((w.p, 4));
        w.p += 4;
        // Long arrays: their elements are not all worth a field each.
        let before = w.out.len();
        w.value(ty);
        w.out.truncate(before + 64);
    }
    for _ in 0..n_tensors {
        w.string();
        let n_dims = w.u32_at(w.p);
        w.out.push((w.p, 4));
        w.p += 4;
        for _ in 0..n_dims {
            w.out.push((w.p, 8));
            w.p += 8;
        }
        w.out.extend([(w.p, 4), (w.p + 4, 8)]);
        w.p += 12;
    }
    w.out
}

/// Walks a well-formed header, noting its fields.
struct Walker<'a> {
    bytes: &'a [u8],
    p: usize,
    out: Vec<(usize, usize)>,
}

impl Walker<'_> {
    fn u32_at(&self, p: usize) -> usize {
        u32::from_le_bytes(self.bytes[p..p + 4].try_into().unwrap()) as usize
    }

    fn u64_at(&self, p: usize) -> usize {
        u64::from_le_bytes(self.bytes[p..p + 8].try_into().unwrap()) as usize
    }

    fn string(&mut self) {
        self.out.push((self.p, 8 | LENGTH));
        self.p += 8 + self.u64_at(self.p);
    }

    fn value(&mut self, ty: usize) {
        // Widths of the scalar value types by id (8 string and 9 array are walked).
        const WIDTH: [usize; 13] = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
        match ty {
            8 => self.string(),
            9 => {
                let (inner, n) = (self.u32_at(self.p), self.u64_at(self.p + 4));
                self.out.extend([(self.p, 4), (self.p + 4, 8 | LENGTH)]);
                self.p += 12;
                for _ in 0..n {
                    self.value(inner);
                }
            }
            t => {
                self.out.push((self.p, WIDTH[t]));
                self.p += WIDTH[t];
            }
        }
    }
}

/// Metadata a mutant may set to another value or type.
fn other_value(rng: &mut Rng, current: &MetaValue) -> MetaValue {
    let n = boundary(rng, 7);
    match rng.below(9) {
        0 => MetaValue::U32(n as u32),
        1 => MetaValue::U64(n),
        2 => MetaValue::I32(n as i32),
        3 => MetaValue::F32(*rng.pick(&[f32::NAN, f32::INFINITY, -1.0, 0.0, 1e30, -1e-30])),
        4 => MetaValue::Str(String::new()),
        5 => MetaValue::Str("x".repeat(rng.below(4) * 100_000)),
        6 => MetaValue::Array(Vec::new()),
        7 => MetaValue::Array(vec![current.clone(); 1 + rng.below(3)]),
        _ => MetaValue::Bool(rng.chance(50)),
    }
}

/// Keys that size buffers or select code paths.
const HYPER: [&str; 17] = [
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.rope.dimension_count",
    "llama.attention.sliding_window",
    "llama.vocab_size",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.unknown_token_id",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
];

/// Sets a hyperparameter (present or not) to a boundary value of a plausible type.
fn mutate_hyper(rng: &mut Rng, w: &mut GgufWriter) {
    let key = *rng.pick(&HYPER);
    let value = if key.contains("freq_base") || key.contains("epsilon") {
        MetaValue::F32(*rng.pick(&[0.0, -1.0, f32::NAN, f32::INFINITY, 1e-30, 1e30]))
    } else {
        let cur = (w.kvs.iter())
            .find_map(|(k, v)| match v {
                MetaValue::U32(x) if k == key => Some(*x as u64),
                _ => None,
            })
            .unwrap_or(16);
        match rng.below(4) {
            0 => MetaValue::U64(boundary(rng, cur)),
            1 => MetaValue::I32(boundary(rng, cur) as i32),
            _ => MetaValue::U32(boundary(rng, cur) as u32),
        }
    };
    match w.kvs.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = value,
        None => w.kvs.push((key.to_string(), value)),
    }
}

/// Changes the file's structure (keys, values, tensors) before it is written.
fn mutate_structure(rng: &mut Rng, w: &mut GgufWriter) {
    if rng.chance(40) {
        return mutate_hyper(rng, w);
    }
    if rng.chance(10) {
        // Another architecture's code paths (QK norm, biases, sliding windows, fused
        // tensors): its keys, with this file's tensors, most of which it then lacks.
        let arch = *rng.pick(&["qwen2", "qwen3", "gemma3", "phi3"]);
        for (k, v) in w.kvs.iter_mut() {
            if let Some(rest) = k.strip_prefix("llama.") {
                *k = format!("{arch}.{rest}");
            }
            if k == "general.architecture" {
                *v = MetaValue::Str(arch.into());
            }
        }
        return;
    }
    match rng.below(10) {
        0 if !w.kvs.is_empty() => {
            let i = rng.below(w.kvs.len());
            w.kvs.remove(i);
        }
        1 if !w.kvs.is_empty() => {
            let i = rng.below(w.kvs.len());
            let kv = w.kvs[i].clone();
            let j = rng.below(w.kvs.len() + 1);
            w.kvs.insert(j, kv);
        }
        2 | 3 if !w.kvs.is_empty() => {
            let i = rng.below(w.kvs.len());
            w.kvs[i].1 = match &w.kvs[i].1 {
                MetaValue::U32(v) => MetaValue::U32(boundary(rng, *v as u64) as u32),
                MetaValue::Array(items) if rng.chance(50) => {
                    let mut items = items.clone();
                    let keep = rng.below(items.len() + 1);
                    items.truncate(keep);
                    MetaValue::Array(items)
                }
                v => other_value(rng, v),
            };
        }
        4 if !w.tensors.is_empty() => {
            let i = rng.below(w.tensors.len());
            w.tensors.remove(i);
        }
        5 if !w.tensors.is_empty() => {
            let k = rng.below(w.tensors.len());
            let t = &mut w.tensors[k];
            match rng.below(4) {
                0 => t.dims.reverse(),
                1 => t.dims.push(boundary(rng, 1)),
                2 => t.dims.truncate(rng.below(2)),
                _ => {
                    let d = rng.below(t.dims.len().max(1));
                    if let Some(x) = t.dims.get_mut(d) {
                        *x = boundary(rng, *x);
                    }
                }
            }
        }
        6 if !w.tensors.is_empty() => {
            let k = rng.below(w.tensors.len());
            let t = &mut w.tensors[k];
            t.type_id = *rng.pick(&[0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 16, 20, 30, 39, 255]);
        }
        7 if !w.tensors.is_empty() => {
            let k = rng.below(w.tensors.len());
            let t = &mut w.tensors[k];
            t.offset_override = Some(boundary(rng, 32));
        }
        8 => {
            let key = *rng.pick(&[
                "general.alignment",
                "llama.context_length",
                "llama.block_count",
            ]);
            w.kvs
                .push((key.to_string(), MetaValue::U32(boundary(rng, 32) as u32)));
        }
        _ => {
            let name = if rng.chance(50) {
                "llama"
            } else {
                "x\n\u{1b}[31m"
            };
            let arch = name.repeat(1 + rng.below(3) * 20_000);
            w.kvs.retain(|(k, _)| k != "general.architecture");
            w.kvs
                .insert(0, ("general.architecture".into(), MetaValue::Str(arch)));
        }
    }
}

/// Changes the written bytes: a field set to a boundary value, bits flipped, bytes
/// inserted or removed, the file cut short.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, fields: &[(usize, usize)]) {
    if bytes.is_empty() {
        return;
    }
    let header = (fields.last())
        .map_or(bytes.len(), |&(p, w)| p + (w & !LENGTH))
        .clamp(1, bytes.len());
    match rng.below(6) {
        0 | 1 => {
            // Mostly the values, dimensions, types and offsets: a bad length mostly stops
            // the parse at once.
            let lengths = rng.chance(25);
            let pool: Vec<&(usize, usize)> = (fields.iter())
                .filter(|f| (f.1 & LENGTH != 0) == lengths)
                .collect();
            let &&(p, width) = rng.pick(&pool);
            let width = width & !LENGTH;
            if p + width <= bytes.len() {
                let mut cur = [0u8; 8];
                cur[..width].copy_from_slice(&bytes[p..p + width]);
                let v = boundary(rng, u64::from_le_bytes(cur));
                bytes[p..p + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        2 => {
            for _ in 0..1 + rng.below(8) {
                // Mostly in the header, where a flip changes a count or a length.
                let end = if rng.chance(80) { header } else { bytes.len() };
                let p = rng.below(end.max(1));
                bytes[p] ^= 1 << rng.below(8);
            }
        }
        3 => {
            let len = if rng.chance(70) {
                rng.below(header + 1)
            } else {
                rng.below(bytes.len())
            };
            bytes.truncate(len);
        }
        4 => {
            let p = rng.below(header);
            let n = 1 + rng.below(16);
            let junk = rng.bytes(n);
            bytes.splice(p..p, junk);
        }
        _ => {
            let p = rng.below(header);
            let n = (1 + rng.below(16)).min(bytes.len() - p);
            bytes.drain(p..p + n);
        }
    }
}

/// Mutant `index` of the run with `seed`: one to three changes to the seed file.
pub fn mutant(seed_file: &GgufWriter, seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng::for_input(seed, index);
    let mut w = seed_file.clone();
    let n = 1 + rng.below(3);
    let structural = (0..n).filter(|_| rng.chance(60)).count();
    for _ in 0..structural {
        mutate_structure(&mut rng, &mut w);
    }
    // The writer pads tensors to `general.alignment`: a huge one would make a huge file.
    let huge_alignment = w
        .kvs
        .iter()
        .any(|(k, v)| k == "general.alignment" && matches!(v, MetaValue::U32(a) if *a > 4096));
    if huge_alignment {
        w.alignment = Some(32);
    }
    let mut bytes = w.build();
    if structural < n || rng.chance(20) {
        // The writer keeps counts and lengths consistent, so its output can be walked.
        let f = fields(&bytes);
        for _ in structural..n.max(structural + 1) {
            mutate_bytes(&mut rng, &mut bytes, &f);
        }
    }
    bytes
}

/// Runs the file through what `fastgen run` does with it, in-process. Errors are
/// classified by their text; a panic is caught by the caller.
pub fn check(path: &Path) -> Outcome {
    match load_and_run(path) {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::of_error(&e),
    }
}

fn load_and_run(path: &Path) -> Result<(), fastgen::Error> {
    // `fastgen tokenize` reads only the tokenizer.
    let g = Gguf::open(path)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let ids = tok.encode("hello the <|im_start|> in\u{4}x")?;
    let _ = tok.decode(&ids);
    drop(g);
    let model = Model::load(path)?;
    let tok = Tokenizer::from_gguf(model.gguf())?;
    let prompt = match ChatTemplate::from_gguf(model.gguf())? {
        Some(t) => t.render(&[ChatMessage::user("hi the")], true)?,
        None => "hi the".to_string(),
    };
    let mut ids = tok.encode_chat_prompt(&prompt)?;
    ids.truncate(8);
    if ids.is_empty() {
        ids.push(0);
    }
    let mut cache = model.new_cache(KvDtype::F16);
    model.check_tokens(&ids, &cache)?;
    let mut ws = Workspace::default();
    let logits = model.prefill(&ids, &mut cache, &mut ws)?;
    fastgen::generate::check_finite(&logits, 0)?;
    let next = (logits.iter().enumerate())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32);
    model.check_tokens(&[next], &cache)?;
    let logits = model.decode(next, &mut cache, &mut ws)?;
    fastgen::generate::check_finite(logits, 1)?;
    Ok(())
}
