//! The model's tensors, looked up by their GGUF names and checked against the config.
//!
//! Matrices stay in the memory-mapped file, quantised; only the small vectors (norms,
//! biases, RoPE factors) are copied out as f32. A file with a tensor that the architecture
//! does not use is refused (as llama.cpp refuses it: "wrong number of tensors"), since
//! leaving it out would give wrong answers silently (an output bias, a fused projection...).

use super::arch::{GateUp, Norms, Presence};
use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo};
use crate::quant::{self, GgmlType};
use std::cell::RefCell;
use std::collections::HashSet;

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

impl Matrix {
    /// Rows `start..start + rows` as a matrix of their own: the same bytes of the file (a
    /// fused tensor's parts, e.g. Phi-3's `attn_qkv` and gate+up `ffn_up`).
    pub fn row_range(&self, start: usize, rows: usize) -> Matrix {
        assert!(
            start + rows <= self.rows,
            "{}: rows out of range",
            self.name
        );
        let mut tensor = self.tensor.clone();
        tensor.offset += start * self.row_bytes;
        tensor.n_bytes = rows * self.row_bytes;
        tensor.dims = vec![self.cols, rows];
        Matrix {
            name: format!("{} rows {start}..{}", self.name, start + rows),
            rows,
            tensor,
            ..self.clone()
        }
    }
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
    /// RoPE frequency factors (`rope_freqs.weight`, `[rope_dims / 2]`) where the architecture
    /// reads them and the file has them: frequency `i` is divided by factor `i`.
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
}

impl Weights {
    pub fn load(g: &Gguf, cfg: &ModelConfig) -> Result<Weights> {
        let ld = Loader {
            g,
            used: RefCell::new(HashSet::new()),
        };
        let token_embd = ld.matrix("token_embd.weight", cfg.vocab_size, cfg.n_embd)?;
        let output_norm = ld.vector("output_norm.weight", cfg.n_embd)?;
        let (output, tied_output) = match g.tensor("output.weight") {
            Some(_) => (
                ld.matrix("output.weight", cfg.vocab_size, cfg.n_embd)?,
                false,
            ),
            None => (token_embd.clone(), true),
        };
        let rope_freqs = match g.tensor("rope_freqs.weight") {
            Some(_) if cfg.spec.rope_freqs => {
                let f = ld.vector("rope_freqs.weight", cfg.rope_dims / 2)?;
                if let Some(bad) = f.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                    return Err(Error::Metadata(format!(
                        "tensor 'rope_freqs.weight' holds {bad}, expected positive factors"
                    )));
                }
                Some(f)
            }
            _ => None,
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let bias = |s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                match (g.tensor(&n(s)), cfg.spec.qkv_bias) {
                    (Some(_), _) | (None, Presence::Required) => ld.vector(&n(s), len).map(Some),
                    (None, Presence::Optional) => Ok(None),
                }
            };
            let spec = &cfg.spec;
            let when = |on: bool, s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                on.then(|| ld.vector(&n(s), len)).transpose()
            };
            let post = spec.norms == Norms::PreAndPost;
            let (q, kv, d) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_embd);
            // Q, K and V fused in one matrix where the file has one (llama.cpp's
            // `create_tensor_qkv`, every architecture here): row ranges of it.
            let (wq, wk, wv) = match g.tensor(&n("attn_qkv.weight")) {
                Some(_) => {
                    let qkv = ld.matrix(&n("attn_qkv.weight"), q + 2 * kv, d)?;
                    (
                        qkv.row_range(0, q),
                        qkv.row_range(q, kv),
                        qkv.row_range(q + kv, kv),
                    )
                }
                None => (
                    ld.matrix(&n("attn_q.weight"), q, d)?,
                    ld.matrix(&n("attn_k.weight"), kv, d)?,
                    ld.matrix(&n("attn_v.weight"), kv, d)?,
                ),
            };
            let (w_gate, w_up) = match spec.gate_up {
                GateUp::Separate => (
                    ld.matrix(&n("ffn_gate.weight"), cfg.n_ff, d)?,
                    ld.matrix(&n("ffn_up.weight"), cfg.n_ff, d)?,
                ),
                GateUp::Fused => {
                    let up = ld.matrix(&n("ffn_up.weight"), 2 * cfg.n_ff, d)?;
                    (up.row_range(0, cfg.n_ff), up.row_range(cfg.n_ff, cfg.n_ff))
                }
            };
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n("attn_norm.weight"), cfg.n_embd)?,
                wq,
                wk,
                wv,
                bq: bias("attn_q.bias", cfg.q_dim())?,
                bk: bias("attn_k.bias", cfg.kv_dim())?,
                bv: bias("attn_v.bias", cfg.kv_dim())?,
                q_norm: when(spec.qk_norm, "attn_q_norm.weight", cfg.head_dim)?,
                k_norm: when(spec.qk_norm, "attn_k_norm.weight", cfg.head_dim)?,
                wo: ld.matrix(&n("attn_output.weight"), cfg.n_embd, cfg.q_dim())?,
                post_attn_norm: when(post, "post_attention_norm.weight", cfg.n_embd)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), cfg.n_embd)?,
                post_ffn_norm: when(post, "post_ffw_norm.weight", cfg.n_embd)?,
                w_gate,
                w_up,
                w_down: ld.matrix(&n("ffn_down.weight"), cfg.n_embd, cfg.n_ff)?,
            });
        }
        let used = ld.used.into_inner();
        if let Some(t) = g.tensors.iter().find(|t| !used.contains(&t.name)) {
            return Err(Error::Metadata(format!(
                "tensor '{}' is not part of the {} architecture as fastgen runs it",
                crate::error::shown(&t.name),
                cfg.arch
            )));
        }
        Ok(Weights {
            token_embd,
            output_norm,
            output,
            tied_output,
            rope_freqs,
            layers,
        })
    }
}

/// Looks tensors up and remembers which were taken.
struct Loader<'g> {
    g: &'g Gguf,
    used: RefCell<HashSet<String>>,
}

impl Loader<'_> {
    fn take(&self, name: &str) {
        self.used.borrow_mut().insert(name.to_string());
    }
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        self.take(name);
        matrix(self.g, name, rows, cols)
    }
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.take(name);
        vector(self.g, name, len)
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
    if matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) && !cols.is_multiple_of(32) {
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
    // Converters keep vectors in F32; an F16 or BF16 file may hold them in its own type.
    if !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(Error::Metadata(format!(
            "tensor '{name}' is {}, expected F32, F16 or BF16",
            t.ty.name()
        )));
    }
    let mut out = vec![0.0; len];
    quant::dequantize_row(t.ty, g.tensor_bytes(t), &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::vector;
    use crate::gguf::write::GgufWriter;
    use crate::gguf::Gguf;
    use crate::quant::GgmlType;

    /// Norm vectors load from F32, F16 and BF16 to the same values; a quantised one is
    /// refused naming the tensor and its type.
    #[test]
    fn vectors_load_from_float_types() {
        let want = [1.0f32, -0.5, 0.25, 3.0];
        let f32b: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16b: Vec<u8> = (want.iter())
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16b: Vec<u8> = (want.iter())
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        let g = GgufWriter::new()
            .tensor("a", &[4], GgmlType::F32.id(), f32b)
            .tensor("b", &[4], GgmlType::F16.id(), f16b)
            .tensor("c", &[4], GgmlType::BF16.id(), bf16b)
            .tensor("q", &[32], GgmlType::Q8_0.id(), vec![0u8; 34])
            .build();
        let g = Gguf::from_bytes(g).unwrap();
        for name in ["a", "b", "c"] {
            assert_eq!(vector(&g, name, 4).unwrap(), want, "{name}");
        }
        let e = vector(&g, "q", 32).unwrap_err().to_string();
        assert!(e.contains("'q' is Q8_0"), "{e}");
        let e = vector(&g, "a", 5).unwrap_err().to_string();
        assert!(e.contains("expected [5]"), "{e}");
    }
}
