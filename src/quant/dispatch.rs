//! Run-time choice of kernel set: the best table ([`Kernels`]) the CPU supports, or the one
//! `FASTGEN_KERNELS` forces, is picked once and cached, so a call costs one pointer load plus
//! an indirect call.

use std::sync::OnceLock;

use super::scalar;
use super::table::{Kernels, N_TYPES};

pub(crate) static SCALAR: Kernels = Kernels {
    name: "scalar",
    dot: [
        scalar::dot_f32,
        scalar::dot_f16,
        scalar::dot_q4_0,
        scalar::dot_q4_1,
        scalar::dot_q5_0,
        scalar::dot_q8_0,
        scalar::dot_q4_k,
        scalar::dot_q6_k,
        scalar::dot_q5_k,
        scalar::dot_q5_1,
        scalar::dot_bf16,
        scalar::dot_q2_k,
        scalar::dot_q3_k,
        scalar::dot_iq4_nl,
    ],
    quant: [
        scalar::quantize_f32,
        scalar::quantize_f16,
        scalar::quantize_q8_0,
        scalar::quantize_q8_1,
        scalar::quantize_q8_0,
        scalar::quantize_q8_0,
        scalar::quantize_q8_k,
        scalar::quantize_q8_k,
        scalar::quantize_q8_k,
        scalar::quantize_q8_1,
        scalar::quantize_f32,
        scalar::quantize_q8_k,
        scalar::quantize_q8_k,
        scalar::quantize_q8_0,
    ],
    rows: [None; N_TYPES],
    tile: [None; N_TYPES],
};

/// Every kernel set this CPU can run, slowest first (scalar is always there).
pub fn supported_kernels() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx2::supported() {
            v.push(&super::avx2::KERNELS);
        }
        if super::avx512::supported_bw() {
            v.push(&super::avx512::KERNELS_BW);
        }
        if super::avx512::supported_vnni() {
            v.push(&super::avx512::KERNELS_VNNI);
        }
    }
    v
}

/// The kernel set of the level in use ([`crate::cpu::level`]: the CPU's best, or the one
/// `FASTGEN_KERNELS` forces), chosen on first use.
pub fn kernels() -> &'static Kernels {
    static BEST: OnceLock<&'static Kernels> = OnceLock::new();
    BEST.get_or_init(|| {
        let all = supported_kernels();
        let name = crate::cpu::level().name();
        (all.iter().copied().find(|k| k.name == name)).unwrap_or(all[all.len() - 1])
    })
}
