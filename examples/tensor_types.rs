//! Lists a GGUF file's tensors by type: `cargo run --release --example tensor_types -- FILE`.
use std::collections::BTreeMap;
fn main() {
    let path = std::env::args().nth(1).expect("give a GGUF file");
    let g = fastgen::gguf::Gguf::open(std::path::Path::new(&path)).expect("open");
    let mut by: BTreeMap<String, (usize, usize, Vec<String>)> = BTreeMap::new();
    for t in &g.tensors {
        let kind = t
            .name
            .trim_start_matches(|c: char| !c.is_ascii_alphabetic() || c == 'b')
            .to_string();
        let key = format!(
            "{} {}",
            t.ty.name(),
            t.name.split('.').rev().nth(1).unwrap_or("")
        );
        let e = by.entry(key).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        if e.2.len() < 2 {
            e.2.push(format!("{} {:?}", kind, t.dims));
        }
    }
    for (k, (n, b, ex)) in by {
        println!("{k:30} {n:4} {:8.2} MiB  {ex:?}", b as f64 / 1048576.0);
    }
}
