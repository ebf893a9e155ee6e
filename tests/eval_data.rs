//! The evaluation data packages fetch and parse.

#[test]
fn alpaca_gsm8k_longbench_write_and_essays_load() {
    let a = fastgen::eval::data::alpaca(1000).unwrap();
    assert_eq!(a.len(), 805);
    assert!(a[0].instruction.contains("Broadway"));
    let g = fastgen::eval::data::gsm8k(1000).unwrap();
    assert_eq!(g.len(), 100);
    assert!(g
        .iter()
        .all(|c| !c.answer().is_empty() && c.answer().parse::<f64>().is_ok()));
    let w = fastgen::eval::data::longbench_write(1000).unwrap();
    assert_eq!(w.len(), 60);
    assert!(w[0].prompt.contains("Christmas Cactus") && w[0].length == 100);
    assert!(w.iter().all(|p| !p.kind.is_empty() && p.length > 0));
    let e = fastgen::eval::data::essays().unwrap();
    assert!(e.len() > 500_000, "{} bytes of essays", e.len());
}
