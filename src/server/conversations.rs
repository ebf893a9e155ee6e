//! Kept conversations: each finished request's cache with the tokens it holds, so that
//! the next turn of a chat (whose prompt is the previous prompt, the answer, and the new
//! message) prefills only its new tokens.
//!
//! A request continues a kept cache when that cache's tokens are a prefix of its prompt,
//! its settings are the request's, and the cache can take the new tokens
//! (`CompressedCache::can_extend`: `full` and `fastgen`; FastGen profiles the new turn over
//! what its heads kept and chooses their policies again). The
//! longest such prefix wins; the entry leaves the store while the request runs and comes
//! back, longer, when it ends. Entries hold real memory: they are dropped least recently
//! used first when the store is over its bytes, or when admission needs their room
//! ([`Conversations::shrink_to`]).

use fastgen::compress::{CompressedCache, KvSettings};
use std::sync::{Mutex, MutexGuard};

/// How much of a request's prompt came from a kept conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reuse {
    /// Prompt tokens already in the cache (not run again).
    pub tokens: usize,
    /// Share of those tokens' entries (over layers and KV heads) evicted before this turn.
    pub lost: f64,
}

struct Entry {
    tokens: Vec<u32>,
    cache: CompressedCache,
    bytes: u64,
    /// Larger is more recent.
    used: u64,
}

#[derive(Default)]
struct Store {
    entries: Vec<Entry>,
    bytes: u64,
    clock: u64,
}

pub struct Conversations {
    store: Mutex<Store>,
    /// The most bytes kept at once.
    capacity: u64,
}

/// What `/metrics` shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConversationStats {
    pub entries: usize,
    pub bytes: u64,
}

impl Conversations {
    pub fn new(capacity: u64) -> Conversations {
        Conversations {
            store: Mutex::new(Store::default()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic elsewhere cannot leave the list half-edited (each edit is one push or
        // remove), so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> ConversationStats {
        let s = self.lock();
        ConversationStats {
            entries: s.entries.len(),
            bytes: s.bytes,
        }
    }

    /// Takes the kept cache with the longest token prefix of `prompt` that can continue
    /// into it under `settings`, with how much it saves.
    pub fn take(&self, prompt: &[u32], settings: &KvSettings) -> Option<(CompressedCache, Reuse)> {
        let mut s = self.lock();
        let best = (s.entries.iter().enumerate())
            .filter(|(_, e)| {
                e.tokens.len() < prompt.len()
                    && prompt.starts_with(&e.tokens)
                    && e.cache.settings() == settings
                    && e.cache.can_extend(prompt.len() - e.tokens.len())
            })
            .max_by_key(|(_, e)| e.tokens.len())
            .map(|(i, _)| i)?;
        let e = s.entries.swap_remove(best);
        s.bytes -= e.bytes;
        let reuse = Reuse {
            tokens: e.tokens.len(),
            lost: e.cache.pruned_ratio(),
        };
        Some((e.cache, reuse))
    }

    /// Keeps a finished request's cache, which holds `tokens`; drops the least recently
    /// used entries if the store is over its bytes.
    pub fn keep(&self, tokens: Vec<u32>, mut cache: CompressedCache) {
        cache.shrink_to_fit();
        let bytes = cache.kv().allocated_bytes() as u64;
        if bytes > self.capacity || tokens.is_empty() {
            return;
        }
        let mut s = self.lock();
        // A shorter entry of the same conversation is now useless.
        let stale: Vec<usize> = (s.entries.iter().enumerate())
            .filter(|(_, e)| {
                tokens.starts_with(&e.tokens) && e.cache.settings() == cache.settings()
            })
            .map(|(i, _)| i)
            .collect();
        for i in stale.into_iter().rev() {
            let e = s.entries.swap_remove(i);
            s.bytes -= e.bytes;
        }
        s.clock += 1;
        let used = s.clock;
        s.bytes += bytes;
        s.entries.push(Entry {
            tokens,
            cache,
            bytes,
            used,
        });
        let capacity = self.capacity;
        evict_until(&mut s, capacity);
    }

    /// Drops least recently used entries until at most `bytes` are kept; returns what is
    /// kept.
    pub fn shrink_to(&self, bytes: u64) -> u64 {
        let mut s = self.lock();
        evict_until(&mut s, bytes);
        s.bytes
    }
}

fn evict_until(s: &mut Store, bytes: u64) {
    while s.bytes > bytes {
        let Some(oldest) = (s.entries.iter().enumerate())
            .min_by_key(|(_, e)| e.used)
            .map(|(i, _)| i)
        else {
            break;
        };
        let e = s.entries.swap_remove(oldest);
        s.bytes -= e.bytes;
    }
}
