//! The KV cache: one compact buffer per (layer, KV head).
//!
//! Each head holds only the tokens it keeps, in its own buffers, so heads may hold different
//! tokens and different counts (FastGen compresses per head), and allocated bytes follow
//! kept tokens. A *slot* is an index into one head's buffers; a *pos* is a token's position
//! in the sequence. Slots of a head are always in increasing position order (appends come
//! at the end, eviction keeps order), which makes the causal mask a prefix of the slots.

use half::f16;

/// Element type of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// Like llama.cpp's default cache.
    #[default]
    F16,
    F32,
}

impl KvDtype {
    /// Every element type, by which `--kv-dtype` values are parsed.
    pub const ALL: [KvDtype; 2] = [KvDtype::F16, KvDtype::F32];

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
        }
    }

    /// Bytes of one stored element.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }

    /// Bytes of one cache entry (one token of one KV head): its key and its value. Every
    /// count of KV bytes (accounting, budgets, admission, benchmarks) goes through this.
    pub fn entry_bytes(self, head_dim: usize) -> usize {
        2 * head_dim * self.bytes()
    }
}

impl std::str::FromStr for KvDtype {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<KvDtype> {
        let known = KvDtype::ALL;
        known.into_iter().find(|d| d.name() == s).ok_or_else(|| {
            crate::error::Error::InvalidSetting(format!(
                "unknown KV element type '{}' (known: {})",
                s.escape_debug(),
                known.map(KvDtype::name).join(", ")
            ))
        })
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A head's stored keys or values, `[len, head_dim]` row-major, in their storage type (for
/// kernels that read f16 directly instead of converting to f32 first).
#[derive(Debug, Clone, Copy)]
pub enum RowsRef<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
}

impl<'a> RowsRef<'a> {
    /// Rows `r` of `[len, head_dim]`.
    fn slice(self, head_dim: usize, r: std::ops::Range<usize>) -> RowsRef<'a> {
        let r = r.start * head_dim..r.end * head_dim;
        match self {
            RowsRef::F16(v) => RowsRef::F16(&v[r]),
            RowsRef::F32(v) => RowsRef::F32(&v[r]),
        }
    }
    /// Rows `start .. start + n` of `[len, head_dim]` as f32 into `dst` (the storage
    /// format's one row load that kernels without their own conversion use).
    pub fn rows_f32(self, head_dim: usize, start: usize, n: usize, dst: &mut [f32]) {
        let (a, b) = (start * head_dim, (start + n) * head_dim);
        match self {
            RowsRef::F32(v) => dst[..b - a].copy_from_slice(&v[a..b]),
            RowsRef::F16(v) => {
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[a..b], &mut dst[..b - a])
            }
        }
    }
}

/// What attention reads of one (layer, KV head): its keys and values in their storage
/// format and the position of every slot. Kernels take this view, never the cache itself,
/// so a new storage format is a new `RowsRef` variant with its loads, not kernel edits.
#[derive(Debug, Clone, Copy)]
pub struct HeadView<'a> {
    pub keys: RowsRef<'a>,   // [len, head_dim]
    pub values: RowsRef<'a>, // [len, head_dim]
    pub positions: &'a [u32],
    pub head_dim: usize,
}

impl<'a> HeadView<'a> {
    pub fn len(&self) -> usize {
        self.positions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
    /// Number of slots visible to a query at `pos` (causal mask: slots at positions <= pos).
    pub fn visible(&self, pos: u32) -> usize {
        self.positions.partition_point(|&p| p <= pos)
    }
    /// The slots a query at `pos` sees: those at positions `<= pos`, and with a sliding
    /// `window` only the last `window` positions (`pos - window < p`).
    pub fn seen_by(&self, pos: u32, window: Option<u32>) -> std::ops::Range<usize> {
        let lo = match window {
            Some(w) => self
                .positions
                .partition_point(|&p| p as u64 + w as u64 <= pos as u64),
            None => 0,
        };
        let hi = self.visible(pos);
        lo.min(hi)..hi
    }
    /// The view of slots `r` only.
    pub fn slots(self, r: std::ops::Range<usize>) -> HeadView<'a> {
        HeadView {
            keys: self.keys.slice(self.head_dim, r.clone()),
            values: self.values.slice(self.head_dim, r.clone()),
            positions: &self.positions[r],
            head_dim: self.head_dim,
        }
    }
    /// The view of the slots a query at `pos` sees ([`HeadView::seen_by`]).
    pub fn seen(self, pos: u32, window: Option<u32>) -> HeadView<'a> {
        let r = self.seen_by(pos, window);
        self.slots(r)
    }
}

#[derive(Debug, Clone)]
enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Rows {
    fn new(dtype: KvDtype) -> Rows {
        match dtype {
            KvDtype::F16 => Rows::F16(Vec::new()),
            KvDtype::F32 => Rows::F32(Vec::new()),
        }
    }
    fn push(&mut self, row: &[f32]) {
        match self {
            Rows::F16(v) => {
                // Same rounding as `f16::from_f32`, converted a row at a time (F16C).
                let start = v.len();
                v.resize(start + row.len(), f16::ZERO);
                half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut v[start..], row);
            }
            Rows::F32(v) => v.extend_from_slice(row),
        }
    }
    fn view(&self) -> RowsRef<'_> {
        match self {
            Rows::F16(v) => RowsRef::F16(v),
            Rows::F32(v) => RowsRef::F32(v),
        }
    }
    fn reserve(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.reserve(n),
            Rows::F32(v) => v.reserve(n),
        }
    }
    fn reserve_exact(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.reserve_exact(n),
            Rows::F32(v) => v.reserve_exact(n),
        }
    }
    fn shrink_to(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.shrink_to(n),
            Rows::F32(v) => v.shrink_to(n),
        }
    }
    fn capacity(&self) -> usize {
        match self {
            Rows::F16(v) => v.capacity(),
            Rows::F32(v) => v.capacity(),
        }
    }
    fn capacity_bytes(&self) -> usize {
        match self {
            Rows::F16(v) => v.capacity() * 2,
            Rows::F32(v) => v.capacity() * 4,
        }
    }
    fn shrink_to_fit(&mut self) {
        match self {
            Rows::F16(v) => v.shrink_to_fit(),
            Rows::F32(v) => v.shrink_to_fit(),
        }
    }
    /// Removes the first `n` elements.
    fn drop_front(&mut self, n: usize) {
        match self {
            Rows::F16(v) => drop(v.drain(..n)),
            Rows::F32(v) => drop(v.drain(..n)),
        }
    }
    /// Elements `[start, end)` as f32: borrowed for f32 storage, converted into `scratch` for f16.
    fn as_f32<'a>(&'a self, start: usize, end: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            Rows::F32(v) => &v[start..end],
            Rows::F16(v) => {
                scratch.resize(end - start, 0.0);
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[start..end], scratch);
                scratch
            }
        }
    }
    /// Keeps rows whose `keep` flag is set, in order, moving them down in place.
    fn compact(&mut self, dim: usize, keep: &[bool]) {
        fn go<T: Copy>(v: &mut Vec<T>, dim: usize, keep: &[bool]) {
            let mut dst = 0;
            for (src, &k) in keep.iter().enumerate() {
                if k {
                    if dst != src {
                        v.copy_within(src * dim..(src + 1) * dim, dst * dim);
                    }
                    dst += 1;
                }
            }
            v.truncate(dst * dim);
        }
        match self {
            Rows::F16(v) => go(v, dim, keep),
            Rows::F32(v) => go(v, dim, keep),
        }
    }
}

/// Keys (after RoPE) and values of one (layer, KV head).
#[derive(Debug, Clone)]
pub struct HeadCache {
    head_dim: usize,
    keys: Rows,    // [len, head_dim]
    values: Rows,  // [len, head_dim]
    pos: Vec<u32>, // [len]: sequence position of each slot, increasing
}

impl HeadCache {
    pub fn new(head_dim: usize, dtype: KvDtype) -> HeadCache {
        HeadCache {
            head_dim,
            keys: Rows::new(dtype),
            values: Rows::new(dtype),
            pos: Vec::new(),
        }
    }
    pub fn len(&self) -> usize {
        self.pos.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }
    pub fn positions(&self) -> &[u32] {
        &self.pos
    }
    /// Appends one token. Precondition: `pos` is greater than every cached position.
    pub fn push(&mut self, pos: u32, key: &[f32], value: &[f32]) {
        debug_assert!(
            self.pos.last().is_none_or(|&p| p < pos),
            "positions must increase"
        );
        debug_assert_eq!(key.len(), self.head_dim);
        self.keys.push(key);
        self.values.push(value);
        self.pos.push(pos);
    }
    /// Room for `n` more tokens without reallocating.
    pub fn reserve(&mut self, n: usize) {
        self.keys.reserve(n * self.head_dim);
        self.values.reserve(n * self.head_dim);
        self.pos.reserve(n);
    }
    /// Keys of slots `[start, end)` as f32 rows `[end - start, head_dim]`.
    pub fn keys_f32<'a>(
        &'a self,
        start: usize,
        end: usize,
        scratch: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        self.keys
            .as_f32(start * self.head_dim, end * self.head_dim, scratch)
    }
    /// Values of slots `[start, end)` as f32 rows `[end - start, head_dim]`.
    pub fn values_f32<'a>(
        &'a self,
        start: usize,
        end: usize,
        scratch: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        self.values
            .as_f32(start * self.head_dim, end * self.head_dim, scratch)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    /// The head as attention reads it.
    pub fn view(&self) -> HeadView<'_> {
        HeadView {
            keys: self.keys.view(),
            values: self.values.view(),
            positions: &self.pos,
            head_dim: self.head_dim,
        }
    }
    /// Number of slots visible to a query at `pos` (causal mask: slots at positions <= pos).
    pub fn visible(&self, pos: u32) -> usize {
        self.view().visible(pos)
    }
    /// Keeps the slots whose flag is set (`keep.len() == len()`), preserving their order.
    pub fn retain(&mut self, keep: &[bool]) {
        assert_eq!(keep.len(), self.len(), "one keep flag per slot");
        self.keys.compact(self.head_dim, keep);
        self.values.compact(self.head_dim, keep);
        let mut it = keep.iter();
        self.pos.retain(|_| *it.next().unwrap_or(&false));
    }
    /// Removes the first `n` slots (the oldest positions).
    pub fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len());
        self.keys.drop_front(n * self.head_dim);
        self.values.drop_front(n * self.head_dim);
        self.pos.drain(..n);
    }
    /// Room for exactly `n` more tokens (no amortised doubling): for caches that keep
    /// their allocation close to their kept tokens.
    pub fn reserve_exact(&mut self, n: usize) {
        self.keys.reserve_exact(n * self.head_dim);
        self.values.reserve_exact(n * self.head_dim);
        self.pos.reserve_exact(n);
    }
    /// Releases capacity beyond `max(len, slots)` tokens.
    pub fn shrink_to(&mut self, slots: usize) {
        self.keys.shrink_to(slots * self.head_dim);
        self.values.shrink_to(slots * self.head_dim);
        self.pos.shrink_to(slots);
    }
    /// Tokens the buffers hold without reallocating.
    pub fn capacity(&self) -> usize {
        let rows = self.keys.capacity().min(self.values.capacity()) / self.head_dim.max(1);
        rows.min(self.pos.capacity())
    }
    /// Releases capacity beyond the current length.
    pub fn shrink_to_fit(&mut self) {
        self.keys.shrink_to_fit();
        self.values.shrink_to_fit();
        self.pos.shrink_to_fit();
    }
    /// Bytes allocated for keys and values (not positions).
    pub fn allocated_bytes(&self) -> usize {
        self.keys.capacity_bytes() + self.values.capacity_bytes()
    }
}

/// Slots a sliding-window head may hold past its window before [`KvCache::trim_window`]
/// drops the old ones: dropping moves the head's rows, so it happens once per this many
/// tokens, not at every token (attention masks the extra slots by position).
pub const WINDOW_SLACK: usize = 64;

/// All heads of all layers, plus the number of tokens the sequence has seen.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
    heads: Vec<HeadCache>, // [n_layers * n_kv_heads]
    /// Per layer: the sliding window of its attention, if any. Such a layer keeps only
    /// what its window can still see; KV policies leave it alone.
    windows: Vec<Option<u32>>, // [n_layers]
    /// Tokens processed so far: the position the next token takes.
    seq_len: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, n_kv_heads: usize, head_dim: usize, dtype: KvDtype) -> KvCache {
        KvCache {
            n_layers,
            n_kv_heads,
            head_dim,
            dtype,
            heads: vec![HeadCache::new(head_dim, dtype); n_layers * n_kv_heads],
            windows: vec![None; n_layers],
            seq_len: 0,
        }
    }
    /// The same cache with sliding windows on some layers (`windows[l]`, one per layer).
    pub fn with_windows(mut self, windows: Vec<Option<u32>>) -> KvCache {
        assert_eq!(windows.len(), self.n_layers, "one window per layer");
        self.windows = windows;
        self
    }
    /// Layer `l`'s sliding window, if it has one.
    pub fn window(&self, layer: usize) -> Option<u32> {
        self.windows[layer]
    }
    /// In a sliding-window layer, drops the slots that no query from position `next` on
    /// can see, once they are more than [`WINDOW_SLACK`] past the window.
    pub fn trim_window(&mut self, layer: usize, next: u32) {
        let Some(w) = self.windows[layer] else {
            return;
        };
        let most = w as usize + WINDOW_SLACK + 1;
        for head in self.layer_mut(layer) {
            if head.len() > w as usize + WINDOW_SLACK {
                let old = head.view().seen_by(next, Some(w)).start;
                head.drop_front(old);
            }
            // A prompt's ubatch made room past what decoding needs: give it back.
            if head.capacity() > most && head.len() < most {
                head.shrink_to(most);
            }
        }
    }
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    /// Marks `n` more tokens as processed (called by the forward pass after appending them).
    pub fn advance(&mut self, n: usize) {
        self.seq_len += n;
    }
    pub fn head(&self, layer: usize, kv_head: usize) -> &HeadCache {
        &self.heads[layer * self.n_kv_heads + kv_head]
    }
    pub fn head_mut(&mut self, layer: usize, kv_head: usize) -> &mut HeadCache {
        &mut self.heads[layer * self.n_kv_heads + kv_head]
    }
    /// The KV heads of one layer.
    pub fn layer(&self, layer: usize) -> &[HeadCache] {
        &self.heads[layer * self.n_kv_heads..(layer + 1) * self.n_kv_heads]
    }
    pub fn layer_mut(&mut self, layer: usize) -> &mut [HeadCache] {
        &mut self.heads[layer * self.n_kv_heads..(layer + 1) * self.n_kv_heads]
    }
    pub fn heads(&self) -> &[HeadCache] {
        &self.heads
    }
    /// Slots a head of layer `l` holds at most once `tokens` tokens have gone through
    /// (in ubatches of at most `ubatch`).
    fn most_slots(&self, layer: usize, tokens: usize, ubatch: usize) -> usize {
        match self.windows[layer] {
            Some(w) => tokens.min(w as usize + WINDOW_SLACK + ubatch),
            None => tokens,
        }
    }
    /// Room for `n` more tokens in every head, pushed `ubatch` at a time. A sliding-window
    /// head grows by doubling too, but never past what its window holds at most.
    pub fn reserve(&mut self, n: usize, ubatch: usize) {
        let n_kv = self.n_kv_heads;
        for l in 0..self.n_layers {
            let windowed = self.windows[l].is_some();
            let ceiling = self.most_slots(l, usize::MAX, ubatch.min(n));
            for i in l * n_kv..(l + 1) * n_kv {
                let h = &mut self.heads[i];
                let (len, cap) = (h.len(), h.capacity());
                if !windowed {
                    h.reserve(n);
                } else if cap < (len + n).min(ceiling) {
                    let target = (len + n).max(2 * len).min(ceiling);
                    h.reserve_exact(target - len);
                }
            }
        }
    }
    /// Room for exactly `tokens` tokens in every head, allocated now: a cache that will never
    /// evict then holds what a budget reserved for it, not up to twice that by doubling
    /// (a sliding-window head: what its window keeps).
    pub fn reserve_total(&mut self, tokens: usize) {
        let n_kv = self.n_kv_heads;
        for l in 0..self.n_layers {
            let most = self.most_slots(l, tokens, 1);
            for h in &mut self.heads[l * n_kv..(l + 1) * n_kv] {
                h.reserve_exact(most.saturating_sub(h.len()));
            }
        }
    }
    /// Forgets every token from position `len` on, as if only `0..len` had run: for a
    /// cache that evicted nothing (every head holds `0..seq_len`). Returns false, changing
    /// nothing, for any other cache (a sliding window, or eviction, lost positions that
    /// the shorter sequence would still need).
    pub fn truncate(&mut self, len: usize) -> bool {
        // Positions increase strictly below seq_len: holding seq_len of them is holding all.
        if len > self.seq_len || self.heads.iter().any(|h| h.len() != self.seq_len) {
            return false;
        }
        for h in &mut self.heads {
            let keep: Vec<bool> = (0..h.len()).map(|i| i < len).collect();
            h.retain(&keep);
        }
        self.seq_len = len;
        true
    }
    /// Frees every head's room beyond what it holds (a cache kept for later).
    pub fn shrink_to_fit(&mut self) {
        self.heads.iter_mut().for_each(HeadCache::shrink_to_fit);
    }
    /// Cached (slot) entries over all heads.
    pub fn kept_entries(&self) -> usize {
        self.heads.iter().map(|h| h.len()).sum()
    }
    pub fn allocated_bytes(&self) -> usize {
        self.heads.iter().map(|h| h.allocated_bytes()).sum()
    }
    /// Fraction of (layer, KV head, position) entries evicted: `1 - kept / (L * H * n)`.
    pub fn pruned_ratio(&self) -> f64 {
        let all = self.n_layers * self.n_kv_heads * self.seq_len;
        if all == 0 {
            return 0.0;
        }
        1.0 - self.kept_entries() as f64 / all as f64
    }
    /// Bytes a full cache would hold for the tokens seen so far.
    pub fn full_bytes(&self) -> usize {
        self.seq_len * self.n_layers * self.n_kv_heads * self.dtype.entry_bytes(self.head_dim)
    }
    /// Forgets everything (keeps allocations).
    pub fn clear(&mut self) {
        for h in &mut self.heads {
            let n = h.len();
            h.retain(&vec![false; n]);
        }
        self.seq_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: f32) -> Vec<f32> {
        vec![v; 4]
    }

    #[test]
    fn retain_keeps_slot_to_position_order() {
        let mut h = HeadCache::new(4, KvDtype::F32);
        for p in 0..5 {
            h.push(p, &row(p as f32), &row(10.0 + p as f32));
        }
        h.retain(&[true, false, true, false, true]);
        assert_eq!(h.positions(), &[0, 2, 4]);
        let mut s = Vec::new();
        assert_eq!(h.keys_f32(1, 2, &mut s), &row(2.0)[..]);
        assert_eq!(h.values_f32(2, 3, &mut s), &row(14.0)[..]);
        h.push(7, &row(7.0), &row(17.0));
        assert_eq!(h.positions(), &[0, 2, 4, 7]);
        assert_eq!(h.visible(4), 3);
        assert_eq!(h.visible(6), 3);
        assert_eq!(h.visible(7), 4);
    }

    #[test]
    fn truncate_forgets_the_tail_of_a_cache_that_evicted_nothing() {
        let mut kv = KvCache::new(2, 1, 4, KvDtype::F16);
        for p in 0..5 {
            for l in 0..2 {
                kv.head_mut(l, 0).push(p, &row(p as f32), &row(p as f32));
            }
        }
        kv.advance(5);
        assert!(!kv.truncate(6), "longer than it is");
        assert!(kv.truncate(3));
        assert_eq!(kv.seq_len(), 3);
        for l in 0..2 {
            assert_eq!(kv.head(l, 0).positions(), &[0, 1, 2]);
        }
        // One evicted entry: a shorter sequence would need it back, so nothing changes.
        kv.head_mut(1, 0).retain(&[true, false, true]);
        assert!(!kv.truncate(2));
        assert_eq!((kv.seq_len(), kv.head(0, 0).len()), (3, 3));
    }

    #[test]
    fn reserve_total_allocates_exactly_and_pushes_stay_inside() {
        let mut kv = KvCache::new(2, 1, 4, KvDtype::F16);
        kv.head_mut(0, 0).push(0, &row(0.0), &row(0.0));
        kv.reserve_total(100);
        // 100 tokens x 4 elements x 2 bytes, keys and values, in each of 2 heads.
        assert_eq!(kv.allocated_bytes(), 2 * 2 * 100 * 4 * 2);
        for p in 1..100 {
            kv.head_mut(0, 0).push(p, &row(1.0), &row(1.0));
        }
        assert_eq!(kv.allocated_bytes(), 2 * 2 * 100 * 4 * 2);
    }

    #[test]
    fn a_sliding_window_layer_keeps_what_its_window_can_still_see() {
        // Layer 0 global, layer 1 with a window of 10.
        let mut kv = KvCache::new(2, 1, 4, KvDtype::F32).with_windows(vec![None, Some(10)]);
        kv.reserve(1000, 100);
        assert!(kv.head(0, 0).capacity() >= 1000);
        let cap = kv.head(1, 0).capacity();
        assert!((10 + WINDOW_SLACK + 100..1000).contains(&cap), "{cap}");
        for p in 0..200u32 {
            for l in 0..2 {
                kv.head_mut(l, 0).push(p, &row(p as f32), &row(p as f32));
                kv.trim_window(l, p + 1);
            }
            let held = kv.head(1, 0).len();
            assert!(held <= 10 + WINDOW_SLACK, "{held} slots at {p}");
            // Whatever the next query (at p + 1) sees is still there.
            let first = kv.head(1, 0).positions()[0];
            assert!(
                first <= (p + 1).saturating_sub(9),
                "needed position dropped at {p}"
            );
        }
        assert_eq!(kv.head(0, 0).len(), 200);
        let h = kv.head(1, 0);
        let mut s = Vec::new();
        let last = h.len() - 1;
        assert_eq!(h.keys_f32(last, last + 1, &mut s), &row(199.0)[..]);
        assert_eq!(h.positions()[last], 199);
    }

    #[test]
    fn f16_storage_rounds_and_counts_bytes() {
        let mut h = HeadCache::new(4, KvDtype::F16);
        h.reserve(10);
        assert_eq!(h.allocated_bytes(), 2 * 10 * 4 * 2);
        h.push(0, &[1.0, 0.1, -2.5, 65504.0], &row(0.5));
        let mut s = Vec::new();
        let k = h.keys_f32(0, 1, &mut s).to_vec();
        assert_eq!(k[0], 1.0);
        assert_eq!(k[1], f16::from_f32(0.1).to_f32());
        assert_eq!(k[3], 65504.0);
        h.shrink_to_fit();
        assert_eq!(h.allocated_bytes(), 2 * 4 * 2);
    }

    #[test]
    fn heads_hold_different_counts() {
        let mut c = KvCache::new(2, 2, 4, KvDtype::F32);
        for p in 0..3 {
            for l in 0..2 {
                for h in 0..2 {
                    c.head_mut(l, h).push(p, &row(0.0), &row(0.0));
                }
            }
            c.advance(1);
        }
        c.head_mut(1, 0).retain(&[true, false, false]);
        assert_eq!(c.kept_entries(), 3 * 3 + 1);
        assert_eq!(c.head(1, 0).positions(), &[0]);
        assert_eq!(c.full_bytes(), 2 * 3 * 2 * 2 * 4 * 4);
    }
}
