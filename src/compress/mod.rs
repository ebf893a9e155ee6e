//! KV-cache compression: FastGen (Ge et al., ICLR 2024), adaptive per KV head, and the
//! baselines in the same engine (`fastgen::compress::CompressedCache`, ...). The method and this project's choices: `docs/FASTGEN.md`.
//!
//! - `classes`: token classes from the vocabulary (special, punctuation, sink positions).
//! - `policy`: parts and hybrids as data; `keep_set`, a pure function deciding what a head
//!   keeps.
//! - `profile`: recovery of every candidate per KV head from prefill attention, in one pass
//!   with `O(S)` memory per query head; `choose_policy`.
//! - `replay`: recovery measured by replaying the last prompt rows as decode steps.
//! - `choice`: the decision rule, written once: the first candidate reaching T.
//! - `budget`: the largest T whose choices fit a memory budget.
//! - `snapkv`: the SnapKV and Ada-KV baselines (one-shot eviction by the observation
//!   window's attention).
//! - `settings`: `KvSettings` (method, T, ratios, GQA aggregation...) and their validation.
//! - `head`: one KV head's policy and scores, its compression and its eviction step
//!   (Algorithm 2).
//! - `cache`: `CompressedCache`, one sequence's heads: profiling inside prefill (or until
//!   the deferred length), choosing, then evicting after each decode step.
//! - `stats`: `KvReport`, the accounting of every run.
//! - `factory`: `CacheFactory`, the one way front ends make a model's empty caches.
//! - `plot`: the layer x KV-head policy map (the paper's Figure 3 for our models).

pub mod budget;
pub mod cache;
pub mod choice;
pub mod classes;
pub mod factory;
pub mod head;
pub mod plot;
pub mod policy;
pub mod profile;
pub mod replay;
pub mod settings;
pub mod snapkv;
pub mod stats;

pub use cache::CompressedCache;
pub use classes::TokenClasses;
pub use factory::CacheFactory;
pub use head::{compress_head, evict_step, HeadState, DECODE_SPARE};
pub use policy::{
    default_candidates, keep_set, local_candidates, parse_candidates, parse_candidates_or_default,
    Budget, Params, Part, Policy,
};
pub use profile::{choose_policy, GqaAgg, HeadProfile, ProfileRows};
pub use replay::{replay_recovery, Tail};
pub use settings::{
    FastGenSettings, HhScores, KvBudget, KvKind, KvSettings, PartSettings, DEFAULT_COMPRESS_FROM,
    DEFAULT_GQA_AGG, DEFAULT_RECOVERY,
};
pub use snapkv::{Pool, SnapChoice, SnapSettings};
pub use stats::{KvReport, KvStats};
