//! Empty caches for one model, made the same way by every front end (CLI, eval, bench,
//! server): the token classes FastGen reads come from one pass over the vocabulary, with and
//! without whitespace counted as punctuation, and each cache takes its own settings.

use super::{CompressedCache, KvSettings, TokenClasses};
use crate::error::Result;
use crate::kv_cache::KvDtype;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use std::sync::Arc;

/// Makes the caches of one model with one storage type.
pub struct CacheFactory {
    cfg: ModelConfig,
    dtype: KvDtype,
    /// Indexed by `KvSettings::punct_whitespace`.
    classes: [Arc<TokenClasses>; 2],
}

impl CacheFactory {
    pub fn new(cfg: &ModelConfig, tokenizer: &Tokenizer, dtype: KvDtype) -> CacheFactory {
        CacheFactory {
            cfg: cfg.clone(),
            dtype,
            classes: TokenClasses::both(tokenizer).map(Arc::new),
        }
    }

    /// The element type of the caches it makes.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// An empty cache with these settings (checked: an invalid setting is an error).
    pub fn cache(&self, settings: &KvSettings) -> Result<CompressedCache> {
        let classes = self.classes[usize::from(settings.parts.punct_whitespace)].clone();
        CompressedCache::new(&self.cfg, self.dtype, Arc::new(settings.clone()), classes)
    }
}
