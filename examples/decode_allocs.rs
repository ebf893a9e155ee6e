//! Counts heap allocations made while decoding (after a prefill and a first decode step have
//! sized the buffers): the decode loop should make none.
//!
//! `cargo run --release --example decode_allocs [-- MODEL [TOKENS]]`
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("smollm2", |s| s.as_str());
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let model = fastgen::model::Model::load(&fastgen::fetch::resolve_model(name)?)?;
    let prose = fastgen::bench::prose_tokens(&model, 300 + steps)?;
    let mut cache = model.new_cache(fastgen::kv_cache::KvDtype::F16);
    // Room for every token up front, as the forward pass reserves per call.
    cache.reserve(300 + steps, fastgen::model::UBATCH);
    let mut ws = fastgen::model::Workspace::default();
    model.prefill(&prose[..300], &mut cache, &mut ws)?;
    model.decode(prose[300], &mut cache, &mut ws)?;
    let before = ALLOCS.load(Ordering::Relaxed);
    for &t in &prose[301..300 + steps] {
        model.decode(t, &mut cache, &mut ws)?;
    }
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    println!("{name}: {n} allocations in {} decode steps", steps - 1);
    Ok(())
}
