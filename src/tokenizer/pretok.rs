//! Pre-tokenizer table: the value of `tokenizer.ggml.pre` names the list of regexes llama.cpp
//! splits text with before byte-level BPE.
//!
//! Each regex is applied in turn to the fragments left by the previous one; a match becomes a
//! fragment and so does the unmatched text between matches. The patterns are written for
//! Oniguruma (the regex engine of the `tokenizers` crate), which supports the `(?!\S)`
//! look-ahead used by most of them.

use crate::error::{Error, Result};

/// How one family of vocabularies is pre-tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreTokenizerRule {
    /// Canonical name of the family (first name of its row in the table).
    pub family: &'static str,
    /// Regexes, applied in sequence.
    pub regexes: &'static [&'static str],
    /// A fragment that is itself a vocabulary entry is emitted whole, without running merges.
    pub ignore_merges: bool,
    /// llama.cpp prepends BOS for this family unless `tokenizer.ggml.add_bos_token` says
    /// otherwise.
    pub add_bos_default: bool,
}

/// The original GPT-2 split: contractions, letter runs, digit runs, other runs, each with an
/// optional leading space, then whitespace not followed by a non-space.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3 / tiktoken style: case-insensitive contractions, a letter run with one optional
/// leading non-letter, up to three digits, punctuation runs with trailing newlines,
/// newline-ending whitespace, then whitespace.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2: as Llama 3 but every digit is its own fragment.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// CJK ideographs, a range below them and Hangul syllables (DeepSeek's own split).
const DEEPSEEK_CJK: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

/// DeepSeek LLM's letter class: the cased letters (upper, lower, title case) of Unicode.
const DEEPSEEK_LETTERS: &str = concat!(
    r"\s?[",
    r"\x{41}-\x{5A}\x{61}-\x{7A}\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}",
    r"\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}",
    r"\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}",
    r"\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}",
    r"\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}",
    r"\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}",
    r"\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}",
    r"\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}",
    r"\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}",
    r"\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}",
    r"\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}",
    r"\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}",
    r"\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}",
    r"\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}",
    r"\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}",
    r"\x{1E900}-\x{1E943}",
    r"]+",
);

/// One row per family: the names `tokenizer.ggml.pre` may carry, and the rule.
const TABLE: &[(&[&str], PreTokenizerRule)] = &[
    (
        &["default"],
        PreTokenizerRule {
            family: "default",
            regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
        ],
        PreTokenizerRule {
            family: "llama3",
            regexes: &[LLAMA3],
            ignore_merges: true,
            add_bos_default: true,
        },
    ),
    (
        &["dbrx", "smaug-bpe", "chatglm-bpe", "glm4"],
        PreTokenizerRule {
            family: "dbrx",
            regexes: &[LLAMA3],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &["deepseek-llm"],
        PreTokenizerRule {
            family: "deepseek-llm",
            regexes: &[
                r"[\r\n]",
                DEEPSEEK_LETTERS,
                r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
                // `$` of the original means end of input; Oniguruma's `$` is end of line.
                r"\s+\z",
                DEEPSEEK_CJK,
                r"\p{N}+",
            ],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &["deepseek-coder"],
        PreTokenizerRule {
            family: "deepseek-coder",
            regexes: &[
                r"[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                DEEPSEEK_CJK,
                r"\p{N}",
            ],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &["falcon"],
        PreTokenizerRule {
            family: "falcon",
            regexes: &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        PreTokenizerRule {
            family: "smollm",
            regexes: &[r"\p{N}", GPT2],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &[
            "gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "gigachat",
            "exaone4",
        ],
        PreTokenizerRule {
            family: "gpt-2",
            regexes: &[GPT2],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
    (
        &["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"],
        PreTokenizerRule {
            family: "qwen2",
            regexes: &[QWEN2],
            ignore_merges: false,
            add_bos_default: false,
        },
    ),
];

/// Every name the table knows, in table order.
pub fn known_names() -> Vec<&'static str> {
    TABLE
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect()
}

/// The rule for a `tokenizer.ggml.pre` value; unknown names are refused with the list of
/// known ones.
pub fn lookup(name: &str) -> Result<&'static PreTokenizerRule> {
    TABLE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, rule)| rule)
        .ok_or_else(|| {
            Error::Tokenizer(format!(
                "unknown pre-tokenizer '{}' (tokenizer.ggml.pre); known: {}",
                crate::error::shown(name),
                known_names().join(", ")
            ))
        })
}
