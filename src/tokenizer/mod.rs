//! Tokenizers built from GGUF metadata, meant to give the same ids as llama.cpp
//! (`llama_tokenize` with `add_special = false, parse_special = true`): byte-level BPE
//! (`tokenizer.ggml.model = "gpt2"`) and SentencePiece (`"llama"`, in [`spm`]).
//!
//! Both start alike: the text is cut at every occurrence of a token whose type is CONTROL,
//! USER_DEFINED or UNKNOWN, longest token text first over the whole text; each occurrence
//! becomes that id. Then, for byte-level BPE:
//! 1. every remaining piece is split by the regexes that `tokenizer.ggml.pre` names
//!    ([`pretok`]);
//! 2. each fragment is mapped to GPT-2's printable byte alphabet and merged by the rank of
//!    `tokenizer.ggml.merges`.
//!
//! Steps 1 and 2 run on the `tokenizers` crate (a `Split` per regex then `ByteLevel`, and its
//! BPE model). The special-token cut is done here: the crate's added-token matcher picks the
//! leftmost match, llama.cpp the longest token first, and the two differ when special texts
//! overlap. SentencePiece pieces are merged by token score ([`spm`]), without that crate.

mod pretok;
mod spm;

pub use pretok::PreTokenizerRule;
pub use pretok::{known_names as known_pre_tokenizers, lookup as pre_tokenizer_rule};

use crate::error::{shown, Error, Result};
use crate::gguf::{Gguf, MetaValue};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, Model as _, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// GGUF token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const UNDEFINED: u32 = 0;
    pub const NORMAL: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const CONTROL: u32 = 3;
    pub const USER_DEFINED: u32 = 4;
    pub const UNUSED: u32 = 5;
    pub const BYTE: u32 = 6;
}

use token_type::{BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED};

/// Everything the tokenizer is built from, as read from GGUF metadata (or made by a test).
#[derive(Debug, Clone, Default)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`, a name of the pre-tokenizer table (byte-level BPE only).
    pub pre: String,
    /// `tokenizer.ggml.tokens`: in the byte-level alphabet (gpt2) or with U+2581 for spaces
    /// (llama) for normal tokens.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token; empty means every token is NORMAL.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, `"left right"`, lowest index merges first (gpt2).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores`, one per token: SentencePiece merges the pair making the
    /// highest-scored token first (llama; required there, finite).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.add_space_prefix` (llama): a space goes in front of the text and of
    /// the text after each special token.
    pub add_space_prefix: bool,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Unknown token (`tokenizer.ggml.unknown_token_id`): SentencePiece's last resort for a
    /// byte that has no `<0xXX>` token.
    pub unk_id: Option<u32>,
    /// End of turn; found by its text (`<|im_end|>`, `<|eot_id|>`, ...) when absent.
    pub eot_id: Option<u32>,
    /// End of message (`<|eom_id|>`); found by its text when absent.
    pub eom_id: Option<u32>,
    /// Fill-in-the-middle padding, repository and file-separator tokens: llama.cpp ends
    /// generation on them. Found by their text when absent.
    pub fim_pad_id: Option<u32>,
    pub fim_rep_id: Option<u32>,
    pub fim_sep_id: Option<u32>,
    /// Whether the model wants BOS prepended to a prompt (`tokenizer.ggml.add_bos_token`).
    /// [`Tokenizer::encode`] never prepends anything; callers consult [`Tokenizer::add_bos`].
    pub add_bos: bool,
}

/// Texts by which llama.cpp recognises special tokens that the metadata does not name, and
/// whose type it then forces to CONTROL. Earlier entries win when several are present.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\u{FF5C}fim\u{2581}begin\u{FF5C}>",
    "<PRE>",
    "\u{2581}<PRE>",
    "<|code_prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\u{FF5C}fim\u{2581}hole\u{FF5C}>",
    "<SUF>",
    "\u{2581}<SUF>",
    "<|code_suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\u{FF5C}fim\u{2581}end\u{FF5C}>",
    "<MID>",
    "\u{2581}<MID>",
    "<|code_middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Tokens that end generation whatever the metadata says (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

pub struct Tokenizer {
    /// Token texts as stored (empty entries renamed `[EMPTY_i]` as llama.cpp does).
    tokens: Vec<String>,
    /// Effective GGUF type of each token (after llama.cpp's overrides by text).
    types: Vec<u32>,
    /// Ids matched verbatim in text, longest text first.
    special: Vec<u32>,
    model: Model,
    pre: String,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eot_id: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
}

/// What turns the text between special tokens into ids.
enum Model {
    /// Byte-level BPE: pre-tokenizer sequence, BPE model, ByteLevel decoder, special tokens.
    Bpe(Box<tokenizers::Tokenizer>),
    /// SentencePiece: merges by token score, byte fallback.
    Spm(spm::Spm),
}

impl Model {
    fn name(&self) -> &'static str {
        match self {
            Model::Bpe(_) => "gpt2",
            Model::Spm(_) => "llama",
        }
    }
}

/// Token text to id, in the map each model kind wants (the `tokenizers` crate takes its own).
enum TextIndex {
    Bpe(BpeVocab),
    Spm(HashMap<String, u32>),
}

impl TextIndex {
    fn insert(&mut self, text: String, id: u32) -> Option<u32> {
        match self {
            TextIndex::Bpe(m) => m.insert(text, id),
            TextIndex::Spm(m) => m.insert(text, id),
        }
    }

    fn get(&self, text: &str) -> Option<u32> {
        match self {
            TextIndex::Bpe(m) => m.get(text),
            TextIndex::Spm(m) => m.get(text),
        }
        .copied()
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model.name())
            .field("vocab_size", &self.tokens.len())
            .field("pre", &self.pre)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("eot_id", &self.eot_id)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

impl Tokenizer {
    /// Reads the tokenizer keys of a GGUF file and builds the tokenizer.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let model = g.get_str("tokenizer.ggml.model")?.to_string();
        let is_spm = match model.as_str() {
            "gpt2" => false,
            "llama" => true,
            // Refuse before reading keys (merges, scores) that other tokenizer kinds lack.
            _ => return Err(unsupported_model(&model)),
        };
        let pre = if g.get("tokenizer.ggml.pre").is_some() {
            g.get_str("tokenizer.ggml.pre")?.to_string()
        } else {
            // llama.cpp falls back to its default split when the key is missing.
            "default".to_string()
        };
        let tokens: Vec<String> = g
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let token_types = if g.get("tokenizer.ggml.token_type").is_some() {
            g.get_i32_array("tokenizer.ggml.token_type")?
        } else {
            Vec::new()
        };
        let merges: Vec<String> = if is_spm {
            Vec::new()
        } else {
            g.get_str_array("tokenizer.ggml.merges")?
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        // Missing scores are reported when the SentencePiece model is built.
        let scores = if is_spm && g.get("tokenizer.ggml.scores").is_some() {
            g.get_f32_array("tokenizer.ggml.scores")?
        } else {
            Vec::new()
        };
        let opt_id = |key: &str| -> Result<Option<u32>> {
            if g.get(key).is_none() {
                return Ok(None);
            }
            let v = g.get_u64(key)?;
            u32::try_from(v)
                .map(Some)
                .map_err(|_| tok_err(format!("{key} = {v} is not a token id")))
        };
        // llama.cpp's SentencePiece defaults for ids the file does not give: BOS 1, EOS 2,
        // unknown 0.
        let spm_default = |id: u32| is_spm.then_some(id);
        let eos_id = opt_id("tokenizer.ggml.eos_token_id")?.or(spm_default(2));
        if eos_id.is_none() {
            return Err(tok_err("tokenizer.ggml.eos_token_id is missing"));
        }
        let read_bool = |key: &str| -> Result<Option<bool>> {
            match g.get(key) {
                None => Ok(None),
                Some(MetaValue::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(tok_err(format!(
                    "{key} should be a bool, found {}",
                    other.describe()
                ))),
            }
        };
        let add_bos = match read_bool("tokenizer.ggml.add_bos_token")? {
            Some(b) => b,
            None if is_spm => true,
            None => pretok::lookup(&pre)
                .map(|r| r.add_bos_default)
                .unwrap_or(false),
        };
        let add_space_prefix =
            is_spm && read_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let spec = TokenizerSpec {
            model,
            pre,
            tokens,
            token_types,
            merges,
            scores,
            add_space_prefix,
            bos_id: opt_id("tokenizer.ggml.bos_token_id")?.or(spm_default(1)),
            eos_id,
            unk_id: opt_id("tokenizer.ggml.unknown_token_id")?.or(spm_default(0)),
            eot_id: opt_id("tokenizer.ggml.eot_token_id")?,
            eom_id: opt_id("tokenizer.ggml.eom_token_id")?,
            fim_pad_id: opt_id("tokenizer.ggml.fim_pad_token_id")?,
            fim_rep_id: opt_id("tokenizer.ggml.fim_rep_token_id")?,
            fim_sep_id: opt_id("tokenizer.ggml.fim_sep_token_id")?,
            add_bos,
        };
        Tokenizer::from_vocab(spec)
    }

    /// Builds the tokenizer from its vocabulary; every id, merge and score is checked.
    pub fn from_vocab(spec: TokenizerSpec) -> Result<Tokenizer> {
        let is_spm = match spec.model.as_str() {
            "gpt2" => false,
            "llama" => true,
            other => return Err(unsupported_model(other)),
        };
        let n = spec.tokens.len();
        if n == 0 {
            return Err(tok_err("empty vocabulary"));
        }
        if u32::try_from(n).is_err() {
            return Err(tok_err(format!("vocabulary of {n} tokens is too large")));
        }

        let mut types: Vec<u32> = if spec.token_types.is_empty() {
            vec![NORMAL; n]
        } else if spec.token_types.len() != n {
            return Err(tok_err(format!(
                "{} token types for {n} tokens",
                spec.token_types.len()
            )));
        } else {
            spec.token_types
                .iter()
                .enumerate()
                .map(|(i, &t)| match u32::try_from(t) {
                    Ok(t) if t <= BYTE => Ok(t),
                    _ => Err(tok_err(format!("token {i} has unknown type {t}"))),
                })
                .collect::<Result<_>>()?
        };

        let tokens: Vec<String> = spec
            .tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t
                }
            })
            .collect();

        let mut vocab = if is_spm {
            TextIndex::Spm(HashMap::with_capacity(n))
        } else {
            TextIndex::Bpe(BpeVocab::default())
        };
        for (i, t) in tokens.iter().enumerate() {
            if let Some(prev) = vocab.insert(t.clone(), i as u32) {
                return Err(tok_err(format!(
                    "token text '{}' appears twice (ids {prev} and {i})",
                    shown(t)
                )));
            }
        }

        let check_id = |what: &str, id: Option<u32>| -> Result<Option<u32>> {
            match id {
                Some(id) if id as usize >= n => Err(tok_err(format!(
                    "{what} id {id} is outside the vocabulary of {n} tokens"
                ))),
                other => Ok(other),
            }
        };
        let bos_id = check_id("BOS", spec.bos_id)?;
        let eos_id = check_id("EOS", spec.eos_id)?;
        let unk_id = check_id("unknown token", spec.unk_id)?;
        let given_eot = check_id("EOT", spec.eot_id)?;
        let given_eom = check_id("EOM", spec.eom_id)?;
        let given_fim_pad = check_id("FIM pad", spec.fim_pad_id)?;
        let given_fim_rep = check_id("FIM repo", spec.fim_rep_id)?;
        let given_fim_sep = check_id("FIM separator", spec.fim_sep_id)?;
        if spec.add_bos && bos_id.is_none() {
            return Err(tok_err("the model asks for BOS but names no BOS token"));
        }
        if !is_spm && !spec.scores.is_empty() {
            return Err(tok_err("scores are for SentencePiece ('llama') tokenizers"));
        }
        if is_spm && !spec.merges.is_empty() {
            return Err(tok_err("merges are for byte-level BPE ('gpt2') tokenizers"));
        }

        // llama.cpp finds the special tokens the metadata leaves out by their text, and makes
        // each one found that way a CONTROL token (which matters for matching it in text).
        let mut detect = |given: Option<u32>, texts: &[&str]| -> Option<u32> {
            if given.is_some() {
                return given;
            }
            let found = texts.iter().find_map(|t| vocab.get(t));
            if let Some(id) = found {
                types[id as usize] = CONTROL;
            }
            found
        };
        let eot_id = detect(given_eot, EOT_TEXTS);
        let eom_id = detect(given_eom, EOM_TEXTS);
        detect(None, FIM_PRE_TEXTS);
        detect(None, FIM_SUF_TEXTS);
        detect(None, FIM_MID_TEXTS);
        let fim_pad = detect(given_fim_pad, FIM_PAD_TEXTS);
        let fim_rep = detect(given_fim_rep, FIM_REP_TEXTS);
        let fim_sep = detect(given_fim_sep, FIM_SEP_TEXTS);

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep, eos_id, eot_id, eom_id]
            .into_iter()
            .flatten()
            .collect();
        for t in EOG_TEXTS {
            if let Some(id) = vocab.get(t) {
                eog.push(id);
                types[id as usize] = CONTROL;
            }
        }
        eog.sort_unstable();
        eog.dedup();
        // gpt-oss: with `<|return|>` and `<|call|>` present, `<|end|>` only ends a message.
        let eog_has = |text: &str| vocab.get(text).is_some_and(|id| eog.contains(&id));
        if eog_has("<|return|>") && eog_has("<|call|>") && eog_has("<|end|>") {
            if let Some(end) = vocab.get("<|end|>") {
                eog.retain(|&id| id != end);
                types[end as usize] = USER_DEFINED;
            }
        }

        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&id| matches!(types[id as usize], CONTROL | USER_DEFINED | UNKNOWN))
            .collect();
        special.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        let model = match vocab {
            TextIndex::Spm(ids) => Model::Spm(spm::Spm::new(
                ids,
                spec.scores,
                unk_id,
                spec.add_space_prefix,
            )?),
            TextIndex::Bpe(vocab) => {
                let special: Vec<(&str, bool)> = special
                    .iter()
                    .map(|&id| {
                        (
                            tokens[id as usize].as_str(),
                            types[id as usize] == USER_DEFINED,
                        )
                    })
                    .collect();
                // SentencePiece has no pre-tokenizer: llama.cpp ignores `pre` for it.
                let rule = pretok::lookup(&spec.pre)?;
                Model::Bpe(Box::new(build_bpe(vocab, &spec.merges, rule, &special)?))
            }
        };

        Ok(Tokenizer {
            tokens,
            types,
            special,
            model,
            pre: spec.pre,
            bos_id,
            eos_id,
            eot_id,
            eog,
            add_bos: spec.add_bos,
        })
    }

    /// Text to ids; control tokens written in the text are recognised; nothing is prepended
    /// (see [`Tokenizer::encode_prompt`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        // SentencePiece's space prefix goes at the start and after each special token.
        let mut after_special = true;
        for piece in self.split_special(text) {
            match piece {
                Piece::Special(id) => {
                    out.push(id);
                    after_special = true;
                }
                Piece::Text(s) => {
                    match &self.model {
                        Model::Bpe(hf) => encode_bpe(hf, s, &mut out)?,
                        Model::Spm(spm) => spm.encode_fragment(s, after_special, &mut out)?,
                    }
                    after_special = false;
                }
            }
        }
        Ok(out)
    }

    /// A prompt as llama.cpp tokenizes it (`add_special = true`): BOS first when the model
    /// asks for it ([`Tokenizer::add_bos`]), then [`Tokenizer::encode`].
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// A prompt rendered by the model's chat template, as llama.cpp tokenizes it: when the
    /// model asks for BOS, a BOS the template wrote at the very start is dropped (tokenizing
    /// puts it back, once), then [`Tokenizer::encode_prompt`].
    pub fn encode_chat_prompt(&self, rendered: &str) -> Result<Vec<u32>> {
        let bos_text = match (self.add_bos, self.bos_id) {
            (true, Some(bos)) => self.token_text(bos),
            _ => None,
        };
        let text = bos_text
            .and_then(|b| rendered.strip_prefix(b))
            .unwrap_or(rendered);
        self.encode_prompt(text)
    }

    /// Cuts `text` at the special tokens the way llama.cpp does: for each special token,
    /// longest first, every occurrence in every piece still raw text becomes that token.
    fn split_special<'t>(&self, text: &'t str) -> Vec<Piece<'t>> {
        let mut pieces = Vec::new();
        if text.is_empty() {
            return pieces;
        }
        pieces.push(Piece::Text(text));
        // Gemma has 6,414 special tokens (mostly `<unusedN>`): skip at once those whose bytes
        // cannot all be in the text, without searching it.
        let pairs = BytePairs::of(text);
        for &id in &self.special {
            let needle = self.tokens[id as usize].as_str();
            if !pairs.may_contain(needle.as_bytes())
                || !pieces
                    .iter()
                    .any(|p| matches!(p, Piece::Text(s) if s.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(pieces.len() + 2);
            for p in pieces {
                let Piece::Text(mut rest) = p else {
                    next.push(p);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Piece::Text(&rest[..at]));
                    }
                    next.push(Piece::Special(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Piece::Text(rest));
                }
            }
            pieces = next;
        }
        pieces
    }

    /// Ids to text (lossy on invalid UTF-8). Control tokens are rendered as their text; ids
    /// outside the vocabulary render as nothing.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_token_bytes(id, &mut bytes);
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// End-of-generation ids, ascending: EOS, EOT, EOM, the FIM pad/repo/separator tokens and
    /// every token whose text llama.cpp treats as ending a turn (`<|im_end|>`,
    /// `<|endoftext|>`, `<|eot_id|>`, ...).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id
    }

    /// Whether the model asks for BOS at the start of a prompt ([`Tokenizer::encode`] never
    /// adds it).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub fn model(&self) -> &'static str {
        self.model.name()
    }

    /// The `tokenizer.ggml.pre` name this tokenizer was built with.
    pub fn pre(&self) -> &str {
        &self.pre
    }

    /// Token text as stored in the vocabulary (byte-level alphabet or U+2581 for spaces in
    /// normal tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.model {
            Model::Bpe(hf) => hf.get_model().token_to_id(text),
            Model::Spm(spm) => spm.token_id(text),
        }
    }

    /// GGUF type of a token as llama.cpp sees it ([`token_type`]); 0 (undefined) for ids
    /// outside the vocabulary.
    pub fn token_type(&self, id: u32) -> u32 {
        self.types
            .get(id as usize)
            .copied()
            .unwrap_or(token_type::UNDEFINED)
    }

    /// The raw bytes of one token: normal tokens through the byte-level alphabet (gpt2) or
    /// with U+2581 as a space (llama), control, user-defined and unknown tokens as their text,
    /// `<0xNN>` byte tokens as that byte, and nothing for unused tokens or ids outside the
    /// vocabulary (llama.cpp's `token_to_piece` with `special = true`).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_token_bytes(id, &mut out);
        out
    }

    fn append_token_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let Some(text) = self.tokens.get(id as usize) else {
            return;
        };
        match self.types[id as usize] {
            NORMAL => match self.model {
                Model::Bpe(_) => byte_level_decode(text, out),
                Model::Spm(_) => {
                    for piece in text.split(spm::SPACE_MARK).enumerate() {
                        if piece.0 > 0 {
                            out.push(b' ');
                        }
                        out.extend_from_slice(piece.1.as_bytes());
                    }
                }
            },
            CONTROL | USER_DEFINED | UNKNOWN => out.extend_from_slice(text.as_bytes()),
            BYTE => {
                if let Some(b) = parse_byte_token(text) {
                    out.push(b);
                }
            }
            _ => {}
        }
    }

    /// The underlying `tokenizers` pipeline (pre-tokenizer, BPE, decoder, special tokens) of
    /// a byte-level BPE tokenizer; `None` for SentencePiece, which does without it.
    pub fn hf(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.model {
            Model::Bpe(hf) => Some(hf),
            Model::Spm(_) => None,
        }
    }
}

enum Piece<'t> {
    Text(&'t str),
    Special(u32),
}

/// The bytes and the pairs of adjacent bytes that occur in a text: a needle can only occur in
/// the text (or in a piece of it) if all its bytes and all its adjacent pairs do.
struct BytePairs {
    bytes: [u64; 4],
    pairs: Vec<u64>,
}

impl BytePairs {
    fn of(text: &str) -> BytePairs {
        let mut bytes = [0u64; 4];
        let mut pairs = vec![0u64; 65536 / 64];
        let t = text.as_bytes();
        for &b in t {
            bytes[(b >> 6) as usize] |= 1 << (b & 63);
        }
        for w in t.windows(2) {
            let p = usize::from(w[0]) << 8 | usize::from(w[1]);
            pairs[p >> 6] |= 1 << (p & 63);
        }
        BytePairs { bytes, pairs }
    }

    fn may_contain(&self, needle: &[u8]) -> bool {
        needle
            .iter()
            .all(|&b| self.bytes[(b >> 6) as usize] & (1 << (b & 63)) != 0)
            && needle.windows(2).all(|w| {
                let p = usize::from(w[0]) << 8 | usize::from(w[1]);
                self.pairs[p >> 6] & (1 << (p & 63)) != 0
            })
    }
}

fn unsupported_model(model: &str) -> Error {
    tok_err(format!(
        "unsupported tokenizer model '{}' (tokenizer.ggml.model): only 'gpt2' \
         (byte-level BPE) and 'llama' (SentencePiece) are supported",
        shown(model)
    ))
}

/// Pre-tokenizes and merges byte-level BPE text that holds no special token.
fn encode_bpe(hf: &tokenizers::Tokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
    let pre = hf
        .get_pre_tokenizer()
        .ok_or_else(|| tok_err("pre-tokenizer missing"))?;
    let mut pts = PreTokenizedString::from(text);
    pre.pre_tokenize(&mut pts)
        .map_err(|e| tok_err(format!("pre-tokenizing: {e}")))?;
    let model = hf.get_model();
    for (fragment, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
        let toks = model
            .tokenize(fragment)
            .map_err(|e| tok_err(format!("BPE: {e}")))?;
        out.extend(toks.iter().map(|t| t.id));
    }
    Ok(())
}

/// The `tokenizers` pipeline of a byte-level BPE model: the pre-tokenizer regexes then
/// `ByteLevel`, the BPE model, the `ByteLevel` decoder, and the special tokens (text, whether
/// user-defined) so that its own encoding recognises them.
fn build_bpe(
    vocab: BpeVocab,
    merges: &[String],
    rule: &PreTokenizerRule,
    special: &[(&str, bool)],
) -> Result<tokenizers::Tokenizer> {
    let merges = parse_merges(merges, &vocab)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(rule.ignore_merges)
        .build()
        .map_err(|e| tok_err(format!("building BPE: {e}")))?;

    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(rule.regexes.len() + 1);
    for re in rule.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());

    let mut hf = tokenizers::Tokenizer::new(bpe);
    hf.with_pre_tokenizer(Some(Sequence::new(steps)));
    hf.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    ))));
    let added: Vec<AddedToken> = special
        .iter()
        .map(|&(text, user_defined)| AddedToken::from(text, !user_defined).normalized(false))
        .collect();
    hf.add_special_tokens(&added);
    Ok(hf)
}

/// Splits `"left right"` merges (at the first space after the first byte, like llama.cpp),
/// checks both sides and their concatenation are tokens, and drops repeated pairs (the first
/// rank of a pair is the one llama.cpp keeps).
fn parse_merges(merges: &[String], vocab: &BpeVocab) -> Result<Vec<(String, String)>> {
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    let mut out = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let space = m
            .bytes()
            .skip(1)
            .position(|b| b == b' ')
            .map(|p| p + 1)
            .ok_or_else(|| tok_err(format!("merge {i} '{}' has no space", shown(m))))?;
        let (left, right) = (&m[..space], &m[space + 1..]);
        for side in [left, right] {
            if !vocab.contains_key(side) {
                return Err(tok_err(format!(
                    "merge {i} '{}' refers to '{}', which is not a token",
                    shown(m),
                    shown(side)
                )));
            }
        }
        let joined = format!("{left}{right}");
        if !vocab.contains_key(&joined) {
            return Err(tok_err(format!(
                "merge {i} '{}' makes '{}', which is not a token",
                shown(m),
                shown(&joined)
            )));
        }
        if seen.insert((left, right)) {
            out.push((left.to_string(), right.to_string()));
        }
    }
    Ok(out)
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes take the code points from U+0100 up, in byte order.
fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = ['\0'; 256];
        let mut next = 0x100u32;
        for b in 0..=255u8 {
            let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
            let cp = if printable {
                u32::from(b)
            } else {
                next += 1;
                next - 1
            };
            table[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// Inverse of [`byte_to_char`].
fn char_to_byte() -> &'static HashMap<char, u8> {
    static TABLE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// Byte-level token text to raw bytes; a character outside the alphabet (not produced by
/// GPT-2 style vocabularies) is kept as its own UTF-8.
fn byte_level_decode(text: &str, out: &mut Vec<u8>) {
    let map = char_to_byte();
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// `<0xNN>` to the byte NN.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Streams decoded text token by token, emitting only complete UTF-8: a character whose bytes
/// are spread over several tokens comes out once its last byte has arrived. Invalid bytes
/// come out as U+FFFD.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.tokenizer.append_token_bytes(id, &mut self.pending);
        self.drain_complete()
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: whatever is left (an unfinished character) comes out as U+FFFD.
    pub fn flush(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }

    fn drain_complete(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix was just checked to be valid UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // Invalid sequence in the middle: replace it and go on.
                        Some(len) => {
                            out.push('\u{FFFD}');
                            start = valid + len;
                        }
                        // Unfinished character at the end: keep it for the next token.
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy byte-level vocabulary: the 256 byte characters, a few merges, and control /
    /// user-defined tokens.
    fn toy_spec(pre: &str) -> TokenizerSpec {
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
            "<tool>".into(),
        ];
        let mut token_types = vec![3, 3, 3, 4];
        for &c in byte_to_char() {
            tokens.push(c.to_string());
            token_types.push(1);
        }
        let merges = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
        ];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            token_types.push(1);
        }
        tokens.push("[PAD0]".into());
        token_types.push(5);
        TokenizerSpec {
            model: "gpt2".into(),
            pre: pre.into(),
            tokens,
            token_types,
            merges: merges.iter().map(|s| s.to_string()).collect(),
            bos_id: None,
            eos_id: Some(2),
            ..Default::default()
        }
    }

    fn toy() -> Tokenizer {
        Tokenizer::from_vocab(toy_spec("gpt-2")).unwrap()
    }

    fn id_of(t: &Tokenizer, text: &str) -> u32 {
        t.token_id(text).unwrap()
    }

    #[test]
    fn unknown_pre_tokenizer_is_refused_with_the_known_names() {
        let err = Tokenizer::from_vocab(toy_spec("no-such-pre")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no-such-pre"), "{msg}");
        for name in [
            "smollm",
            "qwen2",
            "gpt-2",
            "llama3",
            "llama-bpe",
            "deepseek-llm",
        ] {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
    }

    #[test]
    fn every_table_regex_compiles() {
        for name in known_pre_tokenizers() {
            let t = Tokenizer::from_vocab(toy_spec(name)).unwrap();
            // Every family keeps every byte of the input.
            let text = "Hello world 123 你好 😀 don't\n\n  x";
            assert_eq!(t.decode(&t.encode(text).unwrap()), text, "{name}");
        }
    }

    #[test]
    fn other_tokenizer_models_are_refused() {
        let mut spec = toy_spec("gpt-2");
        spec.model = "bert".into();
        let msg = Tokenizer::from_vocab(spec).unwrap_err().to_string();
        assert!(
            msg.contains("'bert'") && msg.contains("gpt2") && msg.contains("llama"),
            "{msg}"
        );
    }

    /// A toy SentencePiece vocabulary: control and user-defined tokens, a few pieces with
    /// scores, the 256 byte tokens.
    fn spm_spec(add_space_prefix: bool) -> TokenizerSpec {
        let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
            .map(String::from)
            .to_vec();
        let mut token_types = vec![3, 3, 3, 2, 3];
        let mut scores = vec![0.0; 5];
        tokens.push("\n".into());
        token_types.push(4);
        scores.push(0.0);
        for (t, s) in [
            ("\u{2581}", -1.0),
            ("h", -5.0),
            ("i", -5.0),
            ("hi", -2.0),
            ("\u{2581}hi", -1.5),
            ("\u{2581}\u{2581}", -3.0),
            ("é", -5.0),
        ] {
            tokens.push(t.into());
            token_types.push(1);
            scores.push(s);
        }
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            token_types.push(6);
            scores.push(0.0);
        }
        TokenizerSpec {
            model: "llama".into(),
            pre: "default".into(),
            tokens,
            token_types,
            scores,
            add_space_prefix,
            bos_id: Some(2),
            eos_id: Some(1),
            unk_id: Some(3),
            add_bos: true,
            ..Default::default()
        }
    }

    #[test]
    fn spm_splits_specials_first_and_prefixes_after_them() {
        let t = Tokenizer::from_vocab(spm_spec(true)).unwrap();
        assert_eq!(t.model(), "llama");
        assert!(t.hf().is_none());
        let id = |s: &str| t.token_id(s).unwrap();
        let ids = t.encode("hi<start_of_turn>hi\nhi hi").unwrap();
        assert_eq!(
            ids,
            [
                id("\u{2581}hi"), // first fragment: prefixed
                4,
                id("\u{2581}hi"), // after a control token: prefixed
                5,                // "\n" is user-defined, so special too
                id("\u{2581}hi"), // after a user-defined token: prefixed
                id("\u{2581}hi"), // the space in the text
            ]
        );
        // The prefix is not written back: decoding gives one space per prefix.
        assert_eq!(t.decode(&ids), " hi<start_of_turn> hi\n hi hi");
        assert_eq!(t.encode_prompt("hi").unwrap(), [2, id("\u{2581}hi")]);
        // A template's own BOS at the start is not doubled (llama.cpp drops it from the text).
        assert_eq!(
            t.encode_chat_prompt("<bos>hi").unwrap(),
            [2, id("\u{2581}hi")]
        );
        assert_eq!(
            t.encode_chat_prompt("hi<bos>").unwrap(),
            [2, id("\u{2581}hi"), 2]
        );
        assert!(t.encode("").unwrap().is_empty());

        let t = Tokenizer::from_vocab(spm_spec(false)).unwrap();
        assert_eq!(t.encode("hi hi").unwrap(), [id("hi"), id("\u{2581}hi")]);
        assert_eq!(t.decode(&t.encode("  hi").unwrap()), "  hi");
    }

    #[test]
    fn spm_decodes_bytes_across_tokens() {
        let t = Tokenizer::from_vocab(spm_spec(false)).unwrap();
        // "é" is a piece; "ü" and the emoji fall back to bytes.
        let text = "é ü😀";
        let ids = t.encode(text).unwrap();
        let byte = |b: u8| t.token_id(&format!("<0x{b:02X}>")).unwrap();
        assert_eq!(ids[0], t.token_id("é").unwrap());
        assert_eq!(ids[1], t.token_id("\u{2581}").unwrap());
        assert_eq!(ids[2..4], [byte(0xC3), byte(0xBC)]);
        assert_eq!(ids.len(), 8);
        assert_eq!(t.decode(&ids), text);
        assert_eq!(t.token_bytes(ids[2]), [0xC3]);
        let mut d = StreamDecoder::new(&t);
        let outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
        assert_eq!(outs, ["é", " ", "", "ü", "", "", "", "😀"]);
        assert_eq!(d.flush(), "");
        // Control and unknown tokens render as their text; a literal U+2581 comes back as a
        // space, as in llama.cpp.
        assert_eq!(t.decode(&[2, 3]), "<bos><unk>");
        assert_eq!(t.decode(&t.encode("\u{2581}").unwrap()), " ");
    }

    #[test]
    fn spm_vocabulary_errors_are_clear() {
        let msg = |spec: TokenizerSpec| Tokenizer::from_vocab(spec).unwrap_err().to_string();
        let mut spec = spm_spec(false);
        spec.scores.clear();
        assert!(msg(spec).contains("tokenizer.ggml.scores"));
        let mut spec = spm_spec(false);
        spec.scores.pop();
        let n = spec.tokens.len();
        assert!(msg(spec).contains(&format!("{} scores", n - 1)));
        let mut spec = spm_spec(false);
        spec.scores[7] = f32::INFINITY;
        let m = msg(spec);
        assert!(m.contains("token 7") && m.contains("finite"), "{m}");
        let mut spec = spm_spec(false);
        spec.unk_id = Some(100_000);
        assert!(msg(spec).contains("unknown token id"));
        let mut spec = spm_spec(false);
        spec.merges.push("h i".into());
        assert!(msg(spec).contains("merges"));
        let mut spec = toy_spec("gpt-2");
        spec.scores = vec![0.0; spec.tokens.len()];
        assert!(msg(spec).contains("scores"));
    }

    #[test]
    fn ids_and_merges_from_the_file_are_checked() {
        let mut spec = toy_spec("gpt-2");
        spec.eos_id = Some(100_000);
        assert!(Tokenizer::from_vocab(spec).is_err());

        let mut spec = toy_spec("gpt-2");
        spec.merges.push("Ġ zz".into());
        let msg = Tokenizer::from_vocab(spec).unwrap_err().to_string();
        assert!(msg.contains("zz"), "{msg}");

        let mut spec = toy_spec("gpt-2");
        spec.merges.push("nospace".into());
        assert!(Tokenizer::from_vocab(spec).is_err());

        let mut spec = toy_spec("gpt-2");
        spec.token_types.pop();
        assert!(Tokenizer::from_vocab(spec).is_err());

        let mut spec = toy_spec("gpt-2");
        spec.token_types[5] = 42;
        assert!(Tokenizer::from_vocab(spec).is_err());

        let mut spec = toy_spec("gpt-2");
        spec.tokens[10] = spec.tokens[11].clone();
        assert!(Tokenizer::from_vocab(spec).is_err());
    }

    #[test]
    fn prompts_get_bos_only_when_the_model_asks() {
        let t = toy();
        assert!(!t.add_bos());
        let text = "<|endoftext|>hello";
        assert_eq!(t.encode_prompt(text).unwrap(), t.encode(text).unwrap());
        assert_eq!(t.encode_chat_prompt(text).unwrap(), t.encode(text).unwrap());
        let mut spec = toy_spec("gpt-2");
        spec.bos_id = Some(0);
        spec.add_bos = true;
        let t = Tokenizer::from_vocab(spec).unwrap();
        assert_eq!(t.encode_prompt("hello").unwrap(), [0, id_of(&t, "hello")]);
        assert_eq!(t.encode_chat_prompt(text).unwrap(), [0, id_of(&t, "hello")]);
    }

    #[test]
    fn merges_apply_by_rank() {
        let t = toy();
        let ids = t.encode("hello world").unwrap();
        assert_eq!(ids, vec![id_of(&t, "hello"), id_of(&t, "Ġworld")]);
    }

    #[test]
    fn control_token_in_text_becomes_its_id() {
        let t = toy();
        let ids = t.encode("<|im_start|>hello<|im_end|>\n<tool>").unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[1], id_of(&t, "hello"));
        assert_eq!(ids[2], 2);
        assert_eq!(ids[3], id_of(&t, "Ċ"));
        assert_eq!(ids[4], 3);
        assert_eq!(ids.len(), 5);
        // Unused tokens are not matched in text.
        assert!(!t
            .encode("[PAD0]")
            .unwrap()
            .contains(&(t.vocab_size() as u32 - 1)));
        assert_eq!(
            t.decode(&ids),
            "<|im_start|>hello<|im_end|>\n<tool>".to_string()
        );
    }

    #[test]
    fn longest_special_token_wins_like_llama_cpp() {
        // "<|im_end|>" and a longer token containing it: the longer one is cut first.
        let mut spec = toy_spec("gpt-2");
        spec.tokens.push("<|im_end|>x".into());
        spec.token_types.push(3);
        let long = spec.tokens.len() as u32 - 1;
        let t = Tokenizer::from_vocab(spec).unwrap();
        assert_eq!(t.encode("a<|im_end|>x<|im_end|>").unwrap()[1..], [long, 2]);
    }

    #[test]
    fn byte_pairs_never_rule_out_a_substring() {
        let text = "a<b>\n\n  é😀<unused1>";
        let pairs = BytePairs::of(text);
        let b = text.as_bytes();
        for i in 0..b.len() {
            for j in i + 1..=b.len() {
                assert!(pairs.may_contain(&b[i..j]), "{:?}", &b[i..j]);
            }
        }
        for absent in ["<unused2>", "x", " \n", "a>", "b<"] {
            assert!(!pairs.may_contain(absent.as_bytes()), "{absent}");
        }
    }

    #[test]
    fn eog_covers_eos_and_turn_enders() {
        let t = toy();
        assert_eq!(t.eog_ids(), &[0, 2]);
        assert!(t.is_eog(2) && t.is_eog(0) && !t.is_eog(1));
        // `<|im_end|>` is found by its text as end of turn.
        assert_eq!(t.eot_id(), Some(2));
    }

    #[test]
    fn byte_tokens_decode_to_raw_bytes() {
        let t = toy();
        // "é" is two bytes, each its own byte-level token.
        let ids: Vec<u32> = "é"
            .bytes()
            .map(|b| id_of(&t, &byte_to_char()[b as usize].to_string()))
            .collect();
        assert_eq!(t.token_bytes(ids[0]), vec![0xC3]);
        assert_eq!(t.token_bytes(ids[1]), vec![0xA9]);
        assert_eq!(t.decode(&ids), "é");
        // One half alone is not UTF-8: lossy.
        assert_eq!(t.decode(&ids[..1]), "\u{FFFD}");
        assert_eq!(t.token_bytes(id_of(&t, "Ġ")), b" ".to_vec());
        assert_eq!(t.token_bytes(2), b"<|im_end|>".to_vec());
        assert!(t.token_bytes(u32::MAX).is_empty());
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0x0>"), None);
    }

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let chars: HashSet<char> = byte_to_char().iter().copied().collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(byte_to_char()[b' ' as usize], 'Ġ');
        assert_eq!(byte_to_char()[b'\n' as usize], 'Ċ');
        assert_eq!(byte_to_char()[b'A' as usize], 'A');
    }

    #[test]
    fn stream_decoder_emits_emoji_once_complete() {
        let t = toy();
        let emoji = "😀";
        let ids = t.encode(emoji).unwrap();
        assert_eq!(ids.len(), 4);
        let mut d = StreamDecoder::new(&t);
        let outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
        assert_eq!(outs, ["", "", "", emoji]);
        assert!(!d.has_pending());
        assert_eq!(d.flush(), "");

        let mut d = StreamDecoder::new(&t);
        assert_eq!(d.push(id_of(&t, "hello")), "hello");
        // An unfinished character followed by a complete token: replaced, then the text.
        let mut d = StreamDecoder::new(&t);
        assert_eq!(d.push(ids[0]), "");
        assert_eq!(d.push(1), "\u{FFFD}<|im_start|>");
        let mut d = StreamDecoder::new(&t);
        d.push(ids[0]);
        assert_eq!(d.flush(), "\u{FFFD}");
    }
}
