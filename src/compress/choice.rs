//! FastGen's decision (FASTGEN.md 3), written once: a KV head takes the first candidate,
//! cheapest first, whose aggregated recovery reaches T, or the last candidate (`full`) when
//! none does. Profiling, budget mode and the tests all decide through these two functions.

/// Aggregated recoveries of the candidates in order, computed by `recovery(index)` only as
/// far as needed: up to the first reaching `t`, or all of them with `all` (budget mode must
/// know every candidate to try other thresholds).
pub fn recoveries_until(
    candidates: usize,
    t: f64,
    all: bool,
    mut recovery: impl FnMut(usize) -> f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(candidates);
    for index in 0..candidates {
        let r = recovery(index);
        out.push(r);
        if r >= t && !all {
            break;
        }
    }
    out
}

/// The index chosen at threshold `t` from candidates' aggregated recoveries (as many as
/// [`recoveries_until`] computed): the first reaching `t`, else the last.
pub fn choice(recoveries: &[f64], t: f64) -> usize {
    let last = recoveries.len().saturating_sub(1);
    recoveries.iter().position(|&r| r >= t).unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_candidate_reaching_t_unless_all_are_wanted() {
        let r = [0.5, 0.93, 0.97, 1.0];
        let mut asked = Vec::new();
        let got = recoveries_until(4, 0.95, false, |i| {
            asked.push(i);
            r[i]
        });
        assert_eq!(
            (got.as_slice(), asked.as_slice()),
            (&r[..3], &[0, 1, 2][..])
        );
        assert_eq!(choice(&got, 0.95), 2);
        assert_eq!(recoveries_until(4, 0.95, true, |i| r[i]), r);
        // Reached exactly: taken. Nothing reaches T: the last candidate.
        assert_eq!(choice(&r, 0.93), 1);
        assert_eq!(choice(&[0.1, 0.2], 0.9), 1);
        assert_eq!(choice(&r, 0.0), 0);
    }
}
