//! Properties of policies and profiling on random inputs: hybrids are unions of their parts,
//! adding parts never drops a token, the default candidate list is nested, and the one-pass
//! recovery equals a row-by-row brute force.

use fastgen::compress::classes::{CONTROL, PUNCT, SINK};
use fastgen::compress::policy::part_keep;
use fastgen::compress::{
    compress_head, default_candidates, evict_step, keep_set, replay_recovery, Budget, HeadProfile,
    HeadState, Params, Part, Policy, Tail,
};
use fastgen::kv_cache::{HeadCache, KvDtype};
use proptest::prelude::*;

/// A head: n, the positions it holds (increasing, < n), classes per position, scores per slot.
#[derive(Debug, Clone)]
struct Head {
    n: usize,
    positions: Vec<u32>,
    classes: Vec<u8>,
    scores: Vec<f32>,
}

fn head() -> impl Strategy<Value = Head> {
    (1usize..40).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0u8), Just(PUNCT), Just(CONTROL), Just(SINK)],
                n,
            ),
            // Few distinct values, so ties happen.
            proptest::collection::vec(0u8..6, n),
        )
            .prop_map(|(n, present, classes, scores)| {
                let mut positions: Vec<u32> =
                    (0..n as u32).filter(|&p| present[p as usize]).collect();
                if positions.is_empty() {
                    positions.push(n as u32 - 1);
                }
                let scores = positions
                    .iter()
                    .map(|&p| scores[p as usize] as f32)
                    .collect();
                Head {
                    n,
                    positions,
                    classes,
                    scores,
                }
            })
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    // Any non-empty set of the parts other than full.
    (1u8..32).prop_map(|bits| {
        let parts: Vec<Part> = Part::ALL[..5]
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, &p)| p)
            .collect();
        Policy::of(&parts)
    })
}

fn params() -> impl Strategy<Value = Params> {
    (
        0.0f64..1.0,
        0.0f64..1.0,
        0usize..3,
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(l, f, g, ga, causal)| Params {
            local: Budget::Ratio(l),
            frequent: Budget::Ratio(f),
            grace: g,
            grace_all: ga,
            causal,
        })
}

fn keep(p: Policy, h: &Head, params: &Params) -> Vec<bool> {
    keep_set(p, &h.positions, &h.classes, &h.scores, h.n, params)
}

fn or(a: &[bool], b: &[bool]) -> Vec<bool> {
    a.iter().zip(b).map(|(x, y)| *x || *y).collect()
}

fn subset(a: &[bool], b: &[bool]) -> bool {
    a.iter().zip(b).all(|(x, y)| !*x || *y)
}

/// Random causal softmax rows `[s, s]` for each of `group` query heads.
fn causal_maps(s: usize, group: usize, seed: u64) -> Vec<Vec<Vec<f32>>> {
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1000) as f32 / 100.0
    };
    (0..group)
        .map(|_| {
            (0..s)
                .map(|i| {
                    let e: Vec<f32> = (0..=i).map(|_| rnd().exp()).collect();
                    let z: f32 = e.iter().sum();
                    let mut row: Vec<f32> = e.iter().map(|v| v / z).collect();
                    row.resize(s, 0.0);
                    row
                })
                .collect()
        })
        .collect()
}

/// Random token classes for `s` positions (plain, punctuation or control), position 0 a sink.
fn random_classes(s: usize, seed: u64) -> Vec<u8> {
    (0..s)
        .map(|j| {
            [0, 0, PUNCT, CONTROL][((seed >> (2 * (j % 32))) & 3) as usize]
                | if j == 0 { SINK } else { 0 }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_hybrid_is_the_union_of_its_parts_in_it(h in head(), p in policy(), prm in params()) {
        let mut union = vec![false; h.positions.len()];
        for part in p.parts() {
            union = or(&union, &part_keep(part, p, &h.positions, &h.classes, &h.scores, h.n, &prm));
        }
        let from = h.n - prm.window(p, h.n);
        let grace: Vec<bool> = h.positions.iter().map(|&q| q as usize >= from).collect();
        prop_assert_eq!(keep(p, &h, &prm), or(&union, &grace));
    }

    #[test]
    fn without_frequent_hybrids_are_plain_unions(h in head(), a in policy(), b in policy()) {
        let prm = Params::default();
        let (a, b) = (a.without(Part::Frequent), b.without(Part::Frequent));
        prop_assume!(!a.is_empty() && !b.is_empty());
        prop_assert_eq!(keep(a.union(b), &h, &prm), or(&keep(a, &h, &prm), &keep(b, &h, &prm)));
    }

    #[test]
    fn adding_parts_never_drops_a_token(h in head(), a in policy(), b in policy(), prm in params()) {
        let both = keep(a.union(b), &h, &prm);
        prop_assert!(subset(&keep(a, &h, &prm), &both));
        prop_assert!(subset(&keep(b, &h, &prm), &both));
        prop_assert!(subset(&both, &keep(Policy::FULL, &h, &prm)));
    }

    #[test]
    fn the_default_list_is_nested(h in head(), prm in params()) {
        let c = default_candidates();
        for w in c.windows(2) {
            prop_assert!(subset(&keep(w[0], &h, &prm), &keep(w[1], &h, &prm)), "{} vs {}", w[0], w[1]);
        }
        prop_assert!(keep(c[c.len() - 1], &h, &prm).iter().all(|&k| k));
    }

    #[test]
    fn frequent_keeps_its_budget(h in head(), p in policy(), prm in params()) {
        prop_assume!(p.contains(Part::Frequent));
        let k = part_keep(Part::Frequent, p, &h.positions, &h.classes, &h.scores, h.n, &prm);
        let cheaper = p.without(Part::Frequent).without(Part::Local);
        let candidates = h.positions.iter().filter(|&&q| !cheaper.keeps_class(h.classes[q as usize])).count();
        prop_assert_eq!(k.iter().filter(|&&x| x).count(), prm.frequent.of(h.n).min(candidates));
        // Nothing kept by frequent ranks below something it left out (by the sum, or the
        // mean over the rows since the token with causal scores).
        let rank = |s: usize| if prm.causal {
            h.scores[s] / (h.n - h.positions[s] as usize).max(1) as f32
        } else {
            h.scores[s]
        };
        let low = (0..k.len()).filter(|&s| k[s]).map(rank).fold(f32::INFINITY, f32::min);
        for (s, (&kept, &q)) in k.iter().zip(&h.positions).enumerate() {
            if !kept && !cheaper.keeps_class(h.classes[q as usize]) {
                prop_assert!(rank(s) <= low);
            }
        }
    }

    #[test]
    fn one_pass_recovery_equals_brute_force(
        s in 1usize..24,
        group in 1usize..4,
        seed in any::<u64>(),
        classes_seed in any::<u64>(),
        first_row in 0usize..24,
        prm in params(),
    ) {
        let maps = causal_maps(s, group, seed);
        let classes = random_classes(s, classes_seed);
        let rows = first_row.min(s - 1)..s;
        let prof = HeadProfile::from_maps(&maps, rows.clone(), &prm);
        let seeds = prof.group_colsum();
        let positions: Vec<u32> = (0..s as u32).collect();
        let mut last = 0.0f64;
        for c in default_candidates() {
            let got = prof.recovery(c, &classes);
            // Brute force: row i keeps the column set (parts but the window) and its window.
            let cols = keep_set(c.without(Part::Local), &positions, &classes, &seeds, s,
                &Params { grace: 0, grace_all: 0, ..prm });
            let w = prm.window(c, s);
            for (h, m) in maps.iter().enumerate() {
                let mut total = 0.0f64;
                for i in rows.clone() {
                    for j in 0..=i {
                        if c.is_full() || cols[j] || j + w > i {
                            total += m[i][j] as f64;
                        }
                    }
                }
                let want = if c.is_full() { 1.0 } else { total / rows.len() as f64 };
                prop_assert!((got[h] - want).abs() < 1e-5, "{c}: {} vs {want}", got[h]);
            }
            // Nested candidates recover at least as much (the window is the same).
            let min = got.iter().copied().fold(f64::INFINITY, f64::min);
            prop_assert!(min >= last - 1e-6, "{c}: {min} < {last}");
            last = min;
        }
    }

    #[test]
    fn replay_is_the_cache_decoding_the_tail(
        s in 2usize..20,
        group in 1usize..4,
        seed in any::<u64>(),
        classes_seed in any::<u64>(),
        w in 1usize..20,
        p in policy(),
        prm in params(),
    ) {
        let maps = causal_maps(s, group, seed);
        let classes = random_classes(s, classes_seed);
        let from = s.saturating_sub(w);
        let tails: Vec<Vec<f32>> = maps.iter().map(|m| m[from..].iter().flatten().copied().collect()).collect();
        let seeds: Vec<f32> = (0..from).map(|j| maps.iter().map(|m| m[..from].iter().map(|r| r[j]).sum::<f32>()).sum()).collect();
        let got = replay_recovery(p, Tail { rows: &tails, from, len: s }, &seeds, &classes, &prm);
        // The cache: compress at n = from, then decode each tail row (Algorithm 2).
        let mut head = HeadCache::new(1, KvDtype::F32);
        for q in 0..from as u32 {
            head.push(q, &[0.0], &[0.0]);
        }
        let scores = if from > 0 {
            compress_head(&mut head, p, &classes, &seeds, from, &prm)
        } else {
            Vec::new()
        };
        let mut st = HeadState::new(p, scores);
        let mut mass = vec![0.0f64; group];
        for i in from..s {
            head.push(i as u32, &[0.0], &[0.0]);
            let probs: Vec<f32> = maps.iter().flat_map(|m| head.positions().iter().map(|&q| m[i][q as usize])).collect();
            for (g, m) in mass.iter_mut().enumerate() {
                *m += probs[g * head.len()..(g + 1) * head.len()].iter().map(|&a| a as f64).sum::<f64>();
            }
            evict_step(&mut head, &mut st, Some(&probs), &classes, i + 1, &prm);
        }
        for g in 0..group {
            let want = if p.is_full() { 1.0 } else { mass[g] / (s - from) as f64 };
            prop_assert!((got[g] - want).abs() < 1e-5, "{p}: {} vs {want}", got[g]);
        }
    }
}
