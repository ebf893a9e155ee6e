//! How one input ended, and the counts per target.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted and processed.
    Ok,
    /// Refused with one line naming the problem (or a documented HTTP status): that line.
    Clear(String),
    /// A panic, a signal, an abort, or (HTTP) a dropped connection or a dead server.
    Crash(String),
    /// Past the time limit.
    Hang(String),
    /// Refused without a clear one-line error.
    Unclear(String),
}

impl Outcome {
    /// A library error as the CLI would print it: clear if it is one non-empty line.
    pub fn of_error(e: &dyn fmt::Display) -> Outcome {
        let text = e.to_string();
        // A panic the product caught (the template sandbox) is still a panic.
        if text.contains("panicked") {
            return Outcome::Crash(cut(&text, 300));
        }
        if !text.trim().is_empty() && !text.contains('\n') && text.len() <= 2000 {
            Outcome::Clear(cut(&text, 300))
        } else {
            Outcome::Unclear(format!("not one line: {:?}", cut(&text, 300)))
        }
    }

    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Clear(_))
    }
}

/// At most `n` chars of `s`.
pub fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The counts of one target, with the first few failing inputs.
#[derive(Default)]
pub struct Tally {
    pub tried: u64,
    pub ok: u64,
    pub clear: u64,
    pub crash: u64,
    pub hang: u64,
    pub unclear: u64,
    pub failures: Vec<(String, Outcome)>,
    /// How often each kind of clear refusal occurred (its text without digits, cut short).
    pub reasons: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, input: impl Into<String>, o: Outcome) {
        self.tried += 1;
        match &o {
            Outcome::Ok => self.ok += 1,
            Outcome::Clear(why) => {
                self.clear += 1;
                let kind: String = why
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(70)
                    .collect();
                *self.reasons.entry(kind).or_default() += 1;
            }
            Outcome::Crash(_) => self.crash += 1,
            Outcome::Hang(_) => self.hang += 1,
            Outcome::Unclear(_) => self.unclear += 1,
        }
        if o.is_failure() && self.failures.len() < 20 {
            self.failures.push((input.into(), o));
        }
    }

    /// The `n` most frequent kinds of clear refusal.
    pub fn top_reasons(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.reasons.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.1));
        v.truncate(n);
        v
    }

    pub fn failed(&self) -> u64 {
        self.crash + self.hang + self.unclear
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tried {}, ok {}, clear {}, crash {}, hang {}, unclear {}",
            self.tried, self.ok, self.clear, self.crash, self.hang, self.unclear
        )
    }
}
