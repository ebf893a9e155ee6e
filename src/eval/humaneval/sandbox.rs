//! Runs one Python program in a child process that cannot hang, flood or reach the network:
//! a wall-clock limit after which its whole process group (and, where the kernel allows, its
//! whole PID namespace) is killed; a fresh scratch directory as its working directory and
//! HOME; a network namespace of its own, with no interface up, when `unshare` works here,
//! and in any case a guard that refuses socket creation; address-space, CPU and file-size limits; stdout and
//! stderr captured up to a bounded tail.
//!
//! The programs are a model's answers, not an attacker's: this keeps a mistaken or looping
//! answer from hanging or harming the evaluation; it is not a security boundary.

use crate::error::{Error, Result};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes kept of each of stdout and stderr (the end: a traceback's last line is the error).
pub const OUTPUT_TAIL: usize = 4096;

/// How the child is cut off from the network (and from outliving its time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// New network and PID namespaces: no interfaces but a down loopback, and every process
    /// the program starts dies with it.
    NetPid,
    /// A new network namespace only.
    Net,
    /// No namespace could be created here: only the in-process socket guard.
    GuardOnly,
}

impl Isolation {
    pub fn label(self) -> &'static str {
        match self {
            Isolation::NetPid => "network and PID namespaces + socket guard",
            Isolation::Net => "network namespace + socket guard",
            Isolation::GuardOnly => "socket guard only (unshare unavailable)",
        }
    }
}

/// `unshare` flags to try, strongest first. Without CAP_SYS_ADMIN (an unprivileged user, or
/// root in some containers) the namespaces may still be allowed inside a user namespace
/// that maps us to root.
const UNSHARE_FLAGS: [(Isolation, &[&str]); 4] = [
    (
        Isolation::NetPid,
        &["--net", "--pid", "--fork", "--kill-child"],
    ),
    (
        Isolation::NetPid,
        &[
            "--map-root-user",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
        ],
    ),
    (Isolation::Net, &["--net"]),
    (Isolation::Net, &["--map-root-user", "--net"]),
];

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub wall: Duration,
    /// RLIMIT_AS in bytes.
    pub memory: u64,
    /// RLIMIT_FSIZE in bytes (largest file the program may write).
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(10),
            memory: 1 << 30,
            file_size: 16 << 20,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0 after the program's last statement (not an early `sys.exit(0)`).
    Passed,
    /// An exception, a non-zero exit, a signal, or an exit before the end.
    Failed,
    /// Killed at the wall-clock limit.
    TimedOut,
}

/// What one run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub outcome: Outcome,
    /// Exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// The last [`OUTPUT_TAIL`] bytes of each stream, lossily decoded.
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    /// One line saying why a run failed: the timeout, or the last line of stderr.
    pub fn reason(&self) -> String {
        match self.outcome {
            Outcome::Passed => String::new(),
            Outcome::TimedOut => "timed out".to_string(),
            Outcome::Failed => {
                let last = self.stderr.lines().rev().find(|l| !l.trim().is_empty());
                let line = match (last, self.exit_code) {
                    (Some(l), _) => l.trim().to_string(),
                    (None, Some(0)) => "exited before the end of the program".to_string(),
                    (None, Some(c)) => format!("exit code {c}"),
                    (None, None) => "killed by a signal".to_string(),
                };
                line.chars().take(200).collect()
            }
        }
    }
}

/// Sets the limits and disables sockets, then runs the program as `__main__`, and prints the
/// marker only if the program ran to its end. `{...}` fields are filled in by `guard_source`.
const GUARD: &str = r#"import resource, runpy, socket, sys, _socket

for _limit, _value in ((resource.RLIMIT_AS, {memory}), (resource.RLIMIT_CPU, {cpu}),
                       (resource.RLIMIT_FSIZE, {file_size}), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_limit, (_value, _value))


def _refuse(*args, **kwargs):
    raise PermissionError("network access is disabled in the evaluation sandbox")


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _refuse()


socket.socket = _socket.socket = _NoSocket
socket.socketpair = socket.fromfd = socket.create_connection = socket.create_server = _refuse

sys.argv = ["program.py"]
runpy.run_path("program.py", run_name="__main__")
sys.stdout.flush()
print("\n{marker}", flush=True)
"#;

/// A Python 3 interpreter and the strongest isolation this machine allows.
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: PathBuf,
    isolation: Isolation,
    /// The `unshare` flags that give `isolation` here (none for the guard alone).
    unshare: &'static [&'static str],
    pub limits: Limits,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

impl Sandbox {
    /// Finds Python 3 (`python3` on PATH) and probes for namespaces.
    pub fn new(limits: Limits) -> Result<Sandbox> {
        Sandbox::with_python("python3", limits)
    }

    /// As [`Sandbox::new`] with a given interpreter command.
    pub fn with_python(python: &str, limits: Limits) -> Result<Sandbox> {
        let python = resolve_python(python)?;
        let (isolation, unshare) = probe_isolation();
        Ok(Sandbox {
            python,
            isolation,
            unshare,
            limits,
        })
    }

    /// This sandbox without namespaces (tests of the guard alone).
    pub fn guard_only(mut self) -> Sandbox {
        self.isolation = Isolation::GuardOnly;
        self.unshare = &[];
        self
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Runs `source` as `program.py` in a fresh scratch directory, removed afterwards.
    pub fn run(&self, source: &str) -> Result<RunResult> {
        let dir = scratch_dir()?;
        let result = self.run_in(&dir, source);
        // Best effort: a program may have left read-only files; never fail a run over it.
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn run_in(&self, dir: &Path, source: &str) -> Result<RunResult> {
        let marker = format!("fastgen-sandbox-finished-{:016x}", random_u64());
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
        };
        write("program.py", source)?;
        write("guard.py", &guard_source(&self.limits, &marker))?;

        let mut cmd = if self.unshare.is_empty() {
            Command::new(&self.python)
        } else {
            let mut c = Command::new("unshare");
            c.args(self.unshare).arg(&self.python);
            c
        };
        cmd.args(["-s", "-B", "guard.py"])
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout kills everything it started.
            .process_group(0);

        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Sandbox(format!("starting {}: {e}", self.python.display())))?;
        let out = tail_reader(child.stdout.take());
        let err = tail_reader(child.stderr.take());
        let status = wait_until(&mut child, t0 + self.limits.wall)?;
        // Whatever the program left running goes too.
        kill_group(&child);
        let seconds = t0.elapsed().as_secs_f64();
        // The pipes close when the last writer dies; a writer that escaped the group must not
        // hold the evaluation, so the readers get a short grace and are then abandoned.
        let grace = Duration::from_secs(2);
        let stdout = out.recv_timeout(grace).unwrap_or_default();
        let stderr = err.recv_timeout(grace).unwrap_or_default();
        let outcome = match status {
            None => Outcome::TimedOut,
            Some(s) if s.success() && ends_with_marker(&stdout, &marker) => Outcome::Passed,
            Some(_) => Outcome::Failed,
        };
        Ok(RunResult {
            outcome,
            exit_code: status.and_then(|s| s.code()),
            seconds,
            stdout: strip_marker(stdout, &marker),
            stderr,
        })
    }
}

fn guard_source(limits: &Limits, marker: &str) -> String {
    // CPU seconds: a backstop if this process dies before it can enforce the wall limit.
    let cpu = limits.wall.as_secs() + 5;
    GUARD
        .replace("{memory}", &limits.memory.to_string())
        .replace("{cpu}", &cpu.to_string())
        .replace("{file_size}", &limits.file_size.to_string())
        .replace("{marker}", marker)
}

/// The interpreter's real path (a pyenv or similar shim would need the environment we clear),
/// after checking that it is Python 3.
fn resolve_python(python: &str) -> Result<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.version_info[0]); print(sys.executable)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::Sandbox(format!(
                "HumanEval runs every answer in Python 3, but `{python}` could not be started \
                 ({e}); install Python 3 and put python3 on PATH"
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (out.status.success(), lines.next(), lines.next()) {
        (true, Some("3"), Some(exe)) if !exe.is_empty() => Ok(PathBuf::from(exe)),
        _ => Err(Error::Sandbox(format!(
            "`{python}` is not a working Python 3 (it printed {:?}, stderr {:?}); HumanEval \
             needs Python 3",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The strongest isolation whose `unshare` actually runs a program here.
fn probe_isolation() -> (Isolation, &'static [&'static str]) {
    let works = |flags: &[&str]| {
        let spawned = Command::new("unshare")
            .args(flags)
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let Ok(mut child) = spawned else {
            return false;
        };
        let status = wait_until(&mut child, Instant::now() + Duration::from_secs(5));
        kill_group(&child);
        matches!(status, Ok(Some(s)) if s.success())
    };
    UNSHARE_FLAGS
        .into_iter()
        .find(|(_, flags)| works(flags))
        .unwrap_or((Isolation::GuardOnly, &[]))
}

/// Waits for the child until `deadline`; past it, kills its process group and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<std::process::ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::Sandbox(format!("waiting for the program: {e}")))?
        {
            return Ok(Some(s));
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(child);
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// SIGKILL to the child's process group (its id: it was made a group leader).
fn kill_group(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; a group already gone gives ESRCH.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Reads a pipe to its end on a thread, keeping the last [`OUTPUT_TAIL`] bytes.
fn tail_reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * OUTPUT_TAIL {
                    tail.drain(..tail.len() - OUTPUT_TAIL);
                }
            }
        }
        let start = tail.len().saturating_sub(OUTPUT_TAIL);
        let _ = tx.send(String::from_utf8_lossy(&tail[start..]).into_owned());
    });
    rx
}

fn ends_with_marker(stdout: &str, marker: &str) -> bool {
    stdout.trim_end().ends_with(marker)
}

fn strip_marker(stdout: String, marker: &str) -> String {
    match stdout.trim_end().strip_suffix(marker) {
        Some(rest) => rest.strip_suffix('\n').unwrap_or(rest).to_string(),
        None => stdout,
    }
}

/// A random number per call (std's hasher keys are random per process; the counter and the
/// clock make calls differ).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(RUNS.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A new empty directory under the system temp directory.
fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "fastgen-humaneval-{}-{:016x}",
        std::process::id(),
        random_u64()
    ));
    std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox::new(Limits {
            wall: Duration::from_secs(3),
            ..Limits::default()
        })
        .expect("python3 is installed")
    }

    #[test]
    fn a_program_that_runs_to_its_end_passes_and_its_output_is_captured() {
        let r = sandbox()
            .run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n")
            .unwrap();
        assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
        assert_eq!(r.stdout.trim(), "hello");
        assert_eq!(r.stderr.trim(), "oops");
    }

    #[test]
    fn an_exception_fails_with_its_last_line_as_the_reason() {
        let r = sandbox().run("assert 1 + 1 == 3, 'arithmetic'\n").unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.exit_code, Some(1));
        assert_eq!(r.reason(), "AssertionError: arithmetic");
    }

    #[test]
    fn exiting_early_with_status_zero_is_not_a_pass() {
        for exit in ["import sys; sys.exit(0)", "import os; os._exit(0)"] {
            let r = sandbox().run(&format!("{exit}\nassert False\n")).unwrap();
            assert_eq!(r.outcome, Outcome::Failed, "{exit}: {r:?}");
            assert_eq!(r.exit_code, Some(0));
        }
    }

    #[test]
    fn an_infinite_loop_is_killed_at_the_limit_with_its_children() {
        let sb = Sandbox::new(Limits {
            wall: Duration::from_millis(1500),
            ..Limits::default()
        })
        .unwrap();
        // A child process in a new session escapes a process-group kill (only the PID
        // namespace ends it); it writes a file every 100 ms for 3 s, so its survival shows.
        let dir = std::env::temp_dir().join(format!("fastgen-loop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let beacon = dir.join("beacon");
        let program = format!(
            "import os, time\n\
             if os.fork() == 0:\n    os.setsid()\n    \
             for _ in range(30):\n        open({beacon:?}, 'a').write('x')\n        time.sleep(0.1)\n\
             while True:\n    pass\n",
            beacon = beacon.to_str().unwrap()
        );
        let t0 = Instant::now();
        let r = sb.run(&program).unwrap();
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert_eq!(r.reason(), "timed out");
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        if sb.isolation() == Isolation::NetPid {
            let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            std::thread::sleep(Duration::from_millis(300));
            let before = size(&beacon);
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(size(&beacon), before, "the setsid child outlived the run");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A program that succeeds only if it can talk to a listener on this machine.
    fn connect_program(port: u16) -> String {
        format!(
            "import socket\n\
             s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n\
             s.sendall(b'hello')\n"
        )
    }

    /// The same through the C socket type the guard hides (still reachable as a base class
    /// of its replacement): only a namespace stops it.
    fn bypass_program(port: u16) -> String {
        format!(
            "import socket\n\
             s = socket.socket.__mro__[-2](socket.AF_INET, socket.SOCK_STREAM)\n\
             s.settimeout(2)\n\
             s.connect(('127.0.0.1', {port}))\n\
             s.sendall(b'hello')\n"
        )
    }

    #[test]
    fn network_access_fails_with_and_without_namespaces() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        // The same program does reach the listener outside the sandbox.
        let plain = Command::new("python3")
            .args(["-c", &connect_program(port)])
            .status()
            .unwrap();
        assert!(plain.success());
        assert!(listener.accept().is_ok());

        let sb = sandbox();
        for sb in [sb.clone(), sb.clone().guard_only()] {
            let r = sb.run(&connect_program(port)).unwrap();
            assert_eq!(r.outcome, Outcome::Failed, "{:?}", sb.isolation());
            assert!(r.reason().contains("network access is disabled"), "{r:?}");
            assert!(
                listener.accept().is_err(),
                "{:?}: connected",
                sb.isolation()
            );
        }
        // Past the guard, the namespace still blocks it; without one the bypass connects.
        if sb.isolation() != Isolation::GuardOnly {
            let r = sb.run(&bypass_program(port)).unwrap();
            assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
            assert!(r.reason().contains("OSError"), "{r:?}");
            assert!(listener.accept().is_err(), "connected past the namespace");
            let r = sb.guard_only().run(&bypass_program(port)).unwrap();
            assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
            assert!(listener.accept().is_ok());
        }
    }

    #[test]
    fn memory_and_output_are_bounded() {
        let sb = sandbox();
        let r = sb.run("x = bytearray(4 << 30)\n").unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.reason(), "MemoryError");
        // 20 MB of output: the run passes and keeps only the tail.
        let r = sb
            .run("import sys\nfor i in range(200000):\n    sys.stdout.write('%099d\\n' % i)\n")
            .unwrap();
        assert_eq!(r.outcome, Outcome::Passed, "{}", r.stderr);
        assert!(r.stdout.len() <= OUTPUT_TAIL);
        assert!(r.stdout.trim_end().ends_with("199999"));
    }

    #[test]
    fn a_missing_interpreter_is_a_clear_error() {
        let e = Sandbox::with_python("/nonexistent/python3", Limits::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("Python 3") && msg.contains("/nonexistent/python3"),
            "{msg}"
        );
        let e = Sandbox::with_python("true", Limits::default()).unwrap_err();
        assert!(e.to_string().contains("not a working Python 3"), "{e}");
    }
}
