//! SnapKV and Ada-KV on hand-built attention maps, answers worked out in the comments:
//! pooling, the window kept whatever the budget, the exact top-k, and Ada-KV's per-layer
//! allocation moving budget from a focused head to a diffuse one.

use fastgen::compress::snapkv::{choose_layer, pool, window_scores};
use fastgen::compress::{HeadProfile, Params, Pool, SnapSettings};

/// A head of one query head whose rows `from..s` are `row(i)` (each a distribution over
/// keys `0..=i`), profiled over those rows only, as the engine profiles the window.
fn head(s: usize, from: usize, row: impl Fn(usize) -> Vec<f32>) -> HeadProfile {
    let map: Vec<Vec<f32>> = (0..s)
        .map(|i| {
            let mut r = if i >= from {
                row(i)
            } else {
                vec![1.0 / (i + 1) as f32; i + 1]
            };
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5, "row {i}");
            r.resize(s, 0.0);
            r
        })
        .collect();
    HeadProfile::from_maps(&[map], from..s, &Params::default())
}

/// Row `i` with `mass[j]` on prefix keys and the rest spread over the row's window keys
/// `from..=i`.
fn row_with(mass: &[(usize, f32)], from: usize, i: usize) -> Vec<f32> {
    let mut r = vec![0.0; i + 1];
    let rest = 1.0 - mass.iter().map(|m| m.1).sum::<f32>();
    for &(j, m) in mass {
        r[j] = m;
    }
    for v in &mut r[from..=i] {
        *v += rest / (i + 1 - from) as f32;
    }
    r
}

fn kept(keep: &[bool]) -> Vec<usize> {
    (0..keep.len()).filter(|&j| keep[j]).collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn pooling_by_hand() {
    let s = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    // Kernel 3: one position each side, cut at the ends.
    assert!(close(
        &pool(&s, 3, Pool::Max),
        &[0.0, 5.0, 5.0, 5.0, 0.0, 0.0, 1.0, 1.0]
    ));
    let t = 5.0 / 3.0;
    assert!(close(
        &pool(&s, 3, Pool::Avg),
        &[0.0, t, t, t, 0.0, 0.0, 1.0 / 3.0, 0.5]
    ));
    // Kernel 1 is no pooling; a kernel wider than the scores spans them all.
    assert!(close(&pool(&s, 1, Pool::Max), &s));
    assert!(close(&pool(&s, 1, Pool::Avg), &s));
    assert!(close(&pool(&s[..3], 7, Pool::Max), &[5.0; 3]));
    assert!(pool(&[], 7, Pool::Avg).is_empty());
}

#[test]
fn scores_are_the_window_rows_mean_distribution() {
    // S = 6, window rows 4 and 5. Row 4 puts 0.5 on key 1, row 5 0.25 on key 1 and 0.25
    // on key 2; the rest goes to the window keys 4..=row.
    let h = head(6, 4, |i| {
        if i == 4 {
            row_with(&[(1, 0.5)], 4, i)
        } else {
            row_with(&[(1, 0.25), (2, 0.25)], 4, i)
        }
    });
    let sc = window_scores(&h);
    // Key 1: (0.5 + 0.25) / 2 rows; key 2: 0.25 / 2; key 4: (0.5 + 0.25) / 2; key 5: 0.25 / 2.
    assert!(
        close(&sc, &[0.0, 0.375, 0.125, 0.0, 0.375, 0.125]),
        "{sc:?}"
    );
    assert!((sc.iter().sum::<f64>() - 1.0).abs() < 1e-6);
}

/// S = 12, window 3 (rows and keys 9..12); prefix keys 0..9 get these shares of every
/// window row, all distinct.
const MASS: [(usize, f32); 5] = [(0, 0.30), (2, 0.05), (4, 0.20), (5, 0.02), (7, 0.10)];

fn snap(budget: f64, kernel: usize) -> SnapSettings {
    SnapSettings {
        window: 3,
        kernel,
        budget,
        pool: Pool::Max,
    }
}

#[test]
fn snapkv_keeps_the_window_and_the_exact_top_k() {
    let h = [head(12, 9, |i| row_with(&MASS, 9, i))];
    let choose = |b, k| choose_layer(&h, &snap(b, k), false).remove(0);
    // Budget 0.5: ceil(6) = 6 kept = window 9, 10, 11 + top 3 of the prefix: 0, 4, 7.
    let c = choose(0.5, 1);
    assert_eq!(kept(&c.keep), [0, 4, 7, 9, 10, 11]);
    // Retained: the window keys' 0.33 plus 0.30 + 0.20 + 0.10.
    assert!((c.retained - 0.93).abs() < 1e-6, "{}", c.retained);
    // Budget 0.6: ceil(7.2) = 8: + 2 (0.05) and 5 (0.02).
    assert_eq!(kept(&choose(0.6, 1).keep), [0, 2, 4, 5, 7, 9, 10, 11]);
    // Below the window's share the window alone is kept; the whole budget keeps all.
    assert_eq!(kept(&choose(0.1, 1).keep), [9, 10, 11]);
    assert_eq!(kept(&choose(1.0, 1).keep), (0..12).collect::<Vec<_>>());
    // Max pooling over 3: pooled 0.30, 0.30, 0.05, 0.20, 0.20, 0.20, 0.10, 0.10, 0.10
    // (prefix only: the window's keys do not lift key 8). Top 3: 0, then 1 (kept for its
    // neighbour 0), then the peak 4 of the three 0.20s (ties go to the higher raw score).
    assert_eq!(kept(&choose(0.5, 3).keep), [0, 1, 4, 9, 10, 11]);
}

#[test]
fn a_prompt_no_longer_than_the_window_is_kept_whole() {
    let h = [head(3, 0, |i| vec![1.0 / (i + 1) as f32; i + 1])];
    let c = choose_layer(&h, &snap(0.1, 7), true).remove(0);
    assert_eq!(kept(&c.keep), [0, 1, 2]);
    assert!((c.retained - 1.0).abs() < 1e-6);
}

#[test]
fn adakv_moves_budget_from_a_focused_head_to_a_diffuse_one() {
    // S = 20, window 4 (rows and keys 16..20), budget 0.5: 10 per head, 6 beyond the window.
    let settings = SnapSettings {
        window: 4,
        kernel: 1,
        budget: 0.5,
        pool: Pool::Max,
    };
    // Focused: every window row gives 0.9 to key 0. Diffuse: row i uniform over its keys,
    // so each prefix key scores the mean of 1/17 .. 1/20, about 0.054.
    let focused = head(20, 16, |i| row_with(&[(0, 0.9)], 16, i));
    let diffuse = head(20, 16, |i| vec![1.0 / (i + 1) as f32; i + 1]);
    let layer = [focused, diffuse];
    let count = |c: &[fastgen::compress::SnapChoice]| {
        c.iter()
            .map(|c| c.keep.iter().filter(|&&k| k).count())
            .collect::<Vec<_>>()
    };
    let snap_kv = choose_layer(&layer, &settings, false);
    assert_eq!(count(&snap_kv), [10, 10]);
    // Ada-KV: 12 slots over both prefixes; the focused head's key 0 (0.9) is first, then
    // 11 of the diffuse head's 16 keys (ties to the earlier), before any of the focused
    // head's zero-score keys.
    let ada = choose_layer(&layer, &settings, true);
    assert_eq!(count(&ada), [5, 15]);
    assert_eq!(kept(&ada[0].keep), [0, 16, 17, 18, 19]);
    assert_eq!(
        kept(&ada[1].keep),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18, 19]
    );
    // Same total, and the diffuse head keeps more of its window attention than with SnapKV;
    // the focused head loses nothing (its other keys had none).
    assert!(ada[1].retained > snap_kv[1].retained);
    assert!((ada[0].retained - snap_kv[0].retained).abs() < 1e-9);
    // Every head keeps at least its window, even when another head's scores are all higher.
    let strong = head(20, 16, |i| row_with(&[(3, 0.5), (8, 0.4)], 16, i));
    let cold = head(20, 16, |i| row_with(&[], 16, i));
    let ada = choose_layer(&[strong, cold], &settings, true);
    assert_eq!(kept(&ada[1].keep)[..], [16, 17, 18, 19][..]);
    assert_eq!(count(&ada).iter().sum::<usize>(), 20);
}
