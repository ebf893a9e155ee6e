//! The real `fastgen` command on an input, as a child process under a memory limit
//! (RLIMIT_AS) and a deadline, classified by how it ended and what it printed.

use crate::outcome::{cut, Outcome};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `fastgen` binary beside this example (`target/release/examples/fuzz` ->
/// `target/release/fastgen`), or `$FASTGEN_BIN`.
pub fn fastgen_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FASTGEN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("fastgen"))
        .expect("target directory")
}

/// Runs `fastgen ARGS` with at most `memory` bytes of address space for `timeout`.
pub fn run(args: &[&str], memory: u64, timeout: Duration) -> Outcome {
    let mut cmd = Command::new(fastgen_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: memory,
                rlim_max: memory,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Crash(format!("could not start fastgen: {e}")),
    };
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t0.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Outcome::Crash(format!("waiting for fastgen: {e}")),
        }
    };
    let text = reader.join().unwrap_or_default();
    match status {
        None => Outcome::Hang(format!("no exit within {} s", timeout.as_secs())),
        Some(st) => classify(st.code(), st.signal(), &text),
    }
}

/// ok: exit 0. clear: a non-zero exit whose stderr ends with the one `error: ` line, with
/// only `warning: ` lines before it. crash: a signal or a panic.
pub fn classify(code: Option<i32>, signal: Option<i32>, stderr: &str) -> Outcome {
    if stderr.contains("panicked") || stderr.contains("memory allocation of") {
        return Outcome::Crash(cut(stderr.trim(), 400));
    }
    if let Some(sig) = signal {
        return Outcome::Crash(format!("signal {sig}: {}", cut(stderr.trim(), 300)));
    }
    if code == Some(0) {
        return Outcome::Ok;
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors = lines.iter().filter(|l| l.starts_with("error")).count();
    let others_are_warnings = (lines.iter().rev().skip(1)).all(|l| l.starts_with("warning: "));
    match lines.last() {
        Some(last)
            if last.starts_with("error: ")
                && last.len() > "error: ".len()
                && last.len() <= 2000
                && errors == 1
                && others_are_warnings =>
        {
            Outcome::Clear(cut(last, 300))
        }
        _ => Outcome::Unclear(format!("exit {code:?}: {:?}", cut(stderr, 400))),
    }
}
