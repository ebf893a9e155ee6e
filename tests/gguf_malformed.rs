//! File-level behaviour of the GGUF reader: real files through `Gguf::open` (memory-mapped).

use fastgen::gguf::write::GgufWriter;
use fastgen::gguf::{Gguf, MetaValue};
use fastgen::quant::GgmlType;
use fastgen::Error;
use std::path::{Path, PathBuf};

/// A scratch directory unique to this test process and test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fastgen-gguf-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn valid_file() -> (Vec<u8>, Vec<Vec<u8>>) {
    let q = (0..2 * 34).map(|i| i as u8).collect::<Vec<u8>>();
    let f = (0..4 * 4).map(|i| 255 - i as u8).collect::<Vec<u8>>();
    let bytes = GgufWriter::new()
        .kv("general.architecture", MetaValue::Str("qwen2".into()))
        .kv("qwen2.block_count", MetaValue::U32(24))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![MetaValue::Str("a".into()), MetaValue::Str("b".into())]),
        )
        .tensor("token_embd.weight", &[32, 2], 8, q.clone())
        .tensor("output_norm.weight", &[4], 0, f.clone())
        .build();
    (bytes, vec![q, f])
}

#[test]
fn open_reads_a_real_file() {
    let dir = Scratch::new("open");
    let (bytes, data) = valid_file();
    let path = dir.file("model.gguf", &bytes);
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.arch().unwrap(), "qwen2");
    assert_eq!(g.get_u64("qwen2.block_count").unwrap(), 24);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "b"]
    );
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ty, emb.dims.as_slice()),
        (GgmlType::Q8_0, &[32, 2][..])
    );
    assert_eq!(g.tensor_bytes(emb), &data[0][..]);
    let norm = g.tensor("output_norm.weight").unwrap();
    assert_eq!(norm.ty, GgmlType::F32);
    assert_eq!(g.tensor_bytes(norm), &data[1][..]);
    // Same result as parsing the bytes in memory.
    let mem = Gguf::from_bytes(bytes).unwrap();
    assert_eq!(mem.metadata, g.metadata);
    assert_eq!(mem.tensors, g.tensors);
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let dir = Scratch::new("missing");
    let path = dir.0.join("does-not-exist.gguf");
    match Gguf::open(&path) {
        Err(e @ Error::Io { .. }) => {
            let Error::Io { path: p, source } = &e else {
                unreachable!()
            };
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(e.to_string().contains("does-not-exist.gguf"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn directory_is_an_io_error() {
    let dir = Scratch::new("dir");
    assert!(matches!(Gguf::open(&dir.0), Err(Error::Io { .. })));
}

fn assert_not_gguf(path: &Path) {
    match Gguf::open(path) {
        Err(Error::NotGguf(shown)) => assert_eq!(shown, path.display().to_string()),
        other => panic!("{}: {other:?}", path.display()),
    }
}

#[test]
fn empty_file_is_not_gguf() {
    let dir = Scratch::new("empty");
    assert_not_gguf(&dir.file("empty.gguf", b""));
    assert_not_gguf(&dir.file("three.gguf", b"GGU"));
}

#[test]
fn text_file_is_not_gguf() {
    let dir = Scratch::new("text");
    let text = "{\n  \"model_type\": \"llama\"\n}\n".repeat(100);
    assert_not_gguf(&dir.file("config.gguf", text.as_bytes()));
}

#[test]
fn malformed_file_error_starts_with_the_path() {
    let dir = Scratch::new("truncated");
    let (bytes, _) = valid_file();
    let path = dir.file("cut.gguf", &bytes[..bytes.len() - 1]);
    match Gguf::open(&path) {
        Err(Error::Gguf(msg)) => {
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(msg.contains("'output_norm.weight'"), "{msg}");
            assert!(msg.contains("outside the file"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_truncated_file_on_disk_fails() {
    let dir = Scratch::new("cuts");
    let (bytes, _) = valid_file();
    for cut in 0..bytes.len() {
        let path = dir.file("cut.gguf", &bytes[..cut]);
        let result = Gguf::open(&path);
        assert!(
            matches!(result, Err(Error::NotGguf(_)) | Err(Error::Gguf(_))),
            "cut {cut}: {result:?}"
        );
    }
}

/// A synthetic Llama's metadata (no tensors) with `key` set to `value`: `Model::load`
/// reads the configuration before any tensor.
fn config_with(dir: &Scratch, key: &str, value: MetaValue) -> PathBuf {
    let mut w = fastgen::model::synth::SynthModel::llama_gqa()
        .writer(None)
        .unwrap();
    w.tensors.clear();
    w.kvs.retain(|(k, _)| k != key);
    let w = w.kv(key, value);
    dir.file(&format!("{}.gguf", key.replace('.', "_")), &w.build())
}

#[test]
fn absurd_sizes_in_the_configuration_are_refused_before_allocating() {
    let dir = Scratch::new("config-sizes");
    // Each of these once sized a table or buffer before it was checked (a block count of
    // 2^40 built a per-layer table of 2^40 entries and aborted on allocation failure).
    for (key, value, want) in [
        (
            "llama.block_count",
            MetaValue::U64(1 << 40),
            "llama.block_count = 1099511627776 out of range 1..=1024",
        ),
        (
            "llama.block_count",
            MetaValue::U64(u64::MAX),
            "out of range",
        ),
        (
            "llama.context_length",
            MetaValue::U64(1 << 40),
            "context_length 1099511627776 out of range",
        ),
        (
            "llama.embedding_length",
            MetaValue::U64(1 << 40),
            "out of range",
        ),
        (
            "llama.feed_forward_length",
            MetaValue::U64(1 << 40),
            "out of range",
        ),
        (
            "llama.attention.head_count",
            MetaValue::U64(1 << 40),
            "head dimension 0",
        ),
    ] {
        let p = config_with(&dir, key, value);
        let err = match fastgen::model::Model::load(&p) {
            Ok(_) => panic!("{key}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{key}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
