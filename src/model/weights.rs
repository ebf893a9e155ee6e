//! The model's tensors, looked up by their GGUF names and checked against the config.
//!
//! Matrices stay in the memory-mapped file, quantised; only the small vectors (norms,
//! biases) are copied out as f32.

use super::arch::{Norms, Presence};
use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo};
use crate::quant::{self, GgmlType};

/// A weight matrix `[rows, cols]` stored row-major in the file: `y = W x` takes one dot
/// product of `x` (length `cols`) per row.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Where the bytes are in the file.
    pub tensor: TensorInfo,
    pub row_bytes: usize,
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,  // [n_embd]
    pub wq: Matrix,           // [q_dim, n_embd]
    pub wk: Matrix,           // [kv_dim, n_embd]
    pub wv: Matrix,           // [kv_dim, n_embd]
    pub bq: Option<Vec<f32>>, // [q_dim]
    pub bk: Option<Vec<f32>>, // [kv_dim]
    pub bv: Option<Vec<f32>>, // [kv_dim]
    /// QK norm (architectures whose spec has it): one weight per head dimension.
    pub q_norm: Option<Vec<f32>>, // [head_dim]
    pub k_norm: Option<Vec<f32>>, // [head_dim]
    pub wo: Matrix,           // [n_embd, q_dim]
    /// Norm of the attention output before the residual add (`Norms::PreAndPost`).
    pub post_attn_norm: Option<Vec<f32>>, // [n_embd]
    pub ffn_norm: Vec<f32>,   // [n_embd]
    /// Norm of the feed-forward output before the residual add (`Norms::PreAndPost`).
    pub post_ffn_norm: Option<Vec<f32>>, // [n_embd]
    pub w_gate: Matrix,       // [n_ff, n_embd]
    pub w_up: Matrix,         // [n_ff, n_embd]
    pub w_down: Matrix,       // [n_embd, n_ff]
}

pub struct Weights {
    pub token_embd: Matrix,    // [vocab, n_embd]
    pub output_norm: Vec<f32>, // [n_embd]
    /// `output.weight`, or the token embedding when the model ties them.
    pub output: Matrix, // [vocab, n_embd]
    pub tied_output: bool,
    pub layers: Vec<LayerWeights>,
}

impl Weights {
    pub fn load(g: &Gguf, cfg: &ModelConfig) -> Result<Weights> {
        let token_embd = matrix(g, "token_embd.weight", cfg.vocab_size, cfg.n_embd)?;
        let output_norm = vector(g, "output_norm.weight", cfg.n_embd)?;
        let (output, tied_output) = match g.tensor("output.weight") {
            Some(_) => (
                matrix(g, "output.weight", cfg.vocab_size, cfg.n_embd)?,
                false,
            ),
            None => (token_embd.clone(), true),
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let bias = |s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                match (g.tensor(&n(s)), cfg.spec.qkv_bias) {
                    (Some(_), _) | (None, Presence::Required) => vector(g, &n(s), len).map(Some),
                    (None, Presence::Optional) => Ok(None),
                }
            };
            let spec = &cfg.spec;
            let when = |on: bool, s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                on.then(|| vector(g, &n(s), len)).transpose()
            };
            let post = spec.norms == Norms::PreAndPost;
            layers.push(LayerWeights {
                attn_norm: vector(g, &n("attn_norm.weight"), cfg.n_embd)?,
                wq: matrix(g, &n("attn_q.weight"), cfg.q_dim(), cfg.n_embd)?,
                wk: matrix(g, &n("attn_k.weight"), cfg.kv_dim(), cfg.n_embd)?,
                wv: matrix(g, &n("attn_v.weight"), cfg.kv_dim(), cfg.n_embd)?,
                bq: bias("attn_q.bias", cfg.q_dim())?,
                bk: bias("attn_k.bias", cfg.kv_dim())?,
                bv: bias("attn_v.bias", cfg.kv_dim())?,
                q_norm: when(spec.qk_norm, "attn_q_norm.weight", cfg.head_dim)?,
                k_norm: when(spec.qk_norm, "attn_k_norm.weight", cfg.head_dim)?,
                wo: matrix(g, &n("attn_output.weight"), cfg.n_embd, cfg.q_dim())?,
                post_attn_norm: when(post, "post_attention_norm.weight", cfg.n_embd)?,
                ffn_norm: vector(g, &n("ffn_norm.weight"), cfg.n_embd)?,
                post_ffn_norm: when(post, "post_ffw_norm.weight", cfg.n_embd)?,
                w_gate: matrix(g, &n("ffn_gate.weight"), cfg.n_ff, cfg.n_embd)?,
                w_up: matrix(g, &n("ffn_up.weight"), cfg.n_ff, cfg.n_embd)?,
                w_down: matrix(g, &n("ffn_down.weight"), cfg.n_embd, cfg.n_ff)?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm,
            output,
            tied_output,
            layers,
        })
    }
}

fn find<'g>(g: &'g Gguf, name: &str) -> Result<&'g TensorInfo> {
    g.tensor(name)
        .ok_or_else(|| Error::Metadata(format!("tensor '{name}' is missing")))
}

/// A matrix tensor with ggml dims `[cols, rows]`.
fn matrix(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let t = find(g, name)?;
    if t.dims != [cols, rows] {
        return Err(Error::Metadata(format!(
            "tensor '{name}' has shape {:?}, expected [{cols}, {rows}]",
            t.dims
        )));
    }
    if matches!(t.ty, GgmlType::F32 | GgmlType::F16) && !cols.is_multiple_of(32) {
        return Err(Error::Metadata(format!(
            "tensor '{name}': row length {cols} is not a multiple of 32"
        )));
    }
    let row_bytes = t.ty.row_bytes(cols)?;
    Ok(Matrix {
        name: name.to_string(),
        ty: t.ty,
        rows,
        cols,
        tensor: t.clone(),
        row_bytes,
    })
}

/// A vector tensor (norm weight or bias), dequantised to f32.
fn vector(g: &Gguf, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = find(g, name)?;
    if t.dims != [len] {
        return Err(Error::Metadata(format!(
            "tensor '{name}' has shape {:?}, expected [{len}]",
            t.dims
        )));
    }
    if !matches!(t.ty, GgmlType::F32 | GgmlType::F16) {
        return Err(Error::Metadata(format!(
            "tensor '{name}' is {}, expected F32 or F16",
            t.ty.name()
        )));
    }
    let mut out = vec![0.0; len];
    quant::dequantize_row(t.ty, g.tensor_bytes(t), &mut out);
    Ok(out)
}
