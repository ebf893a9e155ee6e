//! Tensor formats of GGUF and their kernels: dequantisation, activation quantisation and dot
//! products. STUB: API contract only; implementation pending (helper "quant").
//!
//! A matrix product `y = W x` quantises the activation row `x` once, into the format that the
//! weight type's dot product takes (as llama.cpp does: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1,
//! Q8_K for Q4_K/Q6_K, f32 for F32, f16 for F16), then takes one dot product per weight row.

use crate::error::Result;

#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q6_K,
}

impl GgmlType {
    /// From the GGUF type id; unknown or unsupported ids give `Error::UnsupportedTensorType`
    /// naming the type (e.g. "Q5_1 (id 7)").
    pub fn from_id(_id: u32) -> Result<GgmlType> {
        todo!()
    }
    pub fn name(self) -> &'static str {
        todo!()
    }
    /// Elements per block.
    pub fn block_len(self) -> usize {
        todo!()
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        todo!()
    }
    /// Bytes of a row of `n` elements; error if `n` is not a multiple of the block length.
    pub fn row_bytes(self, _n: usize) -> Result<usize> {
        todo!()
    }
    /// Bytes of an activation row of `n` elements quantised for this weight type.
    pub fn act_row_bytes(self, _n: usize) -> usize {
        todo!()
    }
}

/// Dequantises one row of `dst.len()` elements.
pub fn dequantize_row(_ty: GgmlType, _src: &[u8], _dst: &mut [f32]) {
    todo!()
}

/// Quantises an activation row for dot products against weights of type `ty`;
/// `dst.len() == ty.act_row_bytes(x.len())`.
pub fn quantize_acts(_ty: GgmlType, _x: &[f32], _dst: &mut [u8]) {
    todo!()
}

/// Dot product of `n` elements: a weight row of type `ty` with an activation row made by
/// `quantize_acts(ty, ..)`. Picks the best kernel for this CPU at run time.
pub fn vec_dot(_ty: GgmlType, _n: usize, _w_row: &[u8], _act_row: &[u8]) -> f32 {
    todo!()
}
