//! Needle-in-a-haystack contexts: essay prose cut to a token length, with facts inserted at
//! chosen depths on sentence boundaries.

/// The classic needle and its question.
pub const NEEDLE: &str =
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.";
pub const NEEDLE_QUESTION: &str = "What is the best thing to do in San Francisco?";
/// What a correct answer contains (lower-cased match).
pub const NEEDLE_ANSWER: &str = "dolores park";

/// A second fact, asked about separately from the same compressed context.
pub const FACT: &str = "The secret code for the vault is 7341.";
pub const FACT_QUESTION: &str = "What is the secret code for the vault?";
pub const FACT_ANSWER: &str = "7341";

/// Splits prose into sentences, each keeping its trailing punctuation and the whitespace
/// before the next, so that concatenating them gives the text back.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let end_mark = matches!(bytes[i], b'.' | b'?' | b'!');
        if end_mark && bytes.get(i + 1).is_some_and(|b| b.is_ascii_whitespace()) {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            out.push(&text[start..j]);
            start = j;
            i = j;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// A haystack with facts inserted.
#[derive(Debug, Clone)]
pub struct Haystack {
    pub text: String,
    /// Token count of `text` (by the counter it was built with).
    pub tokens: usize,
    /// For each inserted fact: the share (0..=1) of the prose's tokens that come before it.
    pub depths: Vec<f64>,
}

/// Builds a haystack of about `target_tokens` tokens from `prose` (repeated if short), with
/// each `(fact, depth_percent)` inserted at the sentence boundary nearest that depth.
/// `count` gives the token count of a text.
pub fn build(
    prose: &str,
    target_tokens: usize,
    facts: &[(&str, f64)],
    count: &dyn Fn(&str) -> usize,
) -> Haystack {
    let sents = sentences(prose);
    let fact_tokens: usize = facts.iter().map(|(f, _)| count(&format!(" {f} "))).sum();
    let budget = target_tokens.saturating_sub(fact_tokens);
    // Take sentences until the budget is reached (counting each on its own is close to the
    // count of the joined text; the final count below is exact).
    let mut chosen: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    for s in sents.iter().cycle().take(sents.len() * 64) {
        let n = count(s);
        if total + n > budget && !chosen.is_empty() {
            break;
        }
        chosen.push((s, n));
        total += n;
    }
    // Insert points: the boundary before the sentence where the running count passes the depth.
    let mut inserts: Vec<(usize, &str)> = facts
        .iter()
        .map(|&(f, depth)| {
            let goal = (depth.clamp(0.0, 100.0) / 100.0 * total as f64) as usize;
            let mut run = 0;
            let mut at = chosen.len();
            for (i, &(_, n)) in chosen.iter().enumerate() {
                if run + n / 2 >= goal {
                    at = i;
                    break;
                }
                run += n;
            }
            (at, f)
        })
        .collect();
    inserts.sort_by_key(|&(at, _)| at);
    let mut text = String::new();
    let mut starts = Vec::new();
    let mut k = 0;
    for i in 0..=chosen.len() {
        while k < inserts.len() && inserts[k].0 == i {
            if !text.is_empty() && !text.ends_with(char::is_whitespace) {
                text.push(' ');
            }
            starts.push((inserts[k].1, text.len()));
            text.push_str(inserts[k].1);
            text.push(' ');
            k += 1;
        }
        if let Some(&(s, _)) = chosen.get(i) {
            text.push_str(s);
        }
    }
    let mut text = text.trim_end().to_string();
    // Whole sentences overshoot or undershoot by up to one sentence: finish word by word.
    let mut tokens = count(&text);
    let next = sents
        .get(chosen.len() % sents.len().max(1))
        .copied()
        .unwrap_or("");
    let mut extra = next.split_whitespace();
    while tokens < target_tokens {
        match extra.next() {
            Some(w) => {
                text.push(' ');
                text.push_str(w);
                tokens = count(&text);
            }
            None => break,
        }
    }
    while tokens > target_tokens {
        match text.trim_end().rfind(char::is_whitespace) {
            Some(cut) if !starts.iter().any(|&(f, b)| b + f.len() > cut) => {
                text.truncate(cut);
                tokens = count(&text);
            }
            _ => break,
        }
    }
    // Depth = share of the prose (the facts themselves not counted) that comes before a fact.
    let prose_tokens = tokens.saturating_sub(fact_tokens).max(1);
    let depths = facts
        .iter()
        .map(|(f, _)| {
            let at = starts.iter().find(|(g, _)| g == f).map_or(0, |&(_, b)| b);
            let facts_before: usize = starts
                .iter()
                .filter(|&&(_, b)| b < at)
                .map(|(g, _)| count(&format!(" {g} ")))
                .sum();
            count(&text[..at]).saturating_sub(facts_before) as f64 / prose_tokens as f64
        })
        .collect();
    Haystack {
        text,
        tokens,
        depths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn prose() -> String {
        (0..400)
            .map(|i| format!("Sentence number {i} says a few plain words about nothing much. "))
            .collect()
    }

    #[test]
    fn sentences_round_trip() {
        let t = "One. Two? Three!  Four 3.5 stays.\nFive";
        let s = sentences(t);
        assert_eq!(
            s,
            vec!["One. ", "Two? ", "Three!  ", "Four 3.5 stays.\n", "Five"]
        );
        assert_eq!(s.concat(), t);
    }

    #[test]
    fn needle_lands_at_depth_and_length_on_target() {
        let p = prose();
        for target in [500, 1000, 2000] {
            for depth in [0.0, 25.0, 50.0, 75.0, 100.0] {
                let h = build(&p, target, &[(NEEDLE, depth)], &words);
                let dev = (h.tokens as f64 - target as f64).abs() / target as f64;
                assert!(dev <= 0.01, "target {target}: got {} words", h.tokens);
                assert_eq!(h.text.matches(NEEDLE).count(), 1);
                // Within one sentence (11 words here) of the requested depth.
                let one_sentence = 11.0 / h.tokens as f64;
                assert!(
                    (h.depths[0] - depth / 100.0).abs() <= one_sentence,
                    "target {target} depth {depth}: at {}",
                    h.depths[0]
                );
            }
        }
    }

    #[test]
    fn two_facts_both_inserted() {
        let h = build(&prose(), 800, &[(NEEDLE, 25.0), (FACT, 75.0)], &words);
        assert!(h.text.contains(NEEDLE) && h.text.contains(FACT));
        assert!(h.depths[0] < h.depths[1]);
    }
}
