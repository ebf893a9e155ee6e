//! The parser proper: a cursor over the file's bytes that checks every length before use.

use super::{vtype, MetaValue, TensorInfo, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::error::{shown, Error, Result};
use crate::quant::GgmlType;
use std::collections::BTreeMap;

/// Most values (scalars, strings and arrays, counted across all arrays) the metadata may hold.
/// Real files hold a few hundred thousand (vocabulary and merges); the cap bounds the memory an
/// adversarial file can make us allocate for `MetaValue`s to a fixed amount rather than a
/// multiple of its size.
pub const MAX_METADATA_VALUES: usize = 1 << 24;

/// Fewest bytes one metadata entry can take: key length, value type, a one-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Fewest bytes one tensor info can take: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;

/// The header of a GGUF file, validated against the file's size.
pub(super) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    pub data_offset: usize,
}

/// A tensor info as read, before the data section's position is known.
struct RawTensor {
    name: String,
    dims: Vec<usize>,
    ty: GgmlType,
    rel_offset: u64,
}

pub(super) fn parse(buf: &[u8], source: &str) -> Result<Header> {
    if buf.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(Error::NotGguf(source.to_string()));
    }
    let mut r = Reader {
        buf,
        pos: MAGIC.len(),
        ctx: "the header".to_string(),
        values_left: MAX_METADATA_VALUES,
    };
    let version = r.u32()?;
    check_version(version)?;

    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let n_tensors = r.check_count("tensor count", n_tensors, MIN_TENSOR_INFO_BYTES)?;
    let n_kv = r.check_count("metadata entry count", n_kv, MIN_KV_BYTES)?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        r.ctx = format!("the key of metadata entry #{i}");
        let key = r.string()?;
        if metadata.contains_key(&key) {
            return Err(Error::Gguf(format!(
                "duplicate metadata key '{}'",
                shown(&key)
            )));
        }
        r.ctx = format!("the value of key '{}'", shown(&key));
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let alignment = alignment(&metadata)?;

    let mut raw = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        r.ctx = format!("the name of tensor info #{i}");
        let name = r.string()?;
        r.ctx = format!("the info of tensor '{}'", shown(&name));
        raw.push(r.tensor_info(name, alignment)?);
    }

    let data_offset = align_up(r.pos, alignment).ok_or_else(|| {
        Error::Gguf(format!(
            "data section offset overflows (header ends at {})",
            r.pos
        ))
    })?;
    let tensors = raw
        .into_iter()
        .map(|t| place_tensor(t, data_offset, buf.len()))
        .collect::<Result<Vec<_>>>()?;

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn check_version(version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(Error::Gguf(
            "GGUF version 1 is not supported (only versions 2 and 3); \
             convert the model again with a current llama.cpp"
                .to_string(),
        )),
        v if matches!(v.swap_bytes(), 1..=3) => Err(Error::Gguf(format!(
            "big-endian GGUF (version {}) is not supported",
            v.swap_bytes()
        ))),
        v => Err(Error::Gguf(format!(
            "unsupported GGUF version {v} (supported: 2 and 3)"
        ))),
    }
}

/// `general.alignment`: absent means 32; present, it must be a `u32` non-zero power of two.
fn alignment(metadata: &BTreeMap<String, MetaValue>) -> Result<usize> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(MetaValue::U32(a)) if a.is_power_of_two() => usize::try_from(*a)
            .map_err(|_| Error::Gguf(format!("general.alignment {a} is too large"))),
        Some(MetaValue::U32(a)) => Err(Error::Gguf(format!(
            "general.alignment is {a}, it must be a non-zero power of two"
        ))),
        Some(other) => Err(Error::Gguf(format!(
            "general.alignment must be a u32, found {}",
            other.describe()
        ))),
    }
}

fn align_up(pos: usize, alignment: usize) -> Option<usize> {
    // `alignment` is a non-zero power of two.
    Some(pos.checked_add(alignment - 1)? & !(alignment - 1))
}

/// Sizes the tensor and checks its data lies inside the file.
fn place_tensor(t: RawTensor, data_offset: usize, file_len: usize) -> Result<TensorInfo> {
    let name = shown(&t.name);
    let ty = t.ty;
    let row_len = t.dims[0];
    let (block_len, block_bytes) = (ty.block_len(), ty.block_bytes());
    if block_len == 0 || !row_len.is_multiple_of(block_len) {
        return Err(Error::Gguf(format!(
            "tensor '{name}' of type {}: row length {row_len} is not a multiple of the block \
             length {block_len}",
            ty.name()
        )));
    }
    let n_rows = t.dims[1..]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let n_bytes = n_rows
        .and_then(|rows| {
            (row_len / block_len)
                .checked_mul(block_bytes)?
                .checked_mul(rows)
        })
        .ok_or_else(|| {
            Error::Gguf(format!(
                "tensor '{name}' dims {:?} of type {}: byte size overflows",
                t.dims,
                ty.name()
            ))
        })?;
    let outside = |start: String, end: String| {
        Error::Gguf(format!(
            "tensor '{name}' data [{start}, {end}) lies outside the file (size {file_len})"
        ))
    };
    let offset = usize::try_from(t.rel_offset)
        .ok()
        .and_then(|rel| data_offset.checked_add(rel))
        .ok_or_else(|| {
            outside(
                format!("{data_offset} + {}", t.rel_offset),
                "...".to_string(),
            )
        })?;
    let end = offset
        .checked_add(n_bytes)
        .ok_or_else(|| outside(offset.to_string(), format!("{offset} + {n_bytes}")))?;
    if end > file_len {
        return Err(outside(offset.to_string(), end.to_string()));
    }
    Ok(TensorInfo {
        name: t.name,
        dims: t.dims,
        ty,
        offset,
        n_bytes,
    })
}

/// A cursor over the file. `pos <= buf.len()` always holds.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being read, for messages ("the value of key 'general.name'").
    ctx: String,
    /// Budget left under [`MAX_METADATA_VALUES`].
    values_left: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Gguf(format!(
                "truncated: file ends at byte {} while reading {} (needs {n} bytes at byte {})",
                self.buf.len(),
                self.ctx,
                self.pos
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in the rest of the file.
    fn check_count(&self, what: &str, count: u64, min_bytes: usize) -> Result<usize> {
        let fits = usize::try_from(count).ok().filter(|&n| {
            n.checked_mul(min_bytes)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            Error::Gguf(format!(
                "{what} {count} is impossible for a file of {} bytes \
                 (reading {}: {} bytes left at byte {}, each item takes at least {min_bytes})",
                self.buf.len(),
                self.ctx,
                self.remaining(),
                self.pos
            ))
        })
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let len = self.check_count("string length", len, 1)?;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Error::Gguf(format!(
                "invalid UTF-8 in {} (byte {} of the string {:?})",
                self.ctx,
                e.valid_up_to(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
            ))),
        }
    }

    /// Fewest bytes one value of type `ty` takes, `None` for an unknown type.
    fn min_value_bytes(ty: u32) -> Option<usize> {
        Some(match ty {
            vtype::U8 | vtype::I8 | vtype::BOOL => 1,
            vtype::U16 | vtype::I16 => 2,
            vtype::U32 | vtype::I32 | vtype::F32 => 4,
            vtype::U64 | vtype::I64 | vtype::F64 => 8,
            vtype::STR => 8,
            vtype::ARRAY => 4 + 8,
            _ => return None,
        })
    }

    fn unknown_type(&self, ty: u32) -> Error {
        Error::Gguf(format!("unknown value type {ty} in {}", self.ctx))
    }

    /// One value of type `ty`; `depth` counts the arrays it is nested in.
    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        if self.values_left == 0 {
            return Err(Error::Gguf(format!(
                "metadata holds more than {MAX_METADATA_VALUES} values (at {})",
                self.ctx
            )));
        }
        self.values_left -= 1;
        Ok(match ty {
            vtype::U8 => MetaValue::U8(self.u8()?),
            vtype::I8 => MetaValue::I8(i8::from_le_bytes(self.array()?)),
            vtype::U16 => MetaValue::U16(self.u16()?),
            vtype::I16 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            vtype::U32 => MetaValue::U32(self.u32()?),
            vtype::I32 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            vtype::U64 => MetaValue::U64(self.u64()?),
            vtype::I64 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            vtype::F32 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            vtype::F64 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            vtype::BOOL => match self.u8()? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(Error::Gguf(format!(
                        "bool byte {b} in {} is neither 0 nor 1",
                        self.ctx
                    )))
                }
            },
            vtype::STR => MetaValue::Str(self.string()?),
            vtype::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::Gguf(format!(
                        "arrays nested more than {MAX_ARRAY_DEPTH} deep in {}",
                        self.ctx
                    )));
                }
                let elem_ty = self.u32()?;
                let min = Self::min_value_bytes(elem_ty).ok_or_else(|| {
                    Error::Gguf(format!(
                        "unknown array element type {elem_ty} in {}",
                        self.ctx
                    ))
                })?;
                let count = self.u64()?;
                let count = self.check_count("array length", count, min)?;
                if count > self.values_left {
                    return Err(Error::Gguf(format!(
                        "array length {count} in {} takes the metadata over {MAX_METADATA_VALUES} \
                         values",
                        self.ctx
                    )));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            other => return Err(self.unknown_type(other)),
        })
    }

    /// The rest of a tensor info after its name.
    fn tensor_info(&mut self, name: String, alignment: usize) -> Result<RawTensor> {
        let shown_name = shown(&name);
        let n_dims = self.u32()?;
        if !(1..=MAX_DIMS as u32).contains(&n_dims) {
            return Err(Error::Gguf(format!(
                "tensor '{shown_name}' has {n_dims} dimensions (must be 1 to {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64()?;
            match usize::try_from(d) {
                Ok(0) => {
                    return Err(Error::Gguf(format!(
                        "tensor '{shown_name}' has a zero dimension"
                    )))
                }
                Ok(d) => dims.push(d),
                Err(_) => {
                    return Err(Error::Gguf(format!(
                        "tensor '{shown_name}' dimension {d} does not fit in memory"
                    )))
                }
            }
        }
        if dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none()
        {
            return Err(Error::Gguf(format!(
                "tensor '{shown_name}' dims {dims:?}: element count overflows"
            )));
        }
        let type_id = self.u32()?;
        let ty = GgmlType::from_id(type_id).map_err(|e| match e {
            Error::UnsupportedTensorType(msg) => {
                Error::UnsupportedTensorType(format!("{msg} (tensor '{shown_name}')"))
            }
            Error::Gguf(msg) | Error::Metadata(msg) => Error::UnsupportedTensorType(format!(
                "{msg} (tensor '{shown_name}', type id {type_id})"
            )),
            other => other,
        })?;
        let rel_offset = self.u64()?;
        if !rel_offset.is_multiple_of(alignment as u64) {
            return Err(Error::Gguf(format!(
                "tensor '{shown_name}' offset {rel_offset} is not aligned to {alignment}"
            )));
        }
        Ok(RawTensor {
            name,
            dims,
            ty,
            rel_offset,
        })
    }
}
