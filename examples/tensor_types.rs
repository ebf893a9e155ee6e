//! Bytes of a GGUF file's tensors by type and role (what a decode step streams):
//! `cargo run --release --example tensor_types -- FILE.gguf`.
use std::collections::BTreeMap;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: tensor_types FILE.gguf");
        std::process::exit(2);
    };
    let g = match fastgen::gguf::Gguf::open(std::path::Path::new(&path)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    // "blk.3.ffn_up.weight" -> "ffn_up.weight"
    let mut by: BTreeMap<(String, &str), (usize, usize, Vec<usize>)> = BTreeMap::new();
    for t in &g.tensors {
        let role = t.name.strip_prefix("blk.").map_or(t.name.as_str(), |r| {
            r.split_once('.').map_or(r, |(_, rest)| rest)
        });
        let e = by.entry((role.to_string(), t.ty.name())).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        e.2 = t.dims.clone();
    }
    println!(
        "{:24} {:5} {:>5} {:>10}  dims",
        "tensor", "type", "count", "MiB"
    );
    for ((role, ty), (n, bytes, dims)) in by {
        let mib = bytes as f64 / (1 << 20) as f64;
        println!("{role:24} {ty:5} {n:>5} {mib:>10.2}  {dims:?}");
    }
}
