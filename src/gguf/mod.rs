//! GGUF reader (versions 2 and 3), memory-mapped, strict about untrusted input.
//!
//! The whole header (metadata and tensor table) is parsed and validated up front by
//! [`Gguf::open`] / [`Gguf::from_bytes`]; afterwards every [`TensorInfo`] is known to describe
//! a byte range inside the file, so [`Gguf::tensor_bytes`] is a plain slice.
//!
//! What is checked, and refused with [`Error::Gguf`] naming the problem:
//! * every count and length against the bytes left in the file *before* anything is
//!   allocated for it (a string claiming 2^60 bytes fails at once, it does not exhaust memory);
//! * all arithmetic on sizes and offsets (checked, never wrapping);
//! * UTF-8 of keys, string values and tensor names; duplicate keys and tensor names;
//! * value type ids, bool bytes, array nesting depth ([`MAX_ARRAY_DEPTH`]);
//! * `n_dims` in `1..=4`, non-zero dimensions, row length a multiple of the block length;
//! * `general.alignment` (a `u32`, non-zero power of two), offsets aligned to it, and every
//!   tensor's data range inside the file.
//!
//! A wrong magic gives [`Error::NotGguf`]; an unknown or unsupported tensor type gives
//! [`Error::UnsupportedTensorType`] naming the tensor.
//!
//! [`write`] holds a small GGUF writer, used by the tests to build synthetic files.

mod parse;
pub mod write;

#[cfg(test)]
mod tests;

use crate::error::{shown, Error, Result};
use crate::quant::GgmlType;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Data section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Deepest nesting of arrays accepted in metadata (an array of arrays of scalars is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions a tensor may have (ggml's limit).
pub const MAX_DIMS: usize = 4;

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

/// GGUF value type ids.
pub(crate) mod vtype {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STR: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl MetaValue {
    /// The GGUF value type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => vtype::U8,
            MetaValue::I8(_) => vtype::I8,
            MetaValue::U16(_) => vtype::U16,
            MetaValue::I16(_) => vtype::I16,
            MetaValue::U32(_) => vtype::U32,
            MetaValue::I32(_) => vtype::I32,
            MetaValue::U64(_) => vtype::U64,
            MetaValue::I64(_) => vtype::I64,
            MetaValue::F32(_) => vtype::F32,
            MetaValue::F64(_) => vtype::F64,
            MetaValue::Bool(_) => vtype::BOOL,
            MetaValue::Str(_) => vtype::STR,
            MetaValue::Array(_) => vtype::ARRAY,
        }
    }

    /// Short name of the value's type ("u32", "str", "array"...).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "str",
            MetaValue::Array(_) => "array",
        }
    }

    /// The value as a signed 128-bit integer, for any integer type.
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Type and (short) value, for error messages: `u32 7`, `str "llama"`, `array of 3 str`.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Str(s) => {
                let head: String = s.chars().take(40).collect();
                let more = if head.len() < s.len() { "..." } else { "" };
                format!("str {head:?}{more}")
            }
            MetaValue::Array(items) => match items.first() {
                None => "empty array".to_string(),
                Some(first) => format!("array of {} {}", items.len(), first.type_name()),
            },
            other => format!("{} {other}", other.type_name()),
        }
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::Str(s) => write!(f, "{s:?}"),
            MetaValue::Array(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq)]
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

impl TensorInfo {
    /// Number of elements (product of the dimensions; checked not to overflow at parse time).
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
    /// Number of rows: the product of all dimensions but the first.
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
}

/// The bytes behind a parsed file.
enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file.
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    alignment: usize,
    data_offset: usize,
    by_name: HashMap<String, usize>,
    storage: Storage,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("file_size", &self.storage.bytes().len())
            .finish()
    }
}

impl Gguf {
    /// Opens and validates a GGUF file (memory-mapped).
    ///
    /// Messages of [`Error::Gguf`] start with the path.
    pub fn open(path: &Path) -> Result<Gguf> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let shown_path = path.display().to_string();
        if len < MAGIC.len() as u64 {
            // Too short for the magic (mapping an empty file is not portable either).
            return Err(Error::NotGguf(shown_path));
        }
        // SAFETY: the map is read-only and lives as long as `Gguf`. As with any memory-mapped
        // file, another process truncating or rewriting the file while it is mapped is outside
        // what we can guard against (model files are not modified in place).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(Storage::Mmap(map), &shown_path).map_err(|e| match e {
            Error::Gguf(msg) => Error::Gguf(format!("{shown_path}: {msg}")),
            other => other,
        })
    }

    /// Parses GGUF from bytes already in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf> {
        Self::parse(Storage::Owned(bytes), "<bytes>")
    }

    fn parse(storage: Storage, source: &str) -> Result<Gguf> {
        let header = parse::parse(storage.bytes(), source)?;
        let mut by_name = HashMap::with_capacity(header.tensors.len());
        for (i, t) in header.tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(Error::Gguf(format!(
                    "duplicate tensor name '{}'",
                    shown(&t.name)
                )));
            }
        }
        Ok(Gguf {
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
            by_name,
            storage,
        })
    }

    /// The tensor of that name (O(1)).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor.
    ///
    /// `t` should come from this file's [`Gguf::tensors`]; a range lying outside the file
    /// (a `TensorInfo` from another, larger file) gives an empty slice rather than a panic.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        t.offset
            .checked_add(t.n_bytes)
            .and_then(|end| self.storage.bytes().get(t.offset..end))
            .unwrap_or(&[])
    }

    /// The whole file.
    pub fn file_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Alignment of the data section and of tensor offsets.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute offset of the data section (tensor offsets in the file are relative to it).
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key)
            .ok_or_else(|| Error::Metadata(format!("missing key '{}'", shown(key))))
    }

    /// `general.architecture`.
    pub fn arch(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Integer of any width that fits in u64 (error naming the key if missing / wrong type).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        to_u64(key, self.require(key)?)
    }

    /// Like [`Gguf::get_u64`], but `Ok(None)` when the key is absent.
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| to_u64(key, v)).transpose()
    }

    /// `f32`, `f64` (narrowed) or any integer type.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        to_f32(key, self.require(key)?)
    }

    /// Like [`Gguf::get_f32`], but `Ok(None)` when the key is absent.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.get(key).map(|v| to_f32(key, v)).transpose()
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        to_bool(key, self.require(key)?)
    }

    /// Like [`Gguf::get_bool`], but `Ok(None)` when the key is absent.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| to_bool(key, v)).transpose()
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        to_str(key, self.require(key)?)
    }

    /// Like [`Gguf::get_str`], but `Ok(None)` when the key is absent.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|v| to_str(key, v)).transpose()
    }

    /// An array of strings (an empty array is fine).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let items = to_array(key, self.require(key)?)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                MetaValue::Str(s) => Ok(s.as_str()),
                other => Err(wrong_elem(key, i, other, "str")),
            })
            .collect()
    }

    /// An array of integers that fit in `i32` (token types are stored as `i32`).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let items = to_array(key, self.require(key)?)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_int()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| wrong_elem(key, i, v, "i32"))
            })
            .collect()
    }

    /// An array of numbers as `f32` (each element read as [`Gguf::get_f32`] reads a value;
    /// SentencePiece scores are stored as `f32`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let items = to_array(key, self.require(key)?)?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| to_f32(key, v).map_err(|_| wrong_elem(key, i, v, "f32")))
            .collect()
    }
}

fn wrong_type(key: &str, found: &MetaValue, expected: &str) -> Error {
    Error::Metadata(format!(
        "key '{}' is {}, expected {expected}",
        shown(key),
        found.describe()
    ))
}

fn wrong_elem(key: &str, index: usize, found: &MetaValue, expected: &str) -> Error {
    Error::Metadata(format!(
        "element {index} of key '{}' is {}, expected {expected}",
        shown(key),
        found.describe()
    ))
}

fn to_u64(key: &str, v: &MetaValue) -> Result<u64> {
    v.as_int()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| wrong_type(key, v, "a non-negative integer"))
}

fn to_f32(key: &str, v: &MetaValue) -> Result<f32> {
    match *v {
        MetaValue::F32(x) => Ok(x),
        MetaValue::F64(x) => {
            let narrowed = x as f32;
            if x.is_finite() && !narrowed.is_finite() {
                Err(wrong_type(key, v, "a number in the range of f32"))
            } else {
                Ok(narrowed)
            }
        }
        _ => match v.as_int() {
            Some(n) => Ok(n as f32),
            None => Err(wrong_type(key, v, "a number")),
        },
    }
}

fn to_bool(key: &str, v: &MetaValue) -> Result<bool> {
    match *v {
        MetaValue::Bool(b) => Ok(b),
        _ => Err(wrong_type(key, v, "a bool")),
    }
}

fn to_str<'a>(key: &str, v: &'a MetaValue) -> Result<&'a str> {
    match v {
        MetaValue::Str(s) => Ok(s),
        _ => Err(wrong_type(key, v, "a string")),
    }
}

fn to_array<'a>(key: &str, v: &'a MetaValue) -> Result<&'a [MetaValue]> {
    match v {
        MetaValue::Array(items) => Ok(items),
        _ => Err(wrong_type(key, v, "an array")),
    }
}
