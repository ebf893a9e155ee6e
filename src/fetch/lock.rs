//! A cross-process lock made of a file created with `create_new`, kept fresh by a heartbeat
//! thread so that waiters can tell a live holder from one that died (killed mid-download).
//!
//! The lock only saves duplicate downloads: correctness does not depend on it, since every
//! writer works on uniquely named temporary files and publishes with an atomic rename.

use super::progress::Ui;
use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often the holder refreshes the lock file's modification time.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A lock file not refreshed for this long belongs to a process that is gone.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(20);
/// Give up waiting for a live holder after this long.
const WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);
const POLL: Duration = Duration::from_millis(200);

pub(crate) struct FileLock {
    path: PathBuf,
    token: String,
    stop: Option<Sender<()>>,
    beat: Option<JoinHandle<()>>,
}

impl FileLock {
    /// Takes the lock at `path`, waiting while another live process holds it. `what` names the
    /// job in the message shown while waiting.
    pub(crate) fn acquire(path: &Path, what: &str, ui: &Ui) -> Result<FileLock> {
        let start = Instant::now();
        let mut told = false;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(file) => return FileLock::hold(path, file),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(path, e)),
            }
            match age(path) {
                Ok(a) if a > STALE_AFTER => {
                    ui.line(&format!(
                        "{what}: removing stale lock {} (not refreshed for {} s)",
                        path.display(),
                        a.as_secs()
                    ));
                    match fs::remove_file(path) {
                        Ok(()) => continue,
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io(path, e)),
                    }
                }
                Ok(_) => {}
                // Released between our two calls: try again at once.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            }
            if start.elapsed() > WAIT_LIMIT {
                return Err(Error::Fetch(format!(
                    "{what}: gave up after {} s waiting for another process holding {}; \
                     if no other fastgen is running, delete that file",
                    WAIT_LIMIT.as_secs(),
                    path.display()
                )));
            }
            if !told {
                ui.line(&format!(
                    "{what}: waiting for another process doing the same (lock {})",
                    path.display()
                ));
                told = true;
            }
            std::thread::sleep(POLL);
        }
    }

    fn hold(path: &Path, mut file: File) -> Result<FileLock> {
        let token = super::unique_token();
        // Written so that a human can see who holds it, and so that release can tell whether
        // the file is still ours.
        file.write_all(format!("{token}\n").as_bytes())
            .map_err(|e| Error::io(path, e))?;
        let (stop, rx) = mpsc::channel::<()>();
        let beat = std::thread::Builder::new()
            .name("fastgen-lock".into())
            .spawn(move || {
                // Until release (a message or the sender dropped), refresh the stamp.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(HEARTBEAT) {
                    let _ = file.set_modified(SystemTime::now());
                }
            })
            .map_err(|e| Error::io(path, e))?;
        Ok(FileLock {
            path: path.to_path_buf(),
            token,
            stop: Some(stop),
            beat: Some(beat),
        })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
        // Only remove the file if it is still ours (someone may have judged it stale).
        if fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == self.token) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Time since the file was last modified (zero if its clock is ahead of ours).
pub(crate) fn age(path: &Path) -> std::io::Result<Duration> {
    let modified = fs::metadata(path)?.modified()?;
    Ok(SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fastgen-lock-{tag}-{}",
            super::super::unique_token()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let d = scratch("excl");
        let p = d.join("x.lock");
        let ui = Ui::quiet();
        let a = FileLock::acquire(&p, "test", &ui).unwrap();
        assert!(p.exists());
        // A second taker must wait until the first lets go.
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            let _b = FileLock::acquire(&p2, "test", &Ui::quiet()).unwrap();
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(600));
        drop(a);
        let waited = t.join().unwrap();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
        assert!(!p.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_lock_is_broken() {
        let d = scratch("stale");
        let p = d.join("x.lock");
        let f = File::create(&p).unwrap();
        f.set_modified(SystemTime::now() - STALE_AFTER - Duration::from_secs(5))
            .unwrap();
        drop(f);
        let t0 = Instant::now();
        let l = FileLock::acquire(&p, "test", &Ui::quiet()).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(l);
        assert!(!p.exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
