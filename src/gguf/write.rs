//! A small GGUF writer, for tests and tools that need synthetic files.
//!
//! It writes whatever it is given, including files the reader refuses (wrong magic, a
//! misaligned tensor offset, a bad `general.alignment`), so that tests can build malformed
//! files; only [`GgufWriter::build`] with sensible inputs gives a valid file.

use super::{vtype, MetaValue, DEFAULT_ALIGNMENT, MAGIC};

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order, `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// GGUF/ggml type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 6 Q5_0, 8 Q8_0, 12 Q4_K, 14 Q6_K...).
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Offset to write in the tensor info instead of the real one (relative to the data
    /// section). The data is still placed where it would normally go.
    pub offset_override: Option<u64>,
}

/// Where `build` put things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Absolute offset of the data section.
    pub data_offset: usize,
    /// Absolute offset of each tensor's data, in order.
    pub tensor_offsets: Vec<usize>,
}

/// Builder for a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    pub magic: [u8; 4],
    pub version: u32,
    /// Written in this order (duplicates are written too).
    pub kvs: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorSpec>,
    /// Alignment used for padding; `None` takes `general.alignment` from `kvs` if it is a
    /// valid `u32` power of two, else 32.
    pub alignment: Option<usize>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version 3 file.
    pub fn new() -> Self {
        GgufWriter {
            magic: MAGIC,
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: None,
        }
    }

    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    pub fn kv(mut self, key: &str, value: MetaValue) -> Self {
        self.kvs.push((key.to_string(), value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
            offset_override: None,
        });
        self
    }

    fn padding_alignment(&self) -> usize {
        if let Some(a) = self.alignment {
            return a.max(1);
        }
        let from_kv = self.kvs.iter().rev().find_map(|(k, v)| match v {
            MetaValue::U32(a) if k == "general.alignment" && a.is_power_of_two() => {
                Some(*a as usize)
            }
            _ => None,
        });
        from_kv.unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    /// The file's bytes and where the data went.
    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let align = self.padding_alignment();
        let pad = |n: usize| n.div_ceil(align) * align;

        // Relative offsets: each tensor's data padded to the alignment.
        let mut rel_offsets = Vec::with_capacity(self.tensors.len());
        let mut next = 0usize;
        for t in &self.tensors {
            rel_offsets.push(next);
            next = pad(next + t.data.len());
        }

        let mut out = Vec::new();
        out.extend_from_slice(&self.magic);
        put_u32(&mut out, self.version);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.kvs.len() as u64);
        for (key, value) in &self.kvs {
            put_str(&mut out, key);
            put_u32(&mut out, value.type_id());
            put_value(&mut out, value);
        }
        for (t, &rel) in self.tensors.iter().zip(&rel_offsets) {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            put_u32(&mut out, t.type_id);
            put_u64(&mut out, t.offset_override.unwrap_or(rel as u64));
        }
        let data_offset = pad(out.len());
        out.resize(data_offset, 0);
        let mut tensor_offsets = Vec::with_capacity(self.tensors.len());
        for (t, &rel) in self.tensors.iter().zip(&rel_offsets) {
            out.resize(data_offset + rel, 0);
            tensor_offsets.push(out.len());
            out.extend_from_slice(&t.data);
        }
        (
            out,
            Layout {
                data_offset,
                tensor_offsets,
            },
        )
    }
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A GGUF string: u64 length, then the bytes.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A value's payload (its type id is written by the caller). An array's element type is taken
/// from its first element (`u8` for an empty array); mixing element types gives a malformed
/// file.
pub fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::Str(s) => put_str(out, s),
        MetaValue::Array(items) => {
            put_u32(out, items.first().map_or(vtype::U8, MetaValue::type_id));
            put_u64(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
    }
}
