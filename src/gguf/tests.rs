//! Unit tests of the reader, over files built with [`super::write::GgufWriter`].

use super::write::{put_str, put_u32, put_u64, GgufWriter, TensorSpec};
use super::*;
use proptest::prelude::*;

// ggml type ids.
const F32: u32 = 0;
const F16: u32 = 1;
const Q4_0: u32 = 2;
const Q4_1: u32 = 3;
const Q5_0: u32 = 6;
const Q8_0: u32 = 8;
const Q4_K: u32 = 12;
const Q6_K: u32 = 14;

/// Header field positions.
const AT_VERSION: usize = 4;
const AT_N_TENSORS: usize = 8;
const AT_N_KV: usize = 16;
const AT_BODY: usize = 24;

/// Deterministic filler bytes, different per tensor.
fn filler(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn all_value_kinds() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("v.u8", MetaValue::U8(200)),
        ("v.i8", MetaValue::I8(-100)),
        ("v.u16", MetaValue::U16(60000)),
        ("v.i16", MetaValue::I16(-30000)),
        ("v.u32", MetaValue::U32(4_000_000_000)),
        ("v.i32", MetaValue::I32(-2_000_000_000)),
        ("v.u64", MetaValue::U64(u64::MAX)),
        ("v.i64", MetaValue::I64(i64::MIN)),
        ("v.f32", MetaValue::F32(1.5e-5)),
        ("v.f64", MetaValue::F64(-1.0e300)),
        ("v.true", MetaValue::Bool(true)),
        ("v.false", MetaValue::Bool(false)),
        ("v.str", MetaValue::Str("héllo, 世界 ▁ \u{0}".to_string())),
        ("v.empty_str", MetaValue::Str(String::new())),
        ("v.empty_array", MetaValue::Array(vec![])),
        (
            "v.str_array",
            MetaValue::Array(vec![
                MetaValue::Str("<s>".into()),
                MetaValue::Str("".into()),
                MetaValue::Str("Ġthe".into()),
            ]),
        ),
        (
            "v.i32_array",
            MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-3)]),
        ),
        (
            "v.f64_array",
            MetaValue::Array(vec![MetaValue::F64(0.25), MetaValue::F64(-2.0)]),
        ),
        (
            "v.bool_array",
            MetaValue::Array(vec![MetaValue::Bool(true), MetaValue::Bool(false)]),
        ),
        (
            "v.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U16(1), MetaValue::U16(2)]),
                MetaValue::Array(vec![MetaValue::U16(3)]),
            ]),
        ),
    ]
}

/// A valid file with every value type and tensors of every supported type.
fn sample() -> GgufWriter {
    let mut w = GgufWriter::new()
        .kv("general.architecture", MetaValue::Str("llama".into()))
        .kv("llama.block_count", MetaValue::U32(2));
    for (k, v) in all_value_kinds() {
        w = w.kv(k, v);
    }
    w.tensor("f32.2d", &[8, 3], F32, filler(8 * 3 * 4, 1))
        .tensor("f16.1d", &[5], F16, filler(10, 2))
        .tensor("q4_0", &[64, 2], Q4_0, filler(2 * 2 * 18, 3))
        .tensor("q4_1", &[32, 1, 2], Q4_1, filler(2 * 20, 4))
        .tensor("q5_0", &[32], Q5_0, filler(22, 5))
        .tensor("q8_0", &[32, 2, 1, 2], Q8_0, filler(4 * 34, 6))
        .tensor("q4_k", &[256, 2], Q4_K, filler(2 * 144, 7))
        .tensor("q6_k", &[512], Q6_K, filler(2 * 210, 8))
}

fn parse(bytes: Vec<u8>) -> Gguf {
    match Gguf::from_bytes(bytes) {
        Ok(g) => g,
        Err(e) => panic!("valid file refused: {e}"),
    }
}

/// The message of an `Error::Gguf`, failing the test on any other outcome.
fn gguf_err(bytes: Vec<u8>) -> String {
    match Gguf::from_bytes(bytes) {
        Err(Error::Gguf(msg)) => msg,
        other => panic!("expected Error::Gguf, got {other:?}"),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

fn patch_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn patch_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_value_type_round_trips_in_v2_and_v3() {
    for version in [2, 3] {
        let g = parse(sample().version(version).build());
        assert_eq!(g.version, version);
        for (k, v) in all_value_kinds() {
            assert_eq!(g.get(k), Some(&v), "key {k}, version {version}");
        }
        assert_eq!(g.metadata.len(), all_value_kinds().len() + 2);
        assert_eq!(g.arch().unwrap(), "llama");
    }
}

#[test]
fn tensor_infos_and_bytes_round_trip() {
    let w = sample();
    let (bytes, layout) = w.build_with_layout();
    let file_len = bytes.len();
    let g = parse(bytes);
    assert_eq!(g.data_offset(), layout.data_offset);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.tensors.len(), w.tensors.len());
    let expected_types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for ((spec, info), (&off, &ty)) in w
        .tensors
        .iter()
        .zip(&g.tensors)
        .zip(layout.tensor_offsets.iter().zip(&expected_types))
    {
        assert_eq!(info.name, spec.name);
        let dims: Vec<usize> = spec.dims.iter().map(|&d| d as usize).collect();
        assert_eq!(info.dims, dims);
        assert_eq!(info.ty, ty);
        assert_eq!(info.offset, off);
        assert_eq!(info.offset % 32, 0);
        assert_eq!(info.n_bytes, spec.data.len());
        assert_eq!(g.tensor_bytes(info), &spec.data[..]);
        assert_eq!(g.tensor(&spec.name), Some(info));
    }
    let last = g.tensors.last().unwrap();
    assert_eq!(last.offset + last.n_bytes, file_len);
    let q8 = g.tensor("q8_0").unwrap();
    assert_eq!((q8.n_elements(), q8.n_rows()), (128, 4));
    assert!(g.tensor("missing").is_none());
}

#[test]
fn file_without_tensors_or_metadata() {
    let g = parse(GgufWriter::new().build());
    assert!(g.tensors.is_empty() && g.metadata.is_empty());
    assert!(matches!(g.arch(), Err(Error::Metadata(m)) if m.contains("general.architecture")));
}

#[test]
fn custom_alignment_is_honoured() {
    for align in [1u32, 8, 64, 4096] {
        let w = GgufWriter::new()
            .kv("general.alignment", MetaValue::U32(align))
            .tensor("a", &[3], F32, filler(12, 1))
            .tensor("b", &[5], F16, filler(10, 2))
            .tensor("c", &[1], F32, filler(4, 3));
        let (bytes, layout) = w.build_with_layout();
        let g = parse(bytes);
        assert_eq!(g.alignment(), align as usize);
        assert_eq!(g.data_offset() % align as usize, 0);
        for (t, spec) in g.tensors.iter().zip(&w.tensors) {
            assert_eq!(t.offset % align as usize, 0);
            assert_eq!(g.tensor_bytes(t), &spec.data[..]);
        }
        assert_eq!(g.tensors[2].offset, layout.tensor_offsets[2]);
    }
}

#[test]
fn tensor_bytes_of_a_foreign_tensor_is_empty_not_a_panic() {
    let g = parse(GgufWriter::new().tensor("a", &[2], F32, vec![0; 8]).build());
    let mut t = g.tensors[0].clone();
    t.offset = usize::MAX - 2;
    assert!(g.tensor_bytes(&t).is_empty());
    t.offset = 1 << 40;
    assert!(g.tensor_bytes(&t).is_empty());
}

// ---------------------------------------------------------------- getters

#[test]
fn getters_convert_and_name_the_key() {
    let g = parse(sample().build());
    assert_eq!(g.get_u64("v.u8").unwrap(), 200);
    assert_eq!(g.get_u64("v.u16").unwrap(), 60000);
    assert_eq!(g.get_u64("v.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_u64("v.u64").unwrap(), u64::MAX);
    assert_eq!(g.get_u64("llama.block_count").unwrap(), 2);
    for key in ["v.i8", "v.i32", "v.i64"] {
        match g.get_u64(key) {
            Err(Error::Metadata(m)) => assert_contains(&m, &[key, "non-negative"]),
            other => panic!("{key}: {other:?}"),
        }
    }
    match g.get_u64("v.str") {
        Err(Error::Metadata(m)) => assert_contains(&m, &["v.str", "str"]),
        other => panic!("{other:?}"),
    }
    match g.get_u64("nope") {
        Err(Error::Metadata(m)) => assert_contains(&m, &["missing", "nope"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.get_f32("v.f32").unwrap(), 1.5e-5);
    assert_eq!(g.get_f32("v.i16").unwrap(), -30000.0);
    assert!(matches!(g.get_f32("v.f64"), Err(Error::Metadata(m)) if m.contains("v.f64")));
    assert!(matches!(g.get_f32("v.true"), Err(Error::Metadata(_))));
    assert!(g.get_bool("v.true").unwrap());
    assert!(!g.get_bool("v.false").unwrap());
    assert!(matches!(g.get_bool("v.u8"), Err(Error::Metadata(_))));
    assert_eq!(g.get_str("v.empty_str").unwrap(), "");
    assert!(matches!(g.get_str("v.u8"), Err(Error::Metadata(m)) if m.contains("u8 200")));
    assert_eq!(
        g.get_str_array("v.str_array").unwrap(),
        vec!["<s>", "", "Ġthe"]
    );
    assert!(g.get_str_array("v.empty_array").unwrap().is_empty());
    assert!(
        matches!(g.get_str_array("v.i32_array"), Err(Error::Metadata(m)) if m.contains("element 0"))
    );
    assert!(matches!(g.get_str_array("v.str"), Err(Error::Metadata(m)) if m.contains("array")));
    assert_eq!(g.get_i32_array("v.i32_array").unwrap(), vec![1, -3]);
    assert_eq!(g.get_f32_array("v.i32_array").unwrap(), vec![1.0, -3.0]);
    assert!(
        matches!(g.get_f32_array("v.str_array"), Err(Error::Metadata(m)) if m.contains("element 0"))
    );
    assert!(matches!(
        g.get_i32_array("v.str_array"),
        Err(Error::Metadata(_))
    ));
}

#[test]
fn f64_narrowing_and_optional_getters() {
    let g = parse(
        GgufWriter::new()
            .kv("eps", MetaValue::F64(1e-6))
            .kv("n", MetaValue::I32(7))
            .kv("neg", MetaValue::I64(-1))
            .kv("flag", MetaValue::Bool(true))
            .kv("s", MetaValue::Str("x".into()))
            .kv("big", MetaValue::Array(vec![MetaValue::U32(u32::MAX)]))
            .build(),
    );
    assert_eq!(g.get_f32("eps").unwrap(), 1e-6f32);
    assert_eq!(g.get_u64("n").unwrap(), 7);
    assert_eq!(g.get_u64_opt("n").unwrap(), Some(7));
    assert_eq!(g.get_u64_opt("absent").unwrap(), None);
    assert!(g.get_u64_opt("neg").is_err());
    assert!(g.get_u64_opt("s").is_err());
    assert_eq!(g.get_f32_opt("eps").unwrap(), Some(1e-6f32));
    assert_eq!(g.get_f32_opt("absent").unwrap(), None);
    assert!(g.get_f32_opt("s").is_err());
    assert_eq!(g.get_bool_opt("flag").unwrap(), Some(true));
    assert_eq!(g.get_bool_opt("absent").unwrap(), None);
    assert!(g.get_bool_opt("n").is_err());
    assert_eq!(g.get_str_opt("s").unwrap(), Some("x"));
    assert_eq!(g.get_str_opt("absent").unwrap(), None);
    assert!(g.get_str_opt("n").is_err());
    match g.get_i32_array("big") {
        Err(Error::Metadata(m)) => assert_contains(&m, &["element 0", "big", "4294967295"]),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- header

#[test]
fn wrong_magic_is_not_gguf() {
    let mut bytes = sample().build();
    bytes[0] = b'g';
    assert!(matches!(Gguf::from_bytes(bytes), Err(Error::NotGguf(s)) if s == "<bytes>"));
    for short in [&b""[..], b"G", b"GGU", b"GGML", b"\x7fELF\x02\x01"] {
        assert!(matches!(
            Gguf::from_bytes(short.to_vec()),
            Err(Error::NotGguf(_))
        ));
    }
}

#[test]
fn unsupported_versions_are_refused() {
    for (version, parts) in [
        (1u32, &["version 1", "not supported"][..]),
        (99, &["version 99", "supported: 2 and 3"][..]),
        (0, &["version 0"][..]),
        (3u32.swap_bytes(), &["big-endian"][..]),
    ] {
        let mut bytes = sample().build();
        patch_u32(&mut bytes, AT_VERSION, version);
        assert_contains(&gguf_err(bytes), parts);
    }
}

#[test]
fn every_truncation_fails_cleanly() {
    let bytes = sample().build();
    for cut in 0..bytes.len() {
        let result = Gguf::from_bytes(bytes[..cut].to_vec());
        match result {
            Err(Error::NotGguf(_)) => assert!(cut < 4, "cut {cut}"),
            Err(Error::Gguf(msg)) => assert!(
                msg.contains("truncated")
                    || msg.contains("impossible")
                    || msg.contains("outside the file"),
                "cut {cut}: {msg}"
            ),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn truncation_message_names_the_key() {
    let w = GgufWriter::new().kv("general.name", MetaValue::U64(5));
    let bytes = w.build();
    // header, key, value type, then 5 of the value's 8 bytes.
    let cut = AT_BODY + 8 + "general.name".len() + 4 + 5;
    let msg = gguf_err(bytes[..cut].to_vec());
    assert_contains(
        &msg,
        &[
            "truncated",
            &format!("file ends at byte {cut}"),
            "value of key 'general.name'",
            "needs 8 bytes",
        ],
    );
}

#[test]
fn absurd_tensor_count() {
    let mut bytes = sample().build();
    let len = bytes.len();
    patch_u64(&mut bytes, AT_N_TENSORS, u32::MAX as u64);
    assert_contains(
        &gguf_err(bytes.clone()),
        &[
            "tensor count 4294967295 is impossible",
            &format!("file of {len} bytes"),
        ],
    );
    patch_u64(&mut bytes, AT_N_TENSORS, u64::MAX);
    assert_contains(&gguf_err(bytes), &["tensor count 18446744073709551615"]);
}

#[test]
fn absurd_kv_count() {
    let mut bytes = sample().build();
    patch_u64(&mut bytes, AT_N_KV, 1 << 40);
    assert_contains(
        &gguf_err(bytes),
        &["metadata entry count 1099511627776 is impossible"],
    );
}

#[test]
fn absurd_string_lengths() {
    // Key length.
    let mut bytes = GgufWriter::new().kv("k", MetaValue::U8(1)).build();
    patch_u64(&mut bytes, AT_BODY, 1 << 60);
    assert_contains(
        &gguf_err(bytes),
        &[
            "string length 1152921504606846976",
            "key of metadata entry #0",
        ],
    );
    // Value length: header, key (8 + 1), value type (4).
    let mut bytes = GgufWriter::new()
        .kv("k", MetaValue::Str("abc".into()))
        .build();
    patch_u64(&mut bytes, AT_BODY + 8 + 1 + 4, 1 << 60);
    assert_contains(
        &gguf_err(bytes),
        &["string length 1152921504606846976", "value of key 'k'"],
    );
    // One byte too long.
    let mut bytes = GgufWriter::new()
        .kv("k", MetaValue::Str("abc".into()))
        .build();
    let len = bytes.len() as u64;
    patch_u64(&mut bytes, AT_BODY + 8 + 1 + 4, len);
    assert_contains(&gguf_err(bytes), &["string length", "impossible"]);
}

#[test]
fn absurd_array_length() {
    let mut bytes = GgufWriter::new()
        .kv(
            "arr",
            MetaValue::Array(vec![MetaValue::U32(1), MetaValue::U32(2)]),
        )
        .build();
    // header, key, value type, element type, then the count.
    let at = AT_BODY + 8 + 3 + 4 + 4;
    patch_u64(&mut bytes, at, 1 << 60);
    assert_contains(
        &gguf_err(bytes.clone()),
        &["array length 1152921504606846976", "value of key 'arr'"],
    );
    // u32 elements: one more than the rest of the file (elements and padding) can hold.
    let count = (bytes.len() - (at + 8)) / 4 + 1;
    patch_u64(&mut bytes, at, count as u64);
    assert_contains(
        &gguf_err(bytes),
        &[&format!("array length {count} is impossible")],
    );
}

#[test]
fn absurd_array_of_strings_and_arrays_fails_fast() {
    // Each string element takes at least 8 bytes, each nested array at least 12.
    for (elem_ty, count) in [(vtype::STR, u64::MAX / 8), (vtype::ARRAY, 1 << 58)] {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        put_u32(&mut bytes, 3);
        put_u64(&mut bytes, 0);
        put_u64(&mut bytes, 1);
        put_str(&mut bytes, "a");
        put_u32(&mut bytes, vtype::ARRAY);
        put_u32(&mut bytes, elem_ty);
        put_u64(&mut bytes, count);
        bytes.extend_from_slice(&[0; 64]);
        assert_contains(&gguf_err(bytes), &["array length", "impossible"]);
    }
}

#[test]
fn unknown_value_types() {
    let mut bytes = GgufWriter::new().kv("k", MetaValue::U8(1)).build();
    patch_u32(&mut bytes, AT_BODY + 8 + 1, 13);
    assert_contains(&gguf_err(bytes), &["unknown value type 13", "key 'k'"]);
    let mut bytes = GgufWriter::new()
        .kv("k", MetaValue::Array(vec![MetaValue::U8(1)]))
        .build();
    patch_u32(&mut bytes, AT_BODY + 8 + 1 + 4, 77);
    assert_contains(
        &gguf_err(bytes),
        &["unknown array element type 77", "key 'k'"],
    );
}

#[test]
fn bool_must_be_zero_or_one() {
    let mut bytes = GgufWriter::new().kv("b", MetaValue::Bool(true)).build();
    let at = AT_BODY + 8 + 1 + 4;
    assert_eq!(bytes[at], 1);
    bytes[at] = 2;
    assert_contains(&gguf_err(bytes), &["bool byte 2", "key 'b'"]);
}

#[test]
fn array_nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut v = MetaValue::U8(1);
        for _ in 0..depth {
            v = MetaValue::Array(vec![v]);
        }
        GgufWriter::new().kv("deep", v).build()
    };
    let g = parse(nest(MAX_ARRAY_DEPTH));
    assert!(matches!(g.get("deep"), Some(MetaValue::Array(_))));
    assert_contains(
        &gguf_err(nest(MAX_ARRAY_DEPTH + 1)),
        &["nested more than", "key 'deep'"],
    );
    // Far deeper than the stack would allow if unbounded (written by hand: the writer and
    // `MetaValue`'s drop recurse).
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&MAGIC);
    put_u32(&mut bytes, 3);
    put_u64(&mut bytes, 0);
    put_u64(&mut bytes, 1);
    put_str(&mut bytes, "deep");
    put_u32(&mut bytes, vtype::ARRAY);
    for _ in 0..100_000 {
        put_u32(&mut bytes, vtype::ARRAY);
        put_u64(&mut bytes, 1);
    }
    assert_contains(&gguf_err(bytes), &["nested more than"]);
}

#[test]
fn duplicate_key() {
    let bytes = GgufWriter::new()
        .kv("general.name", MetaValue::Str("a".into()))
        .kv("x", MetaValue::U8(1))
        .kv("general.name", MetaValue::U32(2))
        .build();
    assert_contains(&gguf_err(bytes), &["duplicate metadata key 'general.name'"]);
}

#[test]
fn duplicate_tensor_name() {
    let bytes = GgufWriter::new()
        .tensor("w", &[2], F32, vec![0; 8])
        .tensor("w", &[2], F32, vec![0; 8])
        .build();
    assert_contains(&gguf_err(bytes), &["duplicate tensor name 'w'"]);
}

#[test]
fn invalid_utf8() {
    // In a key.
    let mut bytes = GgufWriter::new().kv("kX", MetaValue::U8(1)).build();
    bytes[AT_BODY + 8 + 1] = 0xFF;
    assert_contains(
        &gguf_err(bytes),
        &["invalid UTF-8", "key of metadata entry #0"],
    );
    // In a value: the message names the key.
    let mut bytes = GgufWriter::new()
        .kv("tok", MetaValue::Array(vec![MetaValue::Str("aX".into())]))
        .build();
    let at = bytes.iter().rposition(|&b| b == b'X').unwrap();
    bytes[at] = 0xC3;
    assert_contains(&gguf_err(bytes), &["invalid UTF-8", "value of key 'tok'"]);
    // In a tensor name.
    let mut bytes = GgufWriter::new()
        .tensor("tX", &[1], F32, vec![0; 4])
        .build();
    bytes[AT_BODY + 8 + 1] = 0x80;
    assert_contains(&gguf_err(bytes), &["invalid UTF-8", "tensor info #0"]);
}

// ---------------------------------------------------------------- alignment

#[test]
fn bad_alignment_values() {
    for (value, parts) in [
        (
            MetaValue::U32(0),
            &["general.alignment is 0", "power of two"][..],
        ),
        (MetaValue::U32(48), &["general.alignment is 48"][..]),
        (
            MetaValue::U64(32),
            &["general.alignment must be a u32", "u64 32"][..],
        ),
        (MetaValue::Str("32".into()), &["must be a u32"][..]),
    ] {
        let mut w =
            GgufWriter::new()
                .kv("general.alignment", value)
                .tensor("t", &[1], F32, vec![0; 4]);
        w.alignment = Some(32);
        assert_contains(&gguf_err(w.build()), parts);
    }
}

// ---------------------------------------------------------------- tensors

/// A file with one tensor "t" and no metadata: n_dims is at this position.
const AT_T_NDIMS: usize = AT_BODY + 8 + 1;

#[test]
fn n_dims_out_of_range() {
    for n_dims in [0u32, 5, u32::MAX] {
        let mut bytes = GgufWriter::new()
            .tensor("t", &[4], F32, vec![0; 16])
            .build();
        patch_u32(&mut bytes, AT_T_NDIMS, n_dims);
        assert_contains(
            &gguf_err(bytes),
            &[&format!("tensor 't' has {n_dims} dimensions"), "1 to 4"],
        );
    }
}

#[test]
fn zero_dimension() {
    let bytes = GgufWriter::new().tensor("t", &[4, 0], F32, vec![]).build();
    assert_contains(&gguf_err(bytes), &["tensor 't' has a zero dimension"]);
}

#[test]
fn dims_product_overflow() {
    let bytes = GgufWriter::new()
        .tensor("big", &[1 << 32, 1 << 32, 2], F32, vec![0; 4])
        .build();
    assert_contains(
        &gguf_err(bytes),
        &["tensor 'big'", "element count overflows"],
    );
    // Elements fit, bytes do not.
    let bytes = GgufWriter::new()
        .tensor("big", &[1 << 62, 2], F32, vec![0; 4])
        .build();
    assert_contains(&gguf_err(bytes), &["tensor 'big'", "byte size overflows"]);
}

#[test]
fn tensor_data_outside_the_file() {
    // Dims claim more data than present.
    let (bytes, layout) = GgufWriter::new()
        .tensor("blk.0.attn_q.weight", &[64, 64], F32, vec![0; 64])
        .build_with_layout();
    let size = bytes.len();
    let start = layout.tensor_offsets[0];
    assert_contains(
        &gguf_err(bytes),
        &[&format!(
            "tensor 'blk.0.attn_q.weight' data [{start}, {}) lies outside the file (size {size})",
            start + 64 * 64 * 4
        )],
    );
    // Offset far past the end, and one that overflows the address space.
    for off in [1u64 << 20, 1 << 63, u64::MAX - 31] {
        let mut w = GgufWriter::new().tensor("t", &[2], F32, vec![0; 8]);
        w.tensors[0].offset_override = Some(off);
        assert_contains(
            &gguf_err(w.build()),
            &["tensor 't' data", "outside the file"],
        );
    }
}

#[test]
fn misaligned_offset() {
    let mut w = GgufWriter::new()
        .tensor("a", &[8], F32, vec![0; 32])
        .tensor("x", &[1], F32, vec![0; 4]);
    w.tensors[1].offset_override = Some(4);
    assert_contains(
        &gguf_err(w.build()),
        &["tensor 'x' offset 4 is not aligned to 32"],
    );
    let mut w = GgufWriter::new()
        .kv("general.alignment", MetaValue::U32(8))
        .tensor("x", &[1], F32, vec![0; 4]);
    w.tensors[0].offset_override = Some(12);
    assert_contains(
        &gguf_err(w.build()),
        &["tensor 'x' offset 12 is not aligned to 8"],
    );
}

#[test]
fn unknown_or_unsupported_tensor_type() {
    for id in [99u32, 16, u32::MAX] {
        let bytes = GgufWriter::new()
            .tensor("blk.3.ffn_up.weight", &[32], id, vec![0; 64])
            .build();
        match Gguf::from_bytes(bytes) {
            Err(Error::UnsupportedTensorType(m)) => assert_contains(&m, &["blk.3.ffn_up.weight"]),
            other => panic!("type id {id}: {other:?}"),
        }
    }
}

#[test]
fn row_length_must_be_a_multiple_of_the_block() {
    let bytes = GgufWriter::new()
        .tensor("q", &[33, 2], Q4_0, vec![0; 4 * 18])
        .build();
    assert_contains(
        &gguf_err(bytes),
        &["tensor 'q'", "row length 33", "block length 32"],
    );
}

#[test]
fn overlapping_tensors_are_accepted() {
    let mut w = GgufWriter::new()
        .tensor("a", &[8], F32, filler(32, 1))
        .tensor("b", &[8], F32, filler(32, 2));
    w.tensors[1].offset_override = Some(0);
    let g = parse(w.build());
    assert_eq!(g.tensor_bytes(&g.tensors[1]), &filler(32, 1)[..]);
}

// ---------------------------------------------------------------- fuzzing

fn fuzz_base() -> Vec<u8> {
    GgufWriter::new()
        .kv("general.architecture", MetaValue::Str("qwen2".into()))
        .kv("a", MetaValue::Array(vec![MetaValue::Str("x".into()); 3]))
        .kv(
            "n",
            MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I16(1)])]),
        )
        .kv("f", MetaValue::F32(1.0))
        .tensor("w", &[32, 2], Q8_0, filler(68, 1))
        .tensor("v", &[3], F32, filler(12, 2))
        .build()
}

/// Parses, and when parsing succeeds uses every accessor, which must not panic either.
fn exercise(bytes: Vec<u8>) {
    if let Ok(g) = Gguf::from_bytes(bytes) {
        for t in &g.tensors {
            assert_eq!(g.tensor_bytes(t).len(), t.n_bytes);
            assert!(g.tensor(&t.name).is_some());
        }
        for key in g.metadata.keys() {
            let _ = (g.get_u64(key), g.get_f32(key), g.get_str(key));
            let _ = (
                g.get_str_array(key),
                g.get_i32_array(key),
                g.get_bool_opt(key),
            );
        }
        let _ = g.arch();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_byte_mutations_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = fuzz_base();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        exercise(bytes);
    }

    #[test]
    fn random_header_words_never_panic(
        at in 4usize..120,
        word in prop_oneof![any::<u64>(), Just(u64::MAX), Just(1u64 << 63), 0u64..300],
    ) {
        let mut bytes = fuzz_base();
        let end = (at + 8).min(bytes.len());
        bytes[at..end].copy_from_slice(&word.to_le_bytes()[..end - at]);
        exercise(bytes);
    }
}

#[test]
fn writer_spec_is_public_and_cloneable() {
    // The writer is also used by integration tests; keep its pieces usable from outside.
    let spec = TensorSpec {
        name: "x".into(),
        dims: vec![1],
        type_id: F32,
        data: vec![0; 4],
        offset_override: None,
    };
    let mut w = GgufWriter::new();
    w.tensors.push(spec.clone());
    assert_eq!(parse(w.build()).tensors[0].name, spec.name);
}
