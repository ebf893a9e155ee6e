//! SentencePiece tokenizer (`tokenizer.ggml.model = "llama"`), giving llama.cpp's ids.
//!
//! Special tokens are cut out of the text before this module sees it (the parent's
//! `split_special`); here one raw-text fragment becomes ids:
//! 1. with `add_space_prefix`, a fragment that opens the text or follows a special token gets
//!    a space in front; every space becomes U+2581 (`▁`);
//! 2. the fragment starts as one symbol per character. Every pair of neighbouring symbols whose
//!    joined text is a token goes into a max-heap keyed by that token's score (equal scores:
//!    the pair further left first). The best pair is merged (right into left) unless one side
//!    was already merged into something else, and the new neighbours of the merged symbol are
//!    offered to the heap, until it is empty;
//! 3. each symbol left is its token, or, when its text is not a token (a lone character
//!    outside the vocabulary), one `<0xXX>` byte token per UTF-8 byte.
//!
//! llama.cpp also keeps a reverse map from each merged text to its two halves, to split a
//! final symbol that is not a token back into pieces. It never takes effect: the map only
//! holds texts that are tokens, and it is only consulted for a text that is not one (every
//! merged symbol is a token by construction). So nothing here keeps such a map; a unit test
//! pins down the consequence (a merged token is emitted whatever its type).

use super::tok_err;
use crate::error::Result;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// U+2581, SentencePiece's visible space.
pub(super) const SPACE_MARK: char = '\u{2581}';

/// The SentencePiece model: token texts with their scores, and the byte fallback.
#[derive(Debug)]
pub(super) struct Spm {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// Token of each byte for characters outside the vocabulary: `<0xXX>`, else the one-byte
    /// text, else the unknown token; `None` when there is none of the three.
    byte_ids: Vec<Option<u32>>,
    add_space_prefix: bool,
}

impl Spm {
    /// `ids` maps every token text to its id (texts are unique); `scores` has one finite score
    /// per token.
    pub(super) fn new(
        ids: HashMap<String, u32>,
        scores: Vec<f32>,
        unk_id: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Spm> {
        if scores.is_empty() {
            return Err(tok_err(
                "a SentencePiece ('llama') tokenizer needs tokenizer.ggml.scores, which is missing",
            ));
        }
        if scores.len() != ids.len() {
            return Err(tok_err(format!(
                "{} scores (tokenizer.ggml.scores) for {} tokens",
                scores.len(),
                ids.len()
            )));
        }
        if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(tok_err(format!(
                "token {i} has the score {s} (tokenizer.ggml.scores must be finite)"
            )));
        }
        let byte_ids = (0..=255u8)
            .map(|b| {
                ids.get(&format!("<0x{b:02X}>"))
                    .or_else(|| {
                        // llama.cpp's second choice is the byte as a one-byte text.
                        b.is_ascii()
                            .then(|| ids.get(&char::from(b).to_string()))
                            .flatten()
                    })
                    .copied()
                    .or(unk_id)
            })
            .collect();
        Ok(Spm {
            ids,
            scores,
            byte_ids,
            add_space_prefix,
        })
    }

    pub(super) fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Appends the ids of one fragment free of special tokens. `after_special`: the fragment
    /// opens the text or follows a special token (where the space prefix goes).
    pub(super) fn encode_fragment(
        &self,
        fragment: &str,
        after_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let mut text = String::with_capacity(fragment.len() + 3);
        if self.add_space_prefix && after_special {
            text.push(SPACE_MARK);
        }
        for c in fragment.chars() {
            text.push(if c == ' ' { SPACE_MARK } else { c });
        }
        if text.is_empty() {
            return Ok(());
        }
        let symbols = self.merge(&text);
        let mut i = 0;
        while i != NONE {
            let sym = &symbols[i];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        out.push(self.byte_ids[b as usize].ok_or_else(|| {
                            tok_err(format!(
                                "no token for the byte 0x{b:02X} (no <0x{b:02X}> token and no \
                                 unknown token)"
                            ))
                        })?);
                    }
                }
            }
            i = sym.next;
        }
        Ok(())
    }

    /// Runs the merges over `text` (not empty); returns the symbols, the live ones chained
    /// from index 0 by `next`.
    fn merge(&self, text: &str) -> Vec<Symbol> {
        let n = text.chars().count();
        let mut symbols: Vec<Symbol> = Vec::with_capacity(n);
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            });
        }
        let mut heap = BinaryHeap::with_capacity(n);
        for left in 1..n {
            self.offer(text, &symbols, left - 1, left, &mut heap);
        }
        while let Some(pair) = heap.pop() {
            let (l, r) = (pair.left, pair.right);
            // Stale: a side was merged away, or grew, since the pair was offered.
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != pair.len
            {
                continue;
            }
            let right_next = symbols[r].next;
            symbols[l].len += symbols[r].len;
            symbols[l].next = right_next;
            symbols[r].len = 0;
            if right_next != NONE {
                symbols[right_next].prev = l;
            }
            self.offer(text, &symbols, symbols[l].prev, l, &mut heap);
            self.offer(text, &symbols, l, right_next, &mut heap);
        }
        symbols
    }

    /// Queues the pair `left`, `right` (neighbours) if their joined text is a token.
    fn offer(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        heap: &mut BinaryHeap<Pair>,
    ) {
        if left == NONE || right == NONE {
            return;
        }
        let len = symbols[left].len + symbols[right].len;
        let start = symbols[left].start;
        if let Some(&id) = self.ids.get(&text[start..start + len]) {
            heap.push(Pair {
                score: self.scores[id as usize],
                left,
                right,
                len,
            });
        }
    }
}

/// No symbol (end of the chain).
const NONE: usize = usize::MAX;

/// A run of the fragment's text; `len == 0` once merged into its left neighbour.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A mergeable pair of neighbouring symbols and the score of the token they make.
#[derive(Debug, Clone, Copy)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the joined text when offered (detects stale pairs).
    len: usize,
}

impl Ord for Pair {
    /// Higher score first, then the leftmost pair. Scores compare as llama.cpp's `<` does
    /// (so -0.0 and 0.0 tie); they are finite, checked when the model is built.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model over `(text, score)` tokens (ids in order) plus the 256 byte tokens after them.
    fn model(tokens: &[(&str, f32)], add_space_prefix: bool) -> (Spm, Vec<String>) {
        let mut texts: Vec<String> = tokens.iter().map(|(t, _)| t.to_string()).collect();
        let mut scores: Vec<f32> = tokens.iter().map(|&(_, s)| s).collect();
        for b in 0..=255u8 {
            texts.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
        }
        let ids = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        (
            Spm::new(ids, scores, None, add_space_prefix).unwrap(),
            texts,
        )
    }

    /// Encodes one fragment and shows the result as token texts.
    fn pieces(spm: &Spm, texts: &[String], text: &str, after_special: bool) -> Vec<String> {
        let mut out = Vec::new();
        spm.encode_fragment(text, after_special, &mut out).unwrap();
        out.iter().map(|&id| texts[id as usize].clone()).collect()
    }

    fn chars(s: &str) -> Vec<(String, f32)> {
        s.chars().map(|c| (c.to_string(), -100.0)).collect()
    }

    #[test]
    fn best_score_merges_first_not_leftmost() {
        // "abc": "ab" (-5) and "bc" (-1) compete for "b"; the higher score wins.
        let mut v = chars("abc");
        v.extend([("ab".into(), -5.0), ("bc".into(), -1.0)]);
        let v: Vec<(&str, f32)> = v.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "abc", true), ["a", "bc"]);

        // Swap the scores: now "ab" wins.
        let v2: Vec<(&str, f32)> = v
            .iter()
            .map(|&(t, s)| match t {
                "ab" => (t, -1.0),
                "bc" => (t, -5.0),
                _ => (t, s),
            })
            .collect();
        let (spm, texts) = model(&v2, false);
        assert_eq!(pieces(&spm, &texts, "abc", true), ["ab", "c"]);
    }

    #[test]
    fn merges_grow_through_new_neighbours() {
        // "ab" then "abc" (offered only once "ab" exists) then "abcd" via the right neighbour.
        let mut v = chars("abcd");
        v.extend([
            ("ab".into(), -1.0),
            ("abc".into(), -2.0),
            ("abcd".into(), -3.0),
            ("cd".into(), -10.0),
        ]);
        let v: Vec<(&str, f32)> = v.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        let (spm, texts) = model(&v, false);
        // "ab" (-1), then "abc" (-2) beats "cd" (-10); then "abcd" needs "abc"+"d".
        assert_eq!(pieces(&spm, &texts, "abcd", true), ["abcd"]);
        assert_eq!(pieces(&spm, &texts, "abcdab", true), ["abcd", "ab"]);
        // The left neighbour too: "yz" merges, then "x"+"yz" makes "xyz".
        let w = [
            ("x", -9.0),
            ("y", -9.0),
            ("z", -9.0),
            ("yz", -1.0),
            ("xyz", -2.0),
        ];
        let (spm2, texts2) = model(&w, false);
        assert_eq!(pieces(&spm2, &texts2, "xyz", true), ["xyz"]);
        // Without the steps "abc" and "cd", "abcd" is never a pair of neighbours (a longest
        // match would still find it).
        let v: Vec<(&str, f32)> = v
            .into_iter()
            .filter(|(t, _)| !matches!(*t, "abc" | "cd"))
            .collect();
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "abcd", true), ["ab", "c", "d"]);
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        // "aaa": both "aa" pairs score the same; the left one merges, leaving "a".
        let v = [("a", -100.0), ("aa", -1.0)];
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "aaa", true), ["aa", "a"]);
        assert_eq!(pieces(&spm, &texts, "aaaaa", true), ["aa", "aa", "a"]);
        // "xyz" with "xy" and "yz" equal: left wins. -0.0 and 0.0 are equal scores too.
        let v = [
            ("x", -100.0),
            ("y", -100.0),
            ("z", -100.0),
            ("yz", 0.0),
            ("xy", -0.0),
        ];
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "xyz", true), ["xy", "z"]);
    }

    #[test]
    fn stale_pairs_are_skipped() {
        // "abc": "bc" (-1) merges first, which makes the queued "ab" (-2) stale: merging it
        // anyway would make "abc", not a token, and spill bytes.
        let v = [
            ("a", -100.0),
            ("b", -100.0),
            ("c", -100.0),
            ("bc", -1.0),
            ("ab", -2.0),
        ];
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "abc", true), ["a", "bc"]);
        assert_eq!(pieces(&spm, &texts, "ab", true), ["ab"]);
    }

    #[test]
    fn characters_outside_the_vocabulary_fall_back_to_bytes() {
        let v = [("a", -1.0)];
        let (spm, texts) = model(&v, false);
        assert_eq!(
            pieces(&spm, &texts, "aé😀", true),
            ["a", "<0xC3>", "<0xA9>", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
        );
        // Without byte tokens: the unknown token, or an error when there is none.
        let ids: HashMap<String, u32> = [("a".to_string(), 0), ("<unk>".to_string(), 1)].into();
        let spm = Spm::new(ids.clone(), vec![0.0, 0.0], Some(1), false).unwrap();
        let mut out = Vec::new();
        spm.encode_fragment("aé", true, &mut out).unwrap();
        assert_eq!(out, [0, 1, 1]);
        let spm = Spm::new(ids, vec![0.0, 0.0], None, false).unwrap();
        let err = spm.encode_fragment("é", true, &mut out).unwrap_err();
        assert!(err.to_string().contains("0xC3"), "{err}");
    }

    #[test]
    fn ascii_byte_falls_back_to_its_one_character_token() {
        // No <0x41>, but "A" is a token; a character never merged still maps to it.
        let ids: HashMap<String, u32> = [("A".to_string(), 0), ("<unk>".to_string(), 1)].into();
        let spm = Spm::new(ids, vec![0.0, 0.0], Some(1), false).unwrap();
        assert_eq!(spm.byte_ids[b'A' as usize], Some(0));
        assert_eq!(spm.byte_ids[b'B' as usize], Some(1));
    }

    #[test]
    fn merged_token_is_kept_whatever_it_is() {
        // llama.cpp's reverse map would split a merged symbol back only if its text were not
        // a token, which a merge product always is: "ab" comes out as "ab" even when a
        // SentencePiece model would have marked it unused, and never as "a" "b".
        let v = [("a", -1.0), ("b", -1.0), ("ab", -50.0)];
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "ab", true), ["ab"]);
    }

    #[test]
    fn spaces_become_the_mark_and_the_prefix_follows_specials() {
        let v = [
            ("\u{2581}", -10.0),
            ("a", -10.0),
            ("\u{2581}a", -1.0),
            ("\u{2581}\u{2581}", -2.0),
        ];
        let (spm, texts) = model(&v, true);
        // First fragment (or after a special token): a space in front.
        assert_eq!(pieces(&spm, &texts, "a", true), ["\u{2581}a"]);
        // In the middle of the text: none.
        assert_eq!(pieces(&spm, &texts, "a", false), ["a"]);
        // "\u{2581}a" (-1) beats "\u{2581}\u{2581}" (-2), on both sides.
        assert_eq!(
            pieces(&spm, &texts, " a  a", false),
            ["\u{2581}a", "\u{2581}", "\u{2581}a"]
        );
        // Tabs and newlines are not spaces.
        assert_eq!(pieces(&spm, &texts, "\t", false), ["<0x09>"]);
        let (spm, texts) = model(&v, false);
        assert_eq!(pieces(&spm, &texts, "a", true), ["a"]);
    }

    #[test]
    fn bad_scores_are_refused() {
        let ids: HashMap<String, u32> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let msg = |r: Result<Spm>| r.unwrap_err().to_string();
        assert!(msg(Spm::new(ids.clone(), vec![], None, false)).contains("scores"));
        assert!(msg(Spm::new(ids.clone(), vec![0.0], None, false)).contains("1 scores"));
        let m = msg(Spm::new(ids, vec![0.0, f32::NAN], None, false));
        assert!(m.contains("token 1") && m.contains("finite"), "{m}");
    }

    #[test]
    fn long_text_is_fast() {
        // Quadratic behaviour would show here: 200k characters with every pair a token.
        let v = [
            ("a", -10.0),
            ("aa", -1.0),
            ("aaaa", -2.0),
            ("\u{2581}", -5.0),
        ];
        let (spm, _) = model(&v, false);
        let text = "aaaaaaa ".repeat(25_000);
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        spm.encode_fragment(&text, true, &mut out).unwrap();
        // "aaaaaaa" -> "aaaa" "aa" "a"; then the space.
        assert_eq!(out.len(), 4 * 25_000);
        assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
    }
}
