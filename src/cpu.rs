//! What this CPU runs, decided once for the whole process: the instruction-set level the
//! hardware has, capped by `FASTGEN_KERNELS` (`scalar`, `avx2`, `avx512bw`, `avx512vnni`) so
//! that a run can force a lower path, to debug it or to compare like with like (an AVX-512
//! machine timing the AVX2 kernels). The matrix kernels (`quant`), attention and profiling all
//! ask here, so they can never disagree about the path in use.

use std::sync::OnceLock;

/// Instruction-set levels, each including the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 F, BW and VL.
    Avx512,
    /// AVX-512 with VNNI.
    Avx512Vnni,
}

impl Level {
    /// The name `FASTGEN_KERNELS` takes for this level (the matrix kernel set's name).
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512bw",
            Level::Avx512Vnni => "avx512vnni",
        }
    }

    /// The level `FASTGEN_KERNELS` names, if any.
    pub fn from_name(name: &str) -> Option<Level> {
        [Level::Scalar, Level::Avx2, Level::Avx512, Level::Avx512Vnni]
            .into_iter()
            .find(|l| l.name() == name)
    }
}

/// The highest level the hardware supports.
pub fn hardware() -> Level {
    static HW: OnceLock<Level> = OnceLock::new();
    *HW.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma") && has!("f16c")) {
        return Level::Scalar;
    }
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl")) {
        return Level::Avx2;
    }
    if has!("avx512vnni") {
        Level::Avx512Vnni
    } else {
        Level::Avx512
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Scalar
}

/// The level in use: the hardware's, or lower if `FASTGEN_KERNELS` asks for it (a name above
/// the hardware, or unknown, is ignored with a warning: it cannot run here).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let hw = hardware();
        let Ok(forced) = std::env::var("FASTGEN_KERNELS") else {
            return hw;
        };
        match Level::from_name(&forced) {
            Some(l) if l <= hw => l,
            _ => {
                eprintln!(
                    "warning: FASTGEN_KERNELS={forced:?} is not one of scalar, avx2, avx512bw, \
                     avx512vnni up to this CPU's {}; using {}",
                    hw.name(),
                    hw.name()
                );
                hw
            }
        }
    })
}

/// Whether the AVX2 paths run.
pub fn avx2() -> bool {
    level() >= Level::Avx2
}

/// Whether the AVX-512 paths run.
pub fn avx512() -> bool {
    level() >= Level::Avx512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_levels_are_ordered() {
        for l in [Level::Scalar, Level::Avx2, Level::Avx512, Level::Avx512Vnni] {
            assert_eq!(Level::from_name(l.name()), Some(l));
        }
        assert_eq!(Level::from_name("avx1024"), None);
        assert!(Level::Scalar < Level::Avx2 && Level::Avx512 < Level::Avx512Vnni);
        assert!(level() <= hardware());
    }
}
