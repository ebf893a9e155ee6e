//! Runs a render in a forked child process under an address-space limit and a deadline, so
//! that a template which allocates without end (a string doubled in a loop: no instruction
//! count bounds that) or runs too long costs the child, never this process.
//!
//! Why a process: minijinja's operators allocate with Rust's infallible allocation, and an
//! allocation failure aborts the process; nothing inside the process can refuse such an
//! allocation and go on. The child is a copy of this process (the compiled template, the
//! conversation) and only runs the closure, writes its result into a pipe and leaves with
//! `_exit`; glibc's `fork` keeps `malloc` usable in the child of a threaded process.
//! Where `fork` is not available (or fails) the closure runs in-process, still under the
//! limits minijinja itself enforces.

use std::time::Duration;

/// How a sandboxed run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The closure returned this.
    Returned(Result<String, String>),
    /// The child died of an allocation failure (SIGABRT: the address-space limit).
    OutOfMemory,
    /// The deadline passed; the child was killed.
    TimedOut,
    /// The child died another way (a signal other than SIGABRT, or no result).
    Crashed(String),
}

/// Runs `f` under `memory` bytes of extra address space and `timeout` of wall-clock time.
pub fn run(memory: usize, timeout: Duration, f: impl FnOnce() -> Result<String, String>) -> Ending {
    #[cfg(target_os = "linux")]
    {
        match linux::run(memory, timeout, f) {
            Ok(ending) => ending,
            Err(f) => Ending::Returned(f()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (memory, timeout);
        Ending::Returned(f())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::Ending;
    use std::time::{Duration, Instant};

    /// Tags of the child's answer (first byte in the pipe).
    const OK: u8 = b'O';
    const ERR: u8 = b'E';

    /// The process's address space in bytes (`/proc/self/statm`'s first field).
    fn address_space() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages.checked_mul(usize::try_from(page).ok()?)
    }

    /// Forks and runs `f` in the child; gives `f` back when no child could be made.
    pub fn run<F: FnOnce() -> Result<String, String>>(
        memory: usize,
        timeout: Duration,
        f: F,
    ) -> Result<Ending, F> {
        let Some(limit) = address_space().and_then(|a| a.checked_add(memory)) else {
            return Err(f);
        };
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(f);
        }
        let [read_fd, write_fd] = fds;
        // SAFETY: the child only runs `child` (allocation, the closure, write, _exit).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // SAFETY: both descriptors are ours.
            unsafe {
                libc::close(read_fd);
                libc::close(write_fd);
            }
            return Err(f);
        }
        if pid == 0 {
            // SAFETY: in the child; `_exit` never returns.
            unsafe {
                libc::close(read_fd);
                child(write_fd, limit, f)
            }
        }
        // SAFETY: the write end belongs to the child now.
        unsafe { libc::close(write_fd) };
        let (answer, timed_out) = read_until(read_fd, Instant::now() + timeout);
        // SAFETY: our descriptor, our child.
        let status = unsafe {
            libc::close(read_fd);
            if timed_out {
                libc::kill(pid, libc::SIGKILL);
            }
            wait(pid)
        };
        Ok(ending(&answer, timed_out, status))
    }

    /// The child: limits its address space, silences stderr (the allocation-failure message
    /// is ours to give), runs `f` and writes `[tag][text]` into the pipe.
    unsafe fn child<F: FnOnce() -> Result<String, String>>(fd: i32, limit: usize, f: F) -> ! {
        libc::close(2);
        let lim = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        libc::setrlimit(libc::RLIMIT_AS, &lim);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err("failed: the template engine panicked".to_string()));
        let (tag, text) = match &result {
            Ok(s) => (OK, s.as_bytes()),
            Err(e) => (ERR, e.as_bytes()),
        };
        if write_all(fd, &[tag]) && write_all(fd, text) {
            libc::_exit(0);
        }
        libc::_exit(1)
    }

    unsafe fn write_all(fd: i32, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = libc::write(fd, data.as_ptr().cast(), data.len());
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            data = &data[n as usize..];
        }
        true
    }

    /// Everything the child writes until it closes the pipe, or until the deadline
    /// (then `true`).
    fn read_until(fd: i32, deadline: Instant) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, true);
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready <= 0 {
                continue; // timeout (checked above) or EINTR
            }
            // SAFETY: `chunk` has room for its length.
            let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            match n {
                0 => return (out, false),
                n if n > 0 => out.extend_from_slice(&chunk[..n as usize]),
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return (out, false),
            }
        }
    }

    /// Reaps the child; its wait status.
    unsafe fn wait(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        status
    }

    fn ending(answer: &[u8], timed_out: bool, status: i32) -> Ending {
        if timed_out {
            return Ending::TimedOut;
        }
        if libc::WIFSIGNALED(status) {
            return match libc::WTERMSIG(status) {
                libc::SIGABRT => Ending::OutOfMemory,
                sig => Ending::Crashed(format!("the render process died of signal {sig}")),
            };
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match answer.split_first() {
            Some((&OK, rest)) => match String::from_utf8(rest.to_vec()) {
                Ok(s) => Ending::Returned(Ok(s)),
                Err(_) => Ending::Crashed("the render process sent invalid UTF-8".into()),
            },
            Some((&ERR, rest)) => Ending::Returned(Err(text(rest))),
            _ => Ending::Crashed(format!(
                "the render process exited with status {} and no result",
                libc::WEXITSTATUS(status)
            )),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    #[test]
    fn results_come_back() {
        let e = run(GIB, Duration::from_secs(30), || Ok("héllo".repeat(100_000)));
        assert_eq!(e, Ending::Returned(Ok("héllo".repeat(100_000))));
        let e = run(GIB, Duration::from_secs(30), || Err("no".into()));
        assert_eq!(e, Ending::Returned(Err("no".into())));
    }

    #[test]
    fn an_allocation_past_the_limit_kills_only_the_child() {
        let e = run(64 << 20, Duration::from_secs(30), || {
            let mut s = String::from("x");
            for _ in 0..40 {
                s = s.clone() + &s;
            }
            Ok(s.len().to_string())
        });
        assert_eq!(e, Ending::OutOfMemory);
    }

    #[test]
    fn the_deadline_kills_the_child() {
        let t0 = std::time::Instant::now();
        let e = run(GIB, Duration::from_millis(200), || loop {
            std::hint::spin_loop();
        });
        assert_eq!(e, Ending::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_panic_is_an_error() {
        let e = run(GIB, Duration::from_secs(30), || panic!("boom"));
        assert_eq!(
            e,
            Ending::Returned(Err("failed: the template engine panicked".into()))
        );
    }
}
