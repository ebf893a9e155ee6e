//! Stop sequences over streamed text: text comes out as soon as it cannot be the start of a
//! stop sequence; a stop sequence ends the generation and is not part of the output.

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text held back because it could be the start of a stop sequence.
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Default::default()
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds text; returns what can be sent now. After a stop sequence is found, returns the
    /// text before it and then nothing more.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            self.pending.truncate(at);
            return std::mem::take(&mut self.pending);
        }
        let keep = self.held_back_len();
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        out
    }

    /// Ends the text: what was held back comes out (no stop sequence completed it).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop sequence.
    fn held_back_len(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(i, _)| &self.pending[i..])
            .find(|suffix| self.stops.iter().any(|s| s.starts_with(suffix)))
            .map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: Vec<String> = pieces.iter().map(|p| m.push(p)).collect();
        if !m.stopped() {
            out.push(m.finish());
        }
        (out, m.stopped())
    }

    #[test]
    fn no_stops_passes_text_through() {
        let (out, stopped) = run(&[], &["a", "bc", ""]);
        assert_eq!(out, ["a", "bc", "", ""]);
        assert!(!stopped);
    }

    #[test]
    fn stop_spanning_pieces_is_held_back_then_cut() {
        let (out, stopped) = run(&["END"], &["abc E", "N", "D tail", "more"]);
        assert_eq!(out, ["abc ", "", "", ""]);
        assert!(stopped);
    }

    #[test]
    fn false_start_is_released() {
        let (out, stopped) = run(&["END"], &["xE", "Ny", "z"]);
        assert_eq!(out, ["x", "ENy", "z", ""]);
        assert!(!stopped);
    }

    #[test]
    fn held_back_text_comes_out_at_the_end() {
        let (out, _) = run(&["END"], &["abc EN"]);
        assert_eq!(out, ["abc ", "EN"]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (out, stopped) = run(&["zz", "b"], &["a b zz"]);
        assert_eq!(out, ["a "]);
        assert!(stopped);
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let (out, stopped) = run(&["é!"], &["café", "s", "é", "!x"]);
        assert_eq!(out, ["caf", "és", "", ""]);
        assert!(stopped);
        let (out, _) = run(&["日本"], &["こんにちは日", "は"]);
        assert_eq!(out, ["こんにちは", "日は", ""]);
    }
}
