//! Bad input gets one clear line on stderr and a non-zero exit, never a panic.

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
