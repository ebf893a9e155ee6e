//! `fastgen eval` and `fastgen bench --kv`: bad input fails with one clear error line
//! (before the model loads where it can), never a panic.

use std::process::Command;

fn fails(args: &[&str], says: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_fastgen"))
        .args(args)
        .output()
        .expect("fastgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error") && l.contains(says)),
        "{args:?}: expected an error naming {says}: {stderr}"
    );
}

#[test]
fn eval_rejects_bad_settings() {
    fails(&["eval", "agree", "--n", "0"], "--n");
    fails(&["eval", "gsm8k", "--max-tokens", "0"], "--max-tokens");
    fails(&["eval", "ppl", "--ctx", "0"], "--ctx");
    fails(&["eval", "ppl", "--recovery", "1.5"], "--recovery");
    fails(&["eval", "niah", "--kv", "streaming"], "--kv 'streaming'");
    fails(
        &["eval", "niah", "--depths", "150", "--lengths", "256"],
        "--depths",
    );
    fails(
        &["eval", "ppl", "--ctx", "100000", "--eval", "8"],
        "context",
    );
    fails(&["eval", "sweep", "--kv-dtype", "f8"], "f8");
    // An unknown yardstick names the valid ones; a yardstick that runs needs its sizes.
    fails(
        &["eval", "sweep", "--tasks", "ppl,humaneval,bogus"],
        "'bogus': the yardsticks are ppl, niah, agree, gsm8k, humaneval, longgen",
    );
    fails(&["eval", "sweep", "--humaneval-n", "0"], "--humaneval-n");
    fails(
        &[
            "eval",
            "sweep",
            "--tasks",
            "longgen",
            "--longgen-tokens",
            "3",
        ],
        "--longgen-tokens",
    );
    fails(&["eval", "sweep", "--recoveries", "0.9,1.5"], "1.5");
    fails(&["eval", "longgen", "--n", "0"], "--n");
    fails(&["eval", "longgen", "--tokens", "3"], "--tokens");
    fails(&["eval", "longgen", "--recovery", "2"], "--recovery");
    fails(&["bench", "--kv", "full,bogus"], "--kv 'bogus'");
}

/// Runs fastgen with no Python on PATH: it must fail before loading a model, saying so.
fn fails_without_python(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_fastgen"))
        .args(args)
        .env("PATH", "/nonexistent")
        .output()
        .expect("fastgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error") && l.contains("Python 3")),
        "{args:?}: {stderr}"
    );
    assert!(
        !stderr.contains("[ppl"),
        "{args:?} started the model work: {stderr}"
    );
}

#[test]
fn humaneval_rejects_bad_settings_and_a_missing_python() {
    fails(&["eval", "humaneval", "--n", "0"], "--n");
    fails(&["eval", "humaneval", "--timeout", "0"], "--timeout");
    fails(&["eval", "humaneval", "--recovery", "2"], "--recovery");
    // Without Python 3 the command stops before loading a model, saying what is missing;
    // so does a sweep that runs HumanEval.
    fails_without_python(&["eval", "humaneval", "--n", "1"]);
    fails_without_python(&["eval", "sweep", "--tasks", "humaneval"]);
}
