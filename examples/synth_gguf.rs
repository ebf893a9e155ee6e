//! Writes the synthetic models of `fastgen::model::synth` (random weights, real metadata) as
//! GGUF files that llama.cpp loads, for recording parity fixtures:
//!
//! ```sh
//! cargo run --release --example synth_gguf -- OUT_DIR [--tokenizer-from FILE.gguf] [NAME...]
//! ```
//!
//! `--tokenizer-from` copies that file's `tokenizer.*` keys (default: SmolLM2's GGUF in
//! `$FASTGEN_HOME/models`, whose 49,152-token vocabulary the synthetic models are sized for).
//! NAMEs select models (default: all); each is written to `OUT_DIR/NAME.gguf`.
use fastgen::gguf::Gguf;
use fastgen::model::synth::SynthModel;
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("synth_gguf: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut tokenizer = None;
    let mut names = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tokenizer-from" => {
                tokenizer = Some(PathBuf::from(args.next().ok_or("--tokenizer-from FILE")?))
            }
            _ if out.is_none() => out = Some(PathBuf::from(a)),
            _ => names.push(a),
        }
    }
    let out = out.ok_or("usage: synth_gguf OUT_DIR [--tokenizer-from FILE.gguf] [NAME...]")?;
    let tokenizer = tokenizer.unwrap_or_else(|| {
        fastgen::fetch::fastgen_home().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let tok = Gguf::open(&tokenizer).map_err(|e| e.to_string())?;
    let models: Vec<SynthModel> = match names.is_empty() {
        true => SynthModel::all(),
        false => (names.iter())
            .map(|n| SynthModel::by_name(n).ok_or(format!("no synthetic model '{n}'")))
            .collect::<Result<_, _>>()?,
    };
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    for m in models {
        let path = out.join(format!("{}.gguf", m.name));
        m.write(&path, Some(&tok)).map_err(|e| e.to_string())?;
        println!("{}", path.display());
    }
    Ok(())
}
