//! FastGen's decisions on hand-written inputs, with answers worked out by hand in the
//! comments: each part's keep set and their unions, the profiler's choice on constructed
//! attention maps (min versus mean over a group), and decode eviction step by step
//! (slot -> position after every step, for each policy).

use fastgen::compress::classes::{CONTROL, PUNCT, SINK};
use fastgen::compress::{
    choose_policy, compress_head, default_candidates, evict_step, keep_set, replay_recovery,
    Budget, GqaAgg, HeadProfile, HeadState, Params, Policy, Tail,
};
use fastgen::kv_cache::{HeadCache, KvDtype};

fn p(s: &str) -> Policy {
    s.parse().unwrap()
}

/// Positions whose flag is set.
fn kept(positions: &[u32], keep: &[bool]) -> Vec<u32> {
    positions
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(&q, _)| q)
        .collect()
}

// Ten positions. Classes: 0 sink, 1 control, 3 and 6 punctuation. n = 10, r_l = r_f = 0.3:
// window ceil(3.0) = 3 (positions 7, 8, 9), frequent budget 3.
const CLASSES: [u8; 10] = [SINK, CONTROL, 0, PUNCT, 0, 0, PUNCT, 0, 0, 0];
const SCORES: [f32; 10] = [9.0, 1.0, 2.0, 8.0, 7.0, 3.0, 6.0, 0.5, 5.0, 4.0];

fn keep_all_positions(policy: &str, params: &Params) -> Vec<u32> {
    let pos: Vec<u32> = (0..10).collect();
    kept(
        &pos,
        &keep_set(p(policy), &pos, &CLASSES, &SCORES, 10, params),
    )
}

#[test]
fn each_part_and_their_unions_by_hand() {
    let d = Params::default();
    let cases: &[(&str, &[u32])] = &[
        ("sink", &[0]),
        ("special", &[0, 1]),
        ("punct", &[3, 6]),
        ("local", &[7, 8, 9]),
        // Alone, frequent takes the top 3 scores of all: 9 (pos 0), 8 (pos 3), 7 (pos 4).
        ("frequent", &[0, 3, 4]),
        ("full", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ("special+punct", &[0, 1, 3, 6]),
        // Frequent among the tokens special and punct do not keep (2, 4, 5, 7, 8, 9):
        // 7 (pos 4), 5 (pos 8), 4 (pos 9).
        ("special+punct+frequent", &[0, 1, 3, 4, 6, 8, 9]),
        ("special+punct+frequent+local", &[0, 1, 3, 4, 6, 7, 8, 9]),
        // Special excludes 0 and 1 from frequent: 8 (pos 3), 7 (pos 4), 6 (pos 6).
        ("special+frequent", &[0, 1, 3, 4, 6]),
        // H2O: frequent over everything plus the window.
        ("frequent+local", &[0, 3, 4, 7, 8, 9]),
        // StreamingLLM.
        ("sink+local", &[0, 7, 8, 9]),
    ];
    for (policy, want) in cases {
        assert_eq!(keep_all_positions(policy, &d), *want, "{policy}");
    }
    // A grace window of 1 adds the newest position to a policy with frequent only.
    let g = Params { grace: 1, ..d };
    assert_eq!(keep_all_positions("frequent", &g), [0, 3, 4, 9]);
    assert_eq!(keep_all_positions("special+punct", &g), [0, 1, 3, 6]);
    // Budgets as counts.
    let t = Params {
        local: Budget::Tokens(1),
        frequent: Budget::Tokens(1),
        ..Params::default()
    };
    assert_eq!(keep_all_positions("frequent+local", &t), [0, 9]);
}

#[test]
fn keep_set_reads_positions_not_slots() {
    // A head that already lost positions 1, 2, 5: slots hold positions 0, 3, 4, 6, 7, 8, 9.
    let pos = [0u32, 3, 4, 6, 7, 8, 9];
    let scores = [9.0, 8.0, 7.0, 6.0, 0.5, 5.0, 4.0];
    // n = 10: window 7, 8, 9; special keeps 0 only (1 is gone); punct 3 and 6.
    let k = keep_set(
        p("special+local"),
        &pos,
        &CLASSES,
        &scores,
        10,
        &Params::default(),
    );
    assert_eq!(k, [true, false, false, false, true, true, true]);
    let k = keep_set(
        p("punct+frequent"),
        &pos,
        &CLASSES,
        &scores,
        10,
        &Params::default(),
    );
    // Frequent among 0, 4, 7, 8, 9 (not punct): 9 (0), 7 (4), 5 (8).
    assert_eq!(kept(&pos, &k), [0, 3, 4, 6, 8]);
}

/// A causal map from its lower-triangular rows.
fn map(rows: &[&[f32]]) -> Vec<Vec<f32>> {
    let s = rows.len();
    rows.iter()
        .map(|r| {
            let mut v = r.to_vec();
            v.resize(s, 0.0);
            v
        })
        .collect()
}

fn choose(maps: &[Vec<Vec<f32>>], classes: &[u8], t: f64, agg: GqaAgg) -> (String, f64) {
    let s = maps[0].len();
    let prof = HeadProfile::from_maps(maps, 0..s, &Params::default());
    let c = choose_policy(&prof, classes, &default_candidates(), t, agg);
    (c.policy.to_string(), c.recovery)
}

const SINK_ONLY: [u8; 4] = [SINK, 0, 0, 0];

#[test]
fn all_mass_on_the_first_token_gives_special() {
    let m = map(&[&[1.0], &[1.0, 0.0], &[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0, 0.0]]);
    let (policy, rec) = choose(&[m], &SINK_ONLY, 0.95, GqaAgg::Min);
    assert_eq!((policy.as_str(), rec), ("special", 1.0));
}

#[test]
fn a_diagonal_band_gives_a_local_hybrid() {
    // S = 4: window ceil(1.2) = 2 (keys i-1, i), frequent budget 2.
    let m = map(&[
        &[1.0],
        &[0.25, 0.75],
        &[0.0, 0.25, 0.75],
        &[0.0, 0.0, 0.25, 0.75],
    ]);
    // special (key 0): rows 1, 0.25, 0, 0 -> 1.25 / 4 = 0.3125.
    // Column sums 1.25, 1, 1, 0.75; frequent among 1..3 takes keys 1 and 2:
    // special+punct+frequent: rows 1, 1, 1, 0.25 -> 3.25 / 4 = 0.8125.
    // + local: every row keeps (i-1, i] -> 1.0.
    let (policy, rec) = choose(std::slice::from_ref(&m), &SINK_ONLY, 0.95, GqaAgg::Min);
    assert_eq!(policy, "special+punct+frequent+local");
    assert!((rec - 1.0).abs() < 1e-9, "{rec}");
    // At T = 0.8 the frequent hybrid suffices.
    let (policy, rec) = choose(&[m], &SINK_ONLY, 0.8, GqaAgg::Min);
    assert_eq!(policy, "special+punct+frequent");
    assert_eq!(rec, 0.8125);
}

#[test]
fn uniform_attention_gives_full() {
    // S = 10, A[i, j] = 1 / (i + 1): window 3, frequent 3. Column sums decrease with j, so
    // frequent takes keys 1, 2, 3. Row i keeps {0, 1, 2, 3} and (i-3, i]: rows 0..=6 keep
    // all their keys, row 7 keeps 7 of 8, row 8 7 of 9, row 9 7 of 10:
    // (7 + 7/8 + 7/9 + 7/10) / 10 = 0.9353 < 0.95.
    let m: Vec<Vec<f32>> = (0..10)
        .map(|i| {
            (0..10)
                .map(|j| if j <= i { 1.0 / (i + 1) as f32 } else { 0.0 })
                .collect()
        })
        .collect();
    let classes = [SINK, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let prof = HeadProfile::from_maps(std::slice::from_ref(&m), 0..10, &Params::default());
    let c = choose_policy(&prof, &classes, &default_candidates(), 0.95, GqaAgg::Min);
    assert_eq!(c.policy, Policy::FULL);
    let want = (7.0 + 7.0 / 8.0 + 7.0 / 9.0 + 7.0 / 10.0) / 10.0;
    assert!((c.tried[3] - want).abs() < 1e-6, "{:?}", c.tried);
    // special: sum of 1/(i+1) over 10 rows / 10.
    let h10: f64 = (1..=10).map(|k| 1.0 / k as f64).sum();
    assert!((c.tried[0] - h10 / 10.0).abs() < 1e-6);
    // Profiling only the last 3 rows: row 7, 8, 9 -> (7/8 + 7/9 + 7/10) / 3 = 0.784.
    let prof = HeadProfile::from_maps(std::slice::from_ref(&m), 7..10, &Params::default());
    let r = prof.recovery(p("special+punct+frequent+local"), &classes);
    assert!((r[0] - (7.0 / 8.0 + 7.0 / 9.0 + 7.0 / 10.0) / 3.0).abs() < 1e-6);
}

#[test]
fn min_and_mean_over_a_group_choose_differently() {
    // Query head A puts everything on key 0; query head B on the diagonal. S = 4.
    let a = map(&[&[1.0], &[1.0, 0.0], &[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0, 0.0]]);
    let b = map(&[&[1.0], &[0.0, 1.0], &[0.0, 0.0, 1.0], &[0.0, 0.0, 0.0, 1.0]]);
    // special: A 1.0, B 0.25 (row 0). Group column sums 5, 1, 1, 1: frequent (budget 2,
    // among keys 1..3, ties to the earlier) takes 1 and 2 -> B 0.75 with
    // special+punct+frequent; + local -> B 1.0.
    // min: 0.25, 0.25, 0.75, 1.0; mean: 0.625, 0.625, 0.875, 1.0.
    let maps = [a, b];
    let (policy, rec) = choose(&maps, &SINK_ONLY, 0.85, GqaAgg::Min);
    assert_eq!(policy, "special+punct+frequent+local");
    assert!((rec - 1.0).abs() < 1e-9);
    let (policy, rec) = choose(&maps, &SINK_ONLY, 0.85, GqaAgg::Mean);
    assert_eq!(policy, "special+punct+frequent");
    assert!((rec - 0.875).abs() < 1e-6, "{rec}");
    // Seeds are the group's column sums.
    let prof = HeadProfile::from_maps(&maps, 0..4, &Params::default());
    assert_eq!(prof.group_colsum(), [5.0, 1.0, 1.0, 1.0]);
}

// Decode sequences. Positions 0..4 are the prompt, 5..9 are decoded (n = 6..10).
// Classes: 0 sink, 2 punct, 5 control, 7 punct. r_l = r_f = 0.3: window and frequent budget
// 2 at n = 5 and 6, 3 at n = 7..10. Prompt column sums (seeds) 5, 1, 2, 0.5, 0.2.
// Each step: the new token attends 0.1 to itself; at the step of position 7, position 6
// gets 1.0; at position 8's, position 6 gets 3.0; nothing else.
const DEC_CLASSES: [u8; 10] = [SINK, 0, PUNCT, 0, 0, CONTROL, 0, PUNCT, 0, 0];
const SEEDS: [f32; 5] = [5.0, 1.0, 2.0, 0.5, 0.2];

fn step_probs(positions: &[u32], new: u32) -> Vec<f32> {
    positions
        .iter()
        .map(|&q| match (new, q) {
            _ if q == new => 0.1,
            (7, 6) => 1.0,
            (8, 6) => 3.0,
            _ => 0.0,
        })
        .collect()
}

/// Positions held after prefill and after each decode step.
fn run_sequence(policy: &str, params: &Params) -> Vec<Vec<u32>> {
    let policy = p(policy);
    let mut head = HeadCache::new(2, KvDtype::F32);
    for q in 0..5u32 {
        head.push(q, &[q as f32, 0.0], &[0.0, q as f32]);
    }
    let scores = compress_head(&mut head, policy, &DEC_CLASSES, &SEEDS, 5, params);
    let mut st = HeadState::new(policy, scores);
    let mut seen = vec![head.positions().to_vec()];
    for q in 5..10u32 {
        head.push(q, &[q as f32, 0.0], &[0.0, q as f32]);
        let probs = step_probs(head.positions(), q);
        evict_step(
            &mut head,
            &mut st,
            Some(&probs),
            &DEC_CLASSES,
            q as usize + 1,
            params,
        );
        // Keys and values moved with their positions.
        let mut s = Vec::new();
        for (slot, &q) in head.positions().iter().enumerate() {
            assert_eq!(head.keys_f32(slot, slot + 1, &mut s)[0], q as f32);
            assert_eq!(head.values_f32(slot, slot + 1, &mut s)[1], q as f32);
        }
        if policy.needs_scores() {
            assert_eq!(st.scores().len(), head.len());
        } else {
            assert!(st.scores().is_empty());
        }
        seen.push(head.positions().to_vec());
    }
    seen
}

#[track_caller]
fn assert_sequence(policy: &str, params: &Params, want: &[&[u32]]) {
    let got = run_sequence(policy, params);
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{policy}: after step {step} (0 = prefill)");
    }
}

#[test]
fn decode_special_and_punct_keep_only_their_class() {
    let d = Params::default();
    assert_sequence(
        "special",
        &d,
        &[&[0], &[0, 5], &[0, 5], &[0, 5], &[0, 5], &[0, 5]],
    );
    assert_sequence("punct", &d, &[&[2], &[2], &[2], &[2, 7], &[2, 7], &[2, 7]]);
}

#[test]
fn decode_local_and_window_slide() {
    let d = Params::default();
    // Windows: 2 (n = 5, 6), 3 (n = 7..10).
    assert_sequence(
        "local",
        &d,
        &[
            &[3, 4],
            &[4, 5],
            &[4, 5, 6],
            &[5, 6, 7],
            &[6, 7, 8],
            &[7, 8, 9],
        ],
    );
    assert_sequence(
        "sink+local",
        &d,
        &[
            &[0, 3, 4],
            &[0, 4, 5],
            &[0, 4, 5, 6],
            &[0, 5, 6, 7],
            &[0, 6, 7, 8],
            &[0, 7, 8, 9],
        ],
    );
    let w = Params {
        local: Budget::Tokens(2),
        ..d
    };
    assert_sequence(
        "sink+local",
        &w,
        &[
            &[0, 3, 4],
            &[0, 4, 5],
            &[0, 5, 6],
            &[0, 6, 7],
            &[0, 7, 8],
            &[0, 8, 9],
        ],
    );
}

#[test]
fn decode_full_keeps_everything() {
    let all: Vec<Vec<u32>> = (5..=10).map(|n| (0..n).collect()).collect();
    let want: Vec<&[u32]> = all.iter().map(|v| &v[..]).collect();
    assert_sequence("full", &Params::default(), &want);
}

#[test]
fn decode_frequent_follows_cumulative_scores() {
    let d = Params::default();
    // Prefill: top 2 seeds 5 (0), 2 (2). n = 6: 5 enters with 0.1, budget 2 -> evicted.
    // n = 7: budget 3, 6 enters with 0.1 -> kept. n = 8: 6 has 1.1, 7 has 0.1 -> 7 out.
    // n = 9, 10: the new token (0.1) is the lowest -> out.
    assert_sequence(
        "frequent",
        &d,
        &[
            &[0, 2],
            &[0, 2],
            &[0, 2, 6],
            &[0, 2, 6],
            &[0, 2, 6],
            &[0, 2, 6],
        ],
    );
    // Grace 1: the newest position always stays. Prefill: {0, 2} + 4. n = 6: top 2 of
    // 0 (5), 2 (2), 4 (.2), 5 (.1) is {0, 2}, + 5. n = 7: frequent
    // top 3 of 0 (5), 2 (2), 5 (0.1), 6 (0.1): the tie goes to the earlier, 5; 6 by
    // grace. n = 8: 6 has 1.1: top 0, 2, 6; 7 by grace. n = 9: 6 has 4.1: 0, 6, 2; 8 by
    // grace. n = 10: 9 by grace.
    let g = Params { grace: 1, ..d };
    assert_sequence(
        "frequent",
        &g,
        &[
            &[0, 2, 4],
            &[0, 2, 5],
            &[0, 2, 5, 6],
            &[0, 2, 6, 7],
            &[0, 2, 6, 8],
            &[0, 2, 6, 9],
        ],
    );
}

#[test]
fn decode_h2o_is_frequent_plus_window() {
    // Prefill: frequent {0, 2}, window {3, 4}.
    // n = 6: scores 0:5 2:2 3:.5 4:.2 5:.1 -> frequent {0, 2}, window {4, 5}.
    // n = 7: frequent (3) {0, 2, 4 (.2)}, window {4, 5, 6}.
    // n = 8: 6 has 1.1 -> frequent {0, 2, 6}, window {5, 6, 7}.
    // n = 9: 6 has 4.1 -> frequent {0, 6, 2}, window {6, 7, 8}.
    // n = 10: frequent {0, 6, 2}, window {7, 8, 9}.
    assert_sequence(
        "frequent+local",
        &Params::default(),
        &[
            &[0, 2, 3, 4],
            &[0, 2, 4, 5],
            &[0, 2, 4, 5, 6],
            &[0, 2, 5, 6, 7],
            &[0, 2, 6, 7, 8],
            &[0, 2, 6, 7, 8, 9],
        ],
    );
}

#[test]
fn decode_fastgen_hybrids() {
    let d = Params::default();
    // special+punct+frequent. Cheap parts keep 0, 2 (and 5, 7 when they come); frequent
    // chooses among the rest. Prefill: among 1 (1), 3 (.5), 4 (.2) budget 2 -> 1, 3.
    // n = 6: 5 is control. n = 7: budget 3 among 1, 3, 6 (.1) -> all. n = 8: 7 is punct;
    // among 1 (1), 3 (.5), 6 (1.1) -> all. n = 9: among 1, 3, 6 (4.1), 8 (.1) -> 8 out.
    // n = 10: 9 (.1) out.
    assert_sequence(
        "special+punct+frequent",
        &d,
        &[
            &[0, 1, 2, 3],
            &[0, 1, 2, 3, 5],
            &[0, 1, 2, 3, 5, 6],
            &[0, 1, 2, 3, 5, 6, 7],
            &[0, 1, 2, 3, 5, 6, 7],
            &[0, 1, 2, 3, 5, 6, 7],
        ],
    );
    // + local. Prefill adds window {3, 4}. n = 6: frequent {1, 3}, window {4, 5}.
    // n = 7: frequent among 1, 3, 4 (.2), 6 (.1) -> 1, 3, 4; window {4, 5, 6}.
    // n = 8: among 1, 3, 4, 6 (1.1) -> 6, 1, 3: 4 leaves; window {5, 6, 7}.
    // n = 9: among 1, 3, 6, 8 -> 6, 1, 3; window {6, 7, 8}. n = 10: window {7, 8, 9}.
    assert_sequence(
        "special+punct+frequent+local",
        &d,
        &[
            &[0, 1, 2, 3, 4],
            &[0, 1, 2, 3, 4, 5],
            &[0, 1, 2, 3, 4, 5, 6],
            &[0, 1, 2, 3, 5, 6, 7],
            &[0, 1, 2, 3, 5, 6, 7, 8],
            &[0, 1, 2, 3, 5, 6, 7, 8, 9],
        ],
    );
}

#[test]
fn decode_capacity_stays_near_kept() {
    // A local head over 200 steps: allocated slots stay within kept + 2 * DECODE_SPARE.
    let params = Params::default();
    let policy = p("local");
    let classes = vec![0u8; 300];
    let mut head = HeadCache::new(4, KvDtype::F16);
    for q in 0..50u32 {
        head.push(q, &[0.0; 4], &[0.0; 4]);
    }
    let scores = compress_head(&mut head, policy, &classes, &[], 50, &params);
    assert_eq!(head.capacity(), head.len());
    assert_eq!(head.allocated_bytes(), head.len() * 2 * 4 * 2);
    let mut st = HeadState::new(policy, scores);
    for q in 50..250u32 {
        if head.capacity() == head.len() {
            head.reserve_exact(fastgen::compress::DECODE_SPARE);
        }
        head.push(q, &[0.0; 4], &[0.0; 4]);
        evict_step(&mut head, &mut st, None, &classes, q as usize + 1, &params);
        assert_eq!(head.len(), params.local.of(q as usize + 1));
        let spare = head.capacity() - head.len();
        assert!(
            spare <= 2 * fastgen::compress::DECODE_SPARE,
            "step {q}: {spare}"
        );
        assert_eq!(head.allocated_bytes(), head.capacity() * 2 * 4 * 2);
    }
}

// Beyond the paper (issue 8): replay, a grace window for every policy, causal heavy-hitter
// scores. One query head, S = 4, key 0 the sink; r_l = r_f = 0.3: window and frequent
// budget 1 at n = 2 and 3, 2 at n = 4.
//   row 0: 1
//   row 1: 0.5 0.5
//   row 2: 0.2 0.2 0.6
//   row 3: 0.1 0.1 0.2 0.6
fn replay_map() -> Vec<Vec<f32>> {
    map(&[&[1.0], &[0.5, 0.5], &[0.2, 0.2, 0.6], &[0.1, 0.1, 0.2, 0.6]])
}

/// Recovery of `policy` replaying the last 2 rows.
fn replayed(policy: &str, params: &Params) -> f64 {
    let m = replay_map();
    let tail: Vec<f32> = m[2..].iter().flatten().copied().collect();
    let tail = Tail {
        rows: &[tail],
        from: 2,
        len: 4,
    };
    // Column sums of rows 0 and 1: the scores the cache starts from at n = 2.
    let seeds = [1.5, 0.5];
    replay_recovery(p(policy), tail, &seeds, &SINK_ONLY, params)[0]
}

#[test]
fn replay_measures_recovery_as_decoding_evicts() {
    let d = Params::default();
    // special+punct+frequent. At n = 2 it keeps 0 (sink) and 1 (the one frequent slot).
    // Row 2 sees {0, 1, 2}: 1.0; scores 1.7, 0.7, 0.6; at n = 3 frequent keeps 1 (0.7 >
    // 0.6), evicting 2. Row 3 sees {0, 1, 3}: 0.8. Recovery (1.0 + 0.8) / 2 = 0.9.
    assert!((replayed("special+punct+frequent", &d) - 0.9).abs() < 1e-6);
    // special: every new token sees itself, then goes. Rows: 0.2 + 0.6, 0.1 + 0.6 -> 0.75.
    assert!((replayed("special", &d) - 0.75).abs() < 1e-6);
    assert_eq!(replayed("full", &d), 1.0);
    // The paper's static recovery of special+punct+frequent over all 4 rows: column sums
    // 1.8, 0.8, 0.8, 0.6, frequent at n = 4 takes 1 and 2; rows keep 1, 1, 1, 0.4 -> 0.85.
    let prof = HeadProfile::from_maps(&[replay_map()], 0..4, &d);
    let r = prof.recovery(p("special+punct+frequent"), &SINK_ONLY)[0];
    assert!((r - 0.85).abs() < 1e-6, "{r}");
    // So at T = 0.88 the paper climbs to +local, replay stops at special+punct+frequent
    // (special and special+punct replay to 0.75).
    let (policy, _) = choose(&[replay_map()], &SINK_ONLY, 0.88, GqaAgg::Min);
    assert_eq!(policy, "special+punct+frequent+local");
    let mut prof = HeadProfile::from_maps_replay(&[replay_map()], 0..4, &d, 2);
    let cands = default_candidates();
    prof.replay(&SINK_ONLY, &cands, 0.88, GqaAgg::Min, false);
    let c = choose_policy(&prof, &SINK_ONLY, &cands, 0.88, GqaAgg::Min);
    assert_eq!(c.policy.to_string(), "special+punct+frequent");
    assert!((c.recovery - 0.9).abs() < 1e-6, "{:?}", c.tried);
    assert!((c.tried[0] - 0.75).abs() < 1e-6, "{:?}", c.tried);
}

#[test]
fn a_grace_window_keeps_new_tokens_in_every_policy() {
    let g = Params {
        grace_all: 1,
        ..Params::default()
    };
    // special+punct+frequent with grace 1: position 2 stays at n = 3 as the newest, so
    // row 3 sees everything: (1.0 + 1.0) / 2.
    assert!((replayed("special+punct+frequent", &g) - 1.0).abs() < 1e-6);
    // special with grace 1 keeps the sink and the newest: at n = 2 {0, 1}, so row 2 sees
    // all (1.0); at n = 3 {0, 2}, so row 3 sees 0.1 + 0.2 + 0.6. (1.0 + 0.9) / 2 = 0.95
    // against 0.75 without grace.
    assert!((replayed("special", &g) - 0.95).abs() < 1e-6);
    // keep_set: special+punct with grace 2 at n = 10 keeps 0, 1, 3, 6 and 8, 9.
    let pos: Vec<u32> = (0..10).collect();
    let g2 = Params {
        grace_all: 2,
        ..Params::default()
    };
    let k = keep_set(p("special+punct"), &pos, &CLASSES, &SCORES, 10, &g2);
    assert_eq!(kept(&pos, &k), [0, 1, 3, 6, 8, 9]);
    // It widens no window that is already wider: local keeps 7, 8, 9 either way.
    let k = keep_set(p("local"), &pos, &CLASSES, &SCORES, 10, &g2);
    assert_eq!(kept(&pos, &k), [7, 8, 9]);
    assert_eq!(g2.window(Policy::FULL, 10), 10);
    assert_eq!(g2.windows(10), [2, 3]);
}

#[test]
fn causal_scores_rank_by_mean_attention_received() {
    let c = Params {
        causal: true,
        ..Params::default()
    };
    // frequent alone at n = 10, budget 3, over SCORES. Sums pick 0 (9), 3 (8), 4 (7).
    // Means divide by the rows that saw each position, 10 - pos: 0 -> 0.9, 1 -> 0.11,
    // 2 -> 0.25, 3 -> 1.14, 4 -> 1.17, 5 -> 0.6, 6 -> 1.5, 7 -> 0.17, 8 -> 2.5, 9 -> 4.
    // Top 3: 9, 8, 6.
    let pos: Vec<u32> = (0..10).collect();
    let k = keep_set(
        p("frequent"),
        &pos,
        &CLASSES,
        &SCORES,
        10,
        &Params::default(),
    );
    assert_eq!(kept(&pos, &k), [0, 3, 4]);
    let k = keep_set(p("frequent"), &pos, &CLASSES, &SCORES, 10, &c);
    assert_eq!(kept(&pos, &k), [6, 8, 9]);
    // In replay: at n = 3 position 2 (0.6 over 1 row) beats position 1 (0.7 over 2 rows),
    // so row 3 sees {0, 2, 3}: 0.9, and recovery is (1.0 + 0.9) / 2.
    assert!((replayed("special+punct+frequent", &c) - 0.95).abs() < 1e-6);
}

#[test]
fn replay_agrees_with_compress_and_evict_steps() {
    // The same head run through the cache: compress at n = 2, then two decode steps with
    // the rows' probabilities; the attention each row keeps is what replay measured.
    let m = replay_map();
    for (params, want) in [
        (Params::default(), 0.9),
        (
            Params {
                causal: true,
                ..Params::default()
            },
            0.95,
        ),
    ] {
        let policy = p("special+punct+frequent");
        let mut head = HeadCache::new(1, KvDtype::F32);
        for pos in 0..2 {
            head.push(pos, &[0.0], &[0.0]);
        }
        let scores = compress_head(&mut head, policy, &SINK_ONLY, &[1.5, 0.5], 2, &params);
        let mut st = HeadState::new(policy, scores);
        let mut mass = 0.0;
        for i in 2..4u32 {
            head.push(i, &[0.0], &[0.0]);
            let probs: Vec<f32> = head
                .positions()
                .iter()
                .map(|&q| m[i as usize][q as usize])
                .collect();
            mass += probs.iter().sum::<f32>() as f64;
            evict_step(
                &mut head,
                &mut st,
                Some(&probs),
                &SINK_ONLY,
                i as usize + 1,
                &params,
            );
        }
        assert!((mass / 2.0 - want).abs() < 1e-6, "{mass}");
        assert!((replayed("special+punct+frequent", &params) - want).abs() < 1e-6);
    }
}
