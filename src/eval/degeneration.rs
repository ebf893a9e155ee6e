//! Degeneration of a long generation, measured on its token ids: how varied it is (distinct-n)
//! and how long its worst verbatim loop runs. Pure functions.

use std::collections::HashSet;

/// Distinct n-grams over all n-grams of `ids` (1 when nothing repeats, towards 0 when one
/// n-gram fills the text); `None` when `ids` holds no n-gram (fewer than `n` ids, or n = 0).
pub fn distinct_n(ids: &[u32], n: usize) -> Option<f64> {
    if n == 0 || ids.len() < n {
        return None;
    }
    let grams: Vec<&[u32]> = ids.windows(n).collect();
    let distinct: HashSet<&[u32]> = grams.iter().copied().collect();
    Some(distinct.len() as f64 / grams.len() as f64)
}

/// Length in tokens of the longest stretch of `ids` made of one block repeated back to back
/// at least twice (whole repetitions only: "abcabcab" is 6); 0 when nothing repeats.
///
/// For every period p, a run of c consecutive positions with `ids[j] == ids[j + p]` makes a
/// stretch of c + p tokens with period p, which holds `(c + p) / p` whole blocks. O(n^2 / 2):
/// a thousand tokens take about half a million comparisons.
pub fn longest_loop(ids: &[u32]) -> usize {
    let mut best = 0;
    for p in 1..=ids.len() / 2 {
        let mut run = 0;
        for j in 0..ids.len() - p {
            run = if ids[j] == ids[j + p] { run + 1 } else { 0 };
            let blocks = (run + p) / p;
            if blocks >= 2 {
                best = best.max(blocks * p);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_n_by_hand() {
        // 1 2 1 2 3: unigrams {1, 2, 3} of 5; bigrams 12 21 12 23 -> 3 of 4; trigrams all 3
        // distinct; one 5-gram.
        let ids = [1, 2, 1, 2, 3];
        assert_eq!(distinct_n(&ids, 1), Some(3.0 / 5.0));
        assert_eq!(distinct_n(&ids, 2), Some(3.0 / 4.0));
        assert_eq!(distinct_n(&ids, 3), Some(1.0));
        assert_eq!(distinct_n(&ids, 5), Some(1.0));
        // One token repeated: a single distinct n-gram.
        assert_eq!(distinct_n(&[7; 10], 4), Some(1.0 / 7.0));
        assert_eq!(distinct_n(&ids, 6), None);
        assert_eq!(distinct_n(&ids, 0), None);
        assert_eq!(distinct_n(&[], 1), None);
    }

    #[test]
    fn longest_loop_by_hand() {
        assert_eq!(longest_loop(&[]), 0);
        assert_eq!(longest_loop(&[1]), 0);
        assert_eq!(longest_loop(&[1, 2, 3, 4, 5]), 0);
        // "aa" is a block of one, twice.
        assert_eq!(longest_loop(&[1, 1]), 2);
        assert_eq!(longest_loop(&[5, 1, 1, 1, 6]), 3);
        // abcabcab: two whole blocks of three; the trailing "ab" does not count.
        assert_eq!(longest_loop(&[1, 2, 3, 1, 2, 3, 1, 2]), 6);
        // ...but a third whole block does.
        assert_eq!(longest_loop(&[1, 2, 3, 1, 2, 3, 1, 2, 3]), 9);
        // The loop may start anywhere and a rotated block counts: x y [b c a b c a] z.
        assert_eq!(longest_loop(&[8, 9, 2, 3, 1, 2, 3, 1, 7]), 6);
        // A block seen twice but not back to back is no loop.
        assert_eq!(longest_loop(&[1, 2, 3, 9, 1, 2, 3]), 0);
        // The longest of several loops: a short one early, a long period later.
        let mut ids = vec![4, 4, 0];
        let block = [10, 11, 12, 13, 14];
        ids.extend(block);
        ids.extend(block);
        ids.push(0);
        assert_eq!(longest_loop(&ids), 10);
    }

    #[test]
    fn longest_loop_on_a_degenerate_tail() {
        // 100 varied tokens, then a 7-token sentence repeated 20 times and cut mid-block.
        let mut ids: Vec<u32> = (100..200).collect();
        let sentence = [1, 2, 3, 4, 5, 6, 7];
        for _ in 0..20 {
            ids.extend(sentence);
        }
        ids.extend(&sentence[..3]);
        assert_eq!(longest_loop(&ids), 140);
        assert!(distinct_n(&ids, 4).unwrap() < 0.5);
    }
}
