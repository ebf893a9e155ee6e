//! GGUF reader (versions 2 and 3), memory-mapped, strict about untrusted input.
//! STUB: API contract only; implementation pending (helper "gguf").

use crate::error::Result;
use crate::quant::GgmlType;
use std::collections::BTreeMap;
use std::path::Path;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the length of one row (the fastest-varying dimension).
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Byte offset from the start of the file (data section offset already added).
    pub offset: usize,
    /// Size in bytes, checked to lie inside the file.
    pub n_bytes: usize,
}

pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
}

impl Gguf {
    /// Opens and validates a GGUF file (memory-mapped).
    pub fn open(_path: &Path) -> Result<Gguf> {
        todo!()
    }
    /// Parses GGUF from bytes already in memory (tests, fuzzing).
    pub fn from_bytes(_bytes: Vec<u8>) -> Result<Gguf> {
        todo!()
    }
    pub fn tensor(&self, _name: &str) -> Option<&TensorInfo> {
        todo!()
    }
    /// The bytes of a tensor.
    pub fn tensor_bytes(&self, _t: &TensorInfo) -> &[u8] {
        todo!()
    }
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
    /// `general.architecture`.
    pub fn arch(&self) -> Result<&str> {
        todo!()
    }
    /// Integer of any width that fits in u64 (error naming the key if missing / wrong type).
    pub fn get_u64(&self, _key: &str) -> Result<u64> {
        todo!()
    }
    pub fn get_f32(&self, _key: &str) -> Result<f32> {
        todo!()
    }
    pub fn get_str(&self, _key: &str) -> Result<&str> {
        todo!()
    }
    pub fn get_str_array(&self, _key: &str) -> Result<Vec<&str>> {
        todo!()
    }
    pub fn get_i32_array(&self, _key: &str) -> Result<Vec<i32>> {
        todo!()
    }
}
