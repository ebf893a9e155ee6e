//! A fuzz harness on the stable toolchain: hostile inputs against the real loader,
//! tokenizer, chat templates, `fastgen` command and HTTP server, from a fixed seed.
//!
//! ```sh
//! cargo build --release --bin fastgen --example fuzz
//! target/release/examples/fuzz --target gguf --seed 1 --count 10000
//! target/release/examples/fuzz --target all --seed 1 --seconds 600
//! ```
//!
//! Targets: `gguf` (mutated GGUF files: in-process through the loading path, and every
//! `--cli-every`th one through `fastgen tokenize` and `fastgen run` as child processes),
//! `template`, `tokenizer`, `http`. The in-process targets run in worker child processes of
//! this harness under a memory limit: a worker that dies is a crash of its current input,
//! one that stops answering past `--timeout-secs` a hang; the next worker goes on after it.
//! Prints per target the inputs tried and how they ended; exits 1 if any crashed, hung or
//! was refused without a clear one-line error. Failing inputs are written to `--save`.

mod cli;
mod gguf;
mod http;
mod outcome;
mod rng;
mod template;
mod tokenizer;

use outcome::{Outcome, Tally};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Opts {
    target: String,
    seed: u64,
    count: u64,
    seconds: f64,
    cli_every: u64,
    model: String,
    timeout: Duration,
    memory_mib: u64,
    save: PathBuf,
    /// How many kinds of clear refusal to list per target.
    reasons: usize,
}

fn parse_args() -> Result<(Opts, Option<(u64, u64)>), String> {
    let mut o = Opts {
        target: "all".into(),
        seed: 1,
        count: u64::MAX,
        seconds: f64::INFINITY,
        cli_every: 10,
        model: "smollm2".into(),
        timeout: Duration::from_secs(20),
        memory_mib: 4096,
        save: std::env::temp_dir().join("fastgen-fuzz-failures"),
        reasons: 0,
    };
    let mut worker = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "--target" => o.target = val()?,
            "--seed" => o.seed = num(val()?)? as u64,
            "--count" => o.count = num(val()?)? as u64,
            "--seconds" => o.seconds = num(val()?)?,
            "--cli-every" => o.cli_every = (num(val()?)? as u64).max(1),
            "--model" => o.model = val()?,
            "--timeout-secs" => o.timeout = Duration::from_secs_f64(num(val()?)?),
            "--memory-mib" => o.memory_mib = num(val()?)? as u64,
            "--save" => o.save = PathBuf::from(val()?),
            "--reasons" => o.reasons = num(val()?)? as usize,
            // Writes input N of the target to stdout (to reproduce a failure).
            "--print" => {
                let i = num(val()?)? as u64;
                print_input(&o, i);
                std::process::exit(0);
            }
            // Internal: run inputs START..END of the target in this process.
            "--worker" => {
                let (s, e) = (num(val()?)? as u64, num(val()?)? as u64);
                worker = Some((s, e));
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.count == u64::MAX && o.seconds.is_infinite() {
        o.count = 1000;
    }
    Ok((o, worker))
}

fn main() {
    let (opts, worker) = parse_args().unwrap_or_else(|e| {
        eprintln!("fuzz: {e}");
        std::process::exit(2);
    });
    if let Some((start, end)) = worker {
        run_worker(&opts, start, end);
        return;
    }
    let targets: Vec<&str> = match opts.target.as_str() {
        "all" => vec!["gguf", "template", "tokenizer", "http"],
        t => vec![t],
    };
    let _ = std::fs::create_dir_all(&opts.save);
    let mut failed = 0;
    for t in targets {
        let t0 = Instant::now();
        let tallies: Vec<(String, Tally)> = match t {
            "gguf" => run_gguf(&opts),
            "template" | "tokenizer" => vec![(t.to_string(), run_workers(&opts, t, |_, _| {}))],
            "http" => vec![("http".into(), run_http(&opts))],
            _ => {
                eprintln!("fuzz: unknown target {t} (gguf, template, tokenizer, http, all)");
                std::process::exit(2);
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        for (name, tally) in &tallies {
            println!("{name}: {tally} ({secs:.0} s, seed {})", opts.seed);
            for (why, n) in tally.top_reasons(opts.reasons) {
                println!("  {n:>6}  {why}");
            }
            for (input, o) in &tally.failures {
                println!("  FAIL {name} {input}: {o:?}");
            }
            failed += tally.failed();
        }
    }
    if failed > 0 {
        println!(
            "fuzz: {failed} failing inputs (saved in {})",
            opts.save.display()
        );
        std::process::exit(1);
    }
}

fn input_bytes(target: &str, seed: u64, i: u64) -> Vec<u8> {
    match target {
        "gguf" | "gguf-cli" => gguf::mutant(&gguf::seed(), seed, i),
        "template" => template::generate(seed, i).into_bytes(),
        "tokenizer" => tokenizer::generate(seed, i).into_bytes(),
        _ => http::generate(seed, i),
    }
}

fn print_input(o: &Opts, i: u64) {
    let _ = std::io::stdout().write_all(&input_bytes(&o.target, o.seed, i));
}

/// The worker side: one line `B i` before input i, `R i KIND DETAIL` after it.
fn run_worker(o: &Opts, start: u64, end: u64) {
    let lim = libc::rlimit {
        rlim_cur: o.memory_mib << 20,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system call on a local struct.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    std::panic::set_hook(Box::new(|_| {}));
    let scratch = std::env::temp_dir().join(format!("fastgen-fuzz-{}.gguf", std::process::id()));
    let seed_file = gguf::seed();
    let tok = (o.target == "tokenizer").then(|| {
        let path = fastgen::fetch::resolve_model(&o.model).expect("model");
        let g = fastgen::gguf::Gguf::open(&path).expect("model opens");
        fastgen::tokenizer::Tokenizer::from_gguf(&g).expect("tokenizer")
    });
    let mut out = std::io::stdout().lock();
    for i in start..end {
        let _ = writeln!(out, "B {i}");
        let _ = out.flush();
        let run = std::panic::AssertUnwindSafe(|| match o.target.as_str() {
            "gguf" => {
                std::fs::write(&scratch, gguf::mutant(&seed_file, o.seed, i)).expect("scratch");
                gguf::check(&scratch)
            }
            "template" => template::check(&template::generate(o.seed, i)),
            _ => tokenizer::check(tok.as_ref().unwrap(), &tokenizer::generate(o.seed, i)),
        });
        let outcome = std::panic::catch_unwind(run).unwrap_or_else(|p| {
            let msg = (p.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Outcome::Crash(format!("panicked: {msg}"))
        });
        let (kind, detail) = match outcome {
            Outcome::Ok => ("ok", String::new()),
            Outcome::Clear(d) => ("clear", d),
            Outcome::Crash(d) => ("crash", d),
            Outcome::Hang(d) => ("hang", d),
            Outcome::Unclear(d) => ("unclear", d),
        };
        let _ = writeln!(out, "R {i} {kind} {}", detail.replace('\n', "\\n"));
        let _ = out.flush();
    }
    let _ = std::fs::remove_file(&scratch);
}

/// Runs a target's inputs in worker processes, `CHUNK` at a time, restarting after a
/// crash or a hang; `after_chunk(start, end)` runs between chunks.
fn run_workers(o: &Opts, target: &str, mut after_chunk: impl FnMut(u64, u64)) -> Tally {
    const CHUNK: u64 = 250;
    let t0 = Instant::now();
    let mut tally = Tally::default();
    let mut next = 0;
    while next < o.count && t0.elapsed().as_secs_f64() < o.seconds {
        let end = (next + CHUNK).min(o.count);
        let chunk_start = next;
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["--target", target, "--model", &o.model])
            .args(["--seed", &o.seed.to_string()])
            .args(["--memory-mib", &o.memory_mib.to_string()])
            .args(["--worker", &next.to_string(), &end.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current = None;
        loop {
            match rx.recv_timeout(o.timeout) {
                Ok(line) => {
                    let mut parts = line.splitn(4, ' ');
                    let (tag, i) = (parts.next(), parts.next().and_then(|s| s.parse().ok()));
                    let (kind, detail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    match (tag, i) {
                        (Some("B"), Some(i)) => current = Some(i),
                        (Some("R"), Some(i)) => {
                            let outcome = match kind {
                                "ok" => Outcome::Ok,
                                "clear" => Outcome::Clear(detail.into()),
                                "crash" => Outcome::Crash(detail.into()),
                                "hang" => Outcome::Hang(detail.into()),
                                _ => Outcome::Unclear(detail.into()),
                            };
                            record(o, target, i, &mut tally, outcome);
                            current = None;
                            next = i + 1;
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if let Some(i) = current {
                        let why = format!("no result within {} s", o.timeout.as_secs());
                        record(o, target, i, &mut tally, Outcome::Hang(why));
                        next = i + 1;
                    }
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| format!("{s}")).unwrap_or_default();
                    if let Some(i) = current {
                        record(o, target, i, &mut tally, Outcome::Crash(status));
                        next = i + 1;
                    } else if next < end {
                        // Died between inputs: count it against the next one.
                        record(o, target, next, &mut tally, Outcome::Crash(status));
                        next += 1;
                    }
                    break;
                }
            }
        }
        after_chunk(chunk_start, next);
    }
    tally
}

/// Counts an outcome; a failing input is saved for a regression test.
fn record(o: &Opts, target: &str, i: u64, tally: &mut Tally, outcome: Outcome) {
    if outcome.is_failure() {
        let name = format!("{target}-seed{}-{i}", o.seed);
        let _ = std::fs::write(o.save.join(name), input_bytes(target, o.seed, i));
    }
    tally.add(format!("#{i}"), outcome);
}

/// GGUF mutants in-process, and every `cli_every`th through the `fastgen` command.
fn run_gguf(o: &Opts) -> Vec<(String, Tally)> {
    let seed_file = gguf::seed();
    let mut cli = Tally::default();
    let path = std::env::temp_dir().join(format!("fastgen-fuzz-cli-{}.gguf", std::process::id()));
    let memory = 2048 << 20;
    let lib = run_workers(o, "gguf", |start, end| {
        for i in (start..end).filter(|i| i % o.cli_every == 0) {
            std::fs::write(&path, gguf::mutant(&seed_file, o.seed, i)).expect("scratch");
            let p = path.to_str().unwrap();
            for args in [
                &["tokenize", "-m", p, "--text", "hello the"][..],
                &["run", "-m", p, "--max-tokens", "2", "-t", "1", "hi"][..],
            ] {
                let outcome = cli::run(args, memory, o.timeout);
                record(o, "gguf-cli", i, &mut cli, outcome);
            }
        }
    });
    let _ = std::fs::remove_file(&path);
    vec![
        ("gguf (in-process)".into(), lib),
        ("gguf (fastgen CLI)".into(), cli),
    ]
}

/// Malformed requests against one server; /health is checked every 25 requests.
fn run_http(o: &Opts) -> Tally {
    let mut server = http::Server::start(&o.model);
    let t0 = Instant::now();
    let mut tally = Tally::default();
    let mut i = 0;
    while i < o.count && t0.elapsed().as_secs_f64() < o.seconds {
        let outcome = http::classify(server.exchange(&http::generate(o.seed, i)));
        record(o, "http", i, &mut tally, outcome);
        if i % 25 == 0 && !(server.alive() && server.health()) {
            record(
                o,
                "http",
                i,
                &mut tally,
                Outcome::Crash("/health is not 200".into()),
            );
            break;
        }
        i += 1;
    }
    if !(server.alive() && server.health()) {
        tally.add(
            "end",
            Outcome::Crash("/health is not 200 after the run".into()),
        );
    }
    tally
}
