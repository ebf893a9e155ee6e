//! Bad input gets one clear line on stderr and a non-zero exit, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn fastgen(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fastgen"))
        .args(args)
        .output()
        .expect("fastgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), stderr)
}

/// Runs and checks the failure shape; returns stderr for the caller's own assertions.
fn fails(args: &[&str]) -> String {
    let (code, stderr) = fastgen(args);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error"),
        "{args:?}: last line should be an error: {stderr}"
    );
    stderr
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fastgen-cli-errors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A minimal GGUF v3 writer: string metadata and tensor infos with zeroed data.
fn write_gguf(path: &Path, kv: &[(&str, &str)], tensors: &[(&str, &[u64], u32)]) {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, t: &str| {
        b.extend((t.len() as u64).to_le_bytes());
        b.extend(t.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        s(&mut b, k);
        b.extend(8u32.to_le_bytes());
        s(&mut b, v);
    }
    for (name, dims, ty) in tensors {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(0u64.to_le_bytes());
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(vec![0u8; 4096]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn unknown_model_name() {
    let e = fails(&["run", "--model", "no-such-model", "hi"]);
    assert!(e.contains("no-such-model"), "{e}");
}

#[test]
fn file_that_is_not_gguf() {
    let p = tmp_dir("notgguf").join("readme.gguf");
    std::fs::write(&p, "this is a text file, not a model\n".repeat(10)).unwrap();
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    assert!(e.contains("not a GGUF file"), "{e}");
}

#[test]
fn truncated_gguf() {
    let model = fastgen::fetch::ensure_model("smollm2").unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let dir = tmp_dir("truncated");
    for cut in [10usize, 1000, 2_000_000, bytes.len() - 1] {
        let p = dir.join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
        assert!(e.contains("GGUF"), "cut at {cut}: {e}");
    }
}

#[test]
fn absurd_counts_in_header() {
    let p = tmp_dir("absurd").join("absurd.gguf");
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes()); // tensor count
    b.extend(1u64.to_le_bytes());
    b.extend(vec![0u8; 64]);
    std::fs::write(&p, b).unwrap();
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    assert!(e.contains("malformed GGUF"), "{e}");
}

#[test]
fn unsupported_architecture() {
    let p = tmp_dir("arch").join("mamba.gguf");
    write_gguf(&p, &[("general.architecture", "mamba")], &[]);
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    assert!(e.contains("unsupported architecture 'mamba'"), "{e}");
}

#[test]
fn unsupported_tensor_type() {
    let p = tmp_dir("ttype").join("iq2_xxs.gguf");
    // Type 16 is IQ2_XXS, which fastgen does not run.
    write_gguf(
        &p,
        &[("general.architecture", "llama")],
        &[("token_embd.weight", &[32, 4], 16)],
    );
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    assert!(
        e.contains("unsupported tensor type") && e.contains("IQ2_XXS"),
        "{e}"
    );
}

#[test]
fn prompt_longer_than_context() {
    let dir = tmp_dir("ctx");
    let p = dir.join("ids.json");
    let ids: Vec<u32> = (0..8193).map(|i| 100 + i % 1000).collect();
    std::fs::write(&p, serde_json::to_string(&ids).unwrap()).unwrap();
    let e = fails(&[
        "run",
        "--prompt-ids",
        p.to_str().unwrap(),
        "--max-tokens",
        "1",
    ]);
    assert!(e.contains("8193 tokens") && e.contains("8192"), "{e}");
}

#[test]
fn missing_prompt_file() {
    let e = fails(&["run", "--prompt-file", "/nonexistent/prompt.txt"]);
    assert!(e.contains("/nonexistent/prompt.txt"), "{e}");
}

#[test]
fn out_of_range_settings() {
    let e = fails(&["run", "--top-p", "1.5", "hi"]);
    assert!(e.contains("top"), "{e}");
    let e = fails(&["run", "--temperature=-1", "hi"]);
    assert!(e.contains("temperature"), "{e}");
}

/// Runs and expects success; returns stdout.
fn succeeds(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fastgen"))
        .args(args)
        .output()
        .expect("fastgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} should succeed: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The templates of issue 18 that took the process down, each with the limit that stops it.
const HOSTILE_TEMPLATES: &[(&str, &str)] = &[
    ("{{ 'x' * 100000000 }}", "output limit"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "memory limit",
    ),
    ("{{ (messages | tojson) * 1000000 }}", "output limit"),
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "instructions",
    ),
];

#[test]
fn hostile_chat_templates_are_refused_in_one_line() {
    let dir = tmp_dir("hostile-templates");
    for (i, (src, limit)) in HOSTILE_TEMPLATES.iter().enumerate() {
        let p = dir.join(format!("t{i}.jinja"));
        std::fs::write(&p, src).unwrap();
        let e = fails(&[
            "run",
            "--chat-template",
            p.to_str().unwrap(),
            "--max-tokens",
            "1",
            "hi",
        ]);
        let last = e.trim_end().lines().last().unwrap();
        assert!(
            last.contains(&format!("chat template file {}", p.display())) && last.contains(limit),
            "{src}: {e}"
        );
    }
}

#[test]
fn a_template_that_does_not_compile_spares_raw_and_tokenize() {
    let dir = tmp_dir("broken-template");
    let model = dir.join("broken-template.gguf");
    common::synth_with_template(&model, "{% for %}");
    let m = model.to_str().unwrap();
    // tokenize and --raw never compile the template.
    let ids = succeeds(&["tokenize", "-m", m, "--text", "hello", "--json"]);
    assert!(ids.starts_with('['), "{ids}");
    succeeds(&["run", "-m", m, "--raw", "--max-tokens", "2", "hello"]);
    // A chat prompt names the template and the way around it.
    let e = fails(&["run", "-m", m, "--max-tokens", "2", "hello"]);
    assert!(
        e.contains("broken-template.gguf's tokenizer.chat_template does not compile")
            && e.contains("--raw"),
        "{e}"
    );
    // --chat-template replaces it.
    let good = dir.join("chatml.jinja");
    std::fs::write(
        &good,
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
    )
    .unwrap();
    succeeds(&[
        "run",
        "-m",
        m,
        "--chat-template",
        good.to_str().unwrap(),
        "--max-tokens",
        "2",
        "hello",
    ]);
}

#[test]
fn prompt_files_are_bounded_before_they_are_read() {
    let dir = tmp_dir("big-prompt");
    // SmolLM2's context is 8,192 tokens: a prompt file may hold 64 bytes per token (512 KiB),
    // at least 1 MiB. Under that limit but past the context, a prompt is refused after
    // tokenizing, before the FastGen cache is built for it.
    let cases: [(&str, usize, &[&str]); 2] = [
        (
            "2mb.txt",
            46_000,
            &["prompt file", "larger than the limit of 1048576 bytes"],
        ),
        (
            "900kb.txt",
            20_000,
            &["does not fit in the context of 8192 tokens"],
        ),
    ];
    for (name, repeats, want) in cases {
        let p = dir.join(name);
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(repeats);
        std::fs::write(&p, text).unwrap();
        let e = fails(&[
            "run",
            "--prompt-file",
            p.to_str().unwrap(),
            "--max-tokens",
            "1",
        ]);
        assert!(want.iter().all(|w| e.contains(w)), "{name}: {e}");
    }
}

/// Names read from the file (architecture, tensor names, metadata keys, tokenizer names) come
/// back escaped and cut: a 100 KB architecture name full of newlines gives one short line.
#[test]
fn names_from_the_file_are_escaped_and_bounded() {
    let dir = tmp_dir("names");
    let huge = "evil\n\u{1b}[31m".repeat(10_000); // 100 KB, 10,000 newlines
    let huge = huge.as_str();
    let one_line = |e: &str, what: &str, named: &[&str]| {
        let lines: Vec<&str> = e.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "{what}: {} lines", lines.len());
        assert!(e.len() < 1000, "{what}: {} bytes", e.len());
        assert!(!e.contains('\u{1b}'), "{what}: raw escape in {e}");
        for n in named {
            assert!(e.contains(n), "{what}: {e} should name {n}");
        }
    };

    let p = dir.join("arch.gguf");
    write_gguf(&p, &[("general.architecture", huge)], &[]);
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    one_line(
        &e,
        "architecture",
        &[
            "unsupported architecture 'evil\\n\\u{1b}[31mevil",
            "(100000 bytes in all)",
            "general.architecture",
        ],
    );

    let p = dir.join("tensor.gguf");
    let name = format!("{huge}.weight");
    write_gguf(
        &p,
        &[("general.architecture", "llama")],
        &[(&name, &[32, 4], 16)],
    );
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    one_line(&e, "tensor name", &["IQ2_XXS", "tensor 'evil\\n"]);

    let p = dir.join("dupkey.gguf");
    write_gguf(&p, &[(huge, "a"), (huge, "b")], &[]);
    let e = fails(&["run", "--model", p.to_str().unwrap(), "hi"]);
    one_line(&e, "duplicate key", &["duplicate metadata key 'evil\\n"]);

    let p = dir.join("tokmodel.gguf");
    write_gguf(
        &p,
        &[
            ("general.architecture", "llama"),
            ("tokenizer.ggml.model", huge),
        ],
        &[],
    );
    let e = fails(&["tokenize", "-m", p.to_str().unwrap(), "--text", "hi"]);
    one_line(&e, "tokenizer model", &["tokenizer.ggml.model", "'evil\\n"]);
}

/// Weights holding NaN used to give token 0 and exit 0: generation now stops at the first
/// non-finite logits with one line naming the problem and the step.
#[test]
fn nan_weights_fail_generation_in_one_line() {
    let p = tmp_dir("nan").join("nan-norm.gguf");
    common::synth_with_nan(&p);
    let m = p.to_str().unwrap();
    for args in [
        &[
            "run",
            "-m",
            m,
            "--raw",
            "--max-tokens",
            "4",
            "Once upon a time",
        ][..],
        &[
            "run",
            "-m",
            m,
            "--raw",
            "--max-tokens",
            "4",
            "--temperature",
            "0.8",
            "hi",
        ][..],
    ] {
        let e = fails(args);
        let last = e.trim_end().lines().last().unwrap();
        assert_eq!(
            last,
            "error: the model produced NaN logits at step 0 of generation: do the weights hold \
             NaN or inf?",
            "{e}"
        );
    }
}
