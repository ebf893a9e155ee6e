//! The KV options of `fastgen run` and `fastgen profile`: bad settings fail with one line
//! naming the setting (before any model is loaded); `--json` carries the KV accounting;
//! `profile` writes the policy map as SVG and PNG.

use std::process::Command;

fn fastgen(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fastgen"))
        .args(args)
        .output()
        .expect("fastgen runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn tmp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fastgen-cli-kv-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_kv_settings_name_the_setting_before_loading() {
    let cases: &[(&[&str], &str)] = &[
        (&["--kv", "streaming"], "--kv 'streaming'"),
        (&["--kv", "fixed:special+foo"], "'foo'"),
        (&["--recovery", "1.5"], "--recovery"),
        (&["--recovery", "-0.1"], "--recovery"),
        (&["--r-local", "2"], "--r-local"),
        (&["--r-frequent", "-1"], "--r-frequent"),
        (&["--gqa-agg", "max"], "--gqa-agg"),
        (&["--hh-scores", "max"], "--hh-scores"),
        (&["--kv-budget", "1.5"], "--kv-budget"),
        (&["--kv-budget", "12XB"], "--kv-budget"),
        (&["--kv", "h2o", "--kv-budget", "0.5"], "--kv-budget"),
        (&["--kv", "fastgen-papers"], "--kv 'fastgen-papers'"),
        (&["--profile-rows", "last:0"], "--profile-rows"),
        (&["--candidates", "special,special+punct"], "--candidates"),
        (&["--kv", "window", "--window-ratio", "0"], "--window-ratio"),
        (
            &["--kv", "window", "--window-tokens", "0"],
            "--window-tokens",
        ),
        (&["--kv", "snapkv", "--snap-window", "0"], "--snap-window"),
        (&["--kv", "snapkv", "--snap-kernel", "6"], "--snap-kernel"),
        (&["--kv", "adakv", "--snap-budget", "0"], "--snap-budget"),
        (&["--kv", "adakv", "--snap-budget", "-0.5"], "--snap-budget"),
        (&["--kv", "snapkv", "--snap-pool", "min"], "--snap-pool"),
        (&["--kv", "snapkv", "--kv-budget", "0.5"], "--kv-budget"),
    ];
    for cmd in ["run", "profile"] {
        for (args, want) in cases {
            // A model that does not exist: the setting must be refused first.
            let mut all = vec![cmd, "--model", "no-such-model", "hi"];
            all.extend_from_slice(args);
            let (code, _, stderr) = fastgen(&all);
            assert_ne!(code, 0, "{all:?}");
            assert!(!stderr.contains("panicked"), "{all:?}: {stderr}");
            let last = stderr.trim_end().lines().last().unwrap_or("");
            assert!(
                last.starts_with("error: invalid setting"),
                "{all:?}: {stderr}"
            );
            assert!(last.contains(want), "{all:?}: {last}");
        }
    }
}

#[test]
fn run_json_has_the_kv_accounting() {
    let dir = tmp_dir("json");
    let json = dir.join("out.json");
    // `run` on a short raw prompt with `extra` options: (stderr, the --json document).
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--raw",
            "The quick brown fox jumps over the lazy dog. It was, in fact, very lazy.",
            "--max-tokens",
            "6",
            "--json",
            json.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, _, stderr) = fastgen(&args);
        assert_eq!(code, 0, "{stderr}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (stderr, doc)
    };
    // The default defers compression: so short a sequence stays whole, and says so.
    let (stderr, doc) = run(&[]);
    assert!(
        stderr.contains(
            "kv fastgen T=0.92 replay:128 grace:32 hh:causal gqa:mean from:512: not compressed"
        ),
        "{stderr}"
    );
    assert_eq!(doc["kv"]["pruned_ratio"], 0.0);
    assert!(doc["kv"]["compressed_at"].is_null(), "{}", doc["kv"]);
    assert_eq!(doc["kv"]["compress_from"], 512);

    // Compression from the prompt on: the accounting of the chosen policies.
    let (stderr, doc) = run(&["--compress-from", "0"]);
    assert!(
        stderr.contains("kv fastgen T=0.92 replay:128 grace:32 hh:causal gqa:mean: pruned"),
        "{stderr}"
    );
    let kv = &doc["kv"];
    assert_eq!(
        kv["compressed_at"].as_u64().unwrap() as usize,
        doc["prompt_ids"].as_array().unwrap().len()
    );
    for key in [
        "policy",
        "recovery",
        "pruned_ratio",
        "pruned_ratio_mean",
        "kv_bytes_full",
        "kv_bytes_allocated",
        "score_bytes",
        "profile_ms",
        "policies",
        "head_recovery",
    ] {
        assert!(!kv[key].is_null(), "kv.{key} missing: {kv}");
    }
    assert_eq!(kv["policy"], "fastgen");
    assert_eq!(kv["recovery"], 0.92);
    let policies = kv["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 30);
    assert_eq!(policies[0].as_array().unwrap().len(), 3);
    assert_eq!(kv["head_recovery"].as_array().unwrap().len(), 30);
    let full = kv["kv_bytes_full"].as_u64().unwrap();
    let pruned = kv["pruned_ratio"].as_f64().unwrap();
    assert!(full > 0 && (0.0..1.0).contains(&pruned));

    // Budget mode reports the T it picked, in the summary and the JSON. (The default grace
    // window would keep the whole of so short a prompt.)
    let (stderr, doc) = run(&["--kv-budget", "70%", "--grace", "0", "--compress-from", "0"]);
    assert!(
        stderr.contains("kv fastgen budget 70% kept replay:128 hh:causal gqa:mean (picked T="),
        "{stderr}"
    );
    let t = doc["kv"]["recovery"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&t), "{t}");
    assert_eq!(doc["kv"]["budget_met"], true);
}

#[test]
fn profile_draws_the_policy_map() {
    let dir = tmp_dir("profile");
    let svg = dir.join("map.svg");
    let json = dir.join("kv.json");
    let (code, stdout, stderr) = fastgen(&[
        "profile",
        "--raw",
        "Attention heads have habits: some look at the first token, some at punctuation, some nearby.",
        "--recovery",
        "0.9",
        "--out",
        svg.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("layer 29:"), "{stdout}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("layer 29") && text.contains("KV head 2"));
    let png = std::fs::read(dir.join("map.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["recovery"], 0.9);
    // Each head's recovery reaches T unless it is full.
    for (layer, recs) in doc["policies"]
        .as_array()
        .unwrap()
        .iter()
        .zip(doc["head_recovery"].as_array().unwrap())
    {
        for (p, r) in layer
            .as_array()
            .unwrap()
            .iter()
            .zip(recs.as_array().unwrap())
        {
            assert!(p == "full" || r.as_f64().unwrap() >= 0.9, "{p} {r}");
        }
    }
}
