//! Text through the real SmolLM2 tokenizer: random bytes made UTF-8 lossily, random code
//! points from every plane (controls, combining marks, surrogates' neighbours, private use),
//! long runs; encode, then decode, must not panic.

use crate::outcome::Outcome;
use crate::rng::Rng;
use fastgen::tokenizer::Tokenizer;

fn random_char(rng: &mut Rng) -> char {
    let ranges: [(u32, u32); 10] = [
        (0, 0x20),
        (0x20, 0x7F),
        (0x80, 0x800),
        (0x300, 0x370),
        (0x590, 0x700),
        (0xD7F0, 0xE100),
        (0x1F300, 0x1FAFF),
        (0x40000, 0xC0000),
        (0xE0000, 0xE0080),
        (0xF0000, 0x10FFFF),
    ];
    let &(lo, hi) = rng.pick(&ranges);
    char::from_u32(lo + rng.below((hi - lo) as usize) as u32).unwrap_or('\u{FFFD}')
}

/// Text `index` of the run with `seed`.
pub fn generate(seed: u64, index: u64) -> String {
    let mut rng = Rng::for_input(seed, index);
    let len = match rng.below(10) {
        0 => rng.below(100_000),
        _ => rng.below(300),
    };
    match rng.below(5) {
        0 => String::from_utf8_lossy(&rng.bytes(len)).into_owned(),
        1 => (0..len).map(|_| random_char(&mut rng)).collect(),
        2 => {
            let piece = rng.pick(&[" ", "9", "\n", "é", "<|im_start|>", "\u{4}", "ab", "'s"]);
            piece.repeat(len)
        }
        3 => {
            let words = [
                "<|im_end|>",
                "<|endoftext|>",
                " the",
                "\r\n",
                "\t",
                "  ",
                "1234567",
            ];
            (0..len / 4).map(|_| *rng.pick(&words)).collect()
        }
        _ => (0..len)
            .map(|_| {
                if rng.chance(50) {
                    random_char(&mut rng)
                } else {
                    'a'
                }
            })
            .collect(),
    }
}

pub fn check(tok: &Tokenizer, text: &str) -> Outcome {
    let ids = match tok.encode(text) {
        Ok(ids) => ids,
        Err(e) => return Outcome::of_error(&e),
    };
    let _ = tok.decode(&ids);
    match tok.encode_chat_prompt(text) {
        Ok(ids) => {
            let _ = tok.decode(&ids);
            Outcome::Ok
        }
        Err(e) => Outcome::of_error(&e),
    }
}
