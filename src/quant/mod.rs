//! Tensor formats of GGUF and their kernels: dequantisation, activation quantisation and dot
//! products.
//!
//! A matrix product `y = W x` quantises the activation row `x` once, into the format that the
//! weight type's dot product takes (as llama.cpp does: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1
//! for Q4_1/Q5_1, Q8_K for Q2_K/Q3_K/Q4_K/Q5_K/Q6_K, f32 for F32, f16 for F16; BF16 weights
//! take f32 activations, where llama.cpp converts them to BF16), then takes one dot product
//! per weight row.
//!
//! Layout: `blocks` (byte layouts), `scalar` (portable reference kernels), `avx2`/`avx512`
//! (x86 kernels), `table` (a kernel set as a table of function pointers, and the checked
//! multi-row entry points), `dispatch` (run-time choice of the table).

pub mod blocks;
mod dispatch;
pub mod scalar;
mod table;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;

pub use dispatch::{kernels, supported_kernels};
pub use table::Kernels;

use crate::error::{Error, Result};
use blocks::*;

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
    Q5_K,
    Q5_1,
    BF16,
    Q2_K,
    Q3_K,
    IQ4_NL,
}

impl GgmlType {
    pub const ALL: [GgmlType; 14] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q5_1,
        GgmlType::BF16,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::IQ4_NL,
    ];

    /// From the GGUF type id; unknown or unsupported ids give `Error::UnsupportedTensorType`
    /// naming the type (e.g. "Q5_1 (id 7)").
    pub fn from_id(id: u32) -> Result<GgmlType> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            20 => GgmlType::IQ4_NL,
            30 => GgmlType::BF16,
            _ => {
                let msg = match ggml_type_name(id) {
                    Some(name) => format!("{name} (id {id})"),
                    None => format!("unknown type id {id}"),
                };
                return Err(Error::UnsupportedTensorType(msg));
            }
        })
    }

    /// The GGUF type id (inverse of [`GgmlType::from_id`]).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
            GgmlType::Q5_K => 13,
            GgmlType::Q5_1 => 7,
            GgmlType::BF16 => 30,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::IQ4_NL => 20,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::BF16 => "BF16",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::IQ4_NL => "IQ4_NL",
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::IQ4_NL => QK,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                QK_K
            }
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 => Q4_0_BYTES,
            GgmlType::Q4_1 => Q4_1_BYTES,
            GgmlType::Q5_0 => Q5_0_BYTES,
            GgmlType::Q8_0 => Q8_0_BYTES,
            GgmlType::Q4_K => Q4_K_BYTES,
            GgmlType::Q6_K => Q6_K_BYTES,
            GgmlType::Q5_K => Q5_K_BYTES,
            GgmlType::Q5_1 => Q5_1_BYTES,
            GgmlType::BF16 => 2,
            GgmlType::Q2_K => Q2_K_BYTES,
            GgmlType::Q3_K => Q3_K_BYTES,
            GgmlType::IQ4_NL => IQ4_NL_BYTES,
        }
    }

    /// Bytes of a row of `n` elements; error if `n` is not a multiple of the block length.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return Err(Error::UnsupportedTensorType(format!(
                "{}: row of {n} elements is not a whole number of {}-element blocks",
                self.name(),
                self.block_len()
            )));
        }
        Ok(n / self.block_len() * self.block_bytes())
    }

    /// Bytes of an activation row of `n` elements quantised for this weight type.
    pub fn act_row_bytes(self, n: usize) -> usize {
        match self {
            GgmlType::F32 | GgmlType::BF16 => 4 * n,
            GgmlType::F16 => 2 * n,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => {
                n / QK * Q8_0_BYTES
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => n / QK * Q8_1_BYTES,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                n / QK_K * Q8_K_BYTES
            }
        }
    }
}

/// Names of the ggml types this crate does not run, for error messages.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    NAMES.get(id as usize).copied()
}

/// Dequantises one row of `dst.len()` elements.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    scalar::dequantize_row(ty, src, dst)
}

/// Quantises an activation row for dot products against weights of type `ty`;
/// `dst.len() == ty.act_row_bytes(x.len())`.
pub fn quantize_acts(ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    kernels().quantize_acts(ty, x, dst)
}

/// Dot product of `n` elements: a weight row of type `ty` with an activation row made by
/// `quantize_acts(ty, ..)`. Picks the best kernel for this CPU at run time.
pub fn vec_dot(ty: GgmlType, n: usize, w_row: &[u8], act_row: &[u8]) -> f32 {
    kernels().vec_dot(ty, n, w_row, act_row)
}

/// One activation row against `out.len()` consecutive weight rows of `row_bytes` each:
/// `out[r] = dot(w_rows[r], act_row)`.
pub fn vec_dot_rows(
    ty: GgmlType,
    n: usize,
    w_rows: &[u8],
    row_bytes: usize,
    act_row: &[u8],
    out: &mut [f32],
) {
    kernels().vec_dot_rows(ty, n, w_rows, row_bytes, act_row, out)
}

/// Every one of `n_rows` weight rows against every one of `n_acts` activation rows (prefill):
/// `out[a * out_stride + r] = dot(w_rows[r], acts[a])`.
#[allow(clippy::too_many_arguments)]
pub fn dot_tile(
    ty: GgmlType,
    n: usize,
    w_rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_acts: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    kernels().dot_tile(
        ty,
        n,
        w_rows,
        row_bytes,
        n_rows,
        acts,
        act_row_bytes,
        n_acts,
        out,
        out_stride,
    )
}
