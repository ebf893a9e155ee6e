//! Progress reporting on stderr: indicatif bars on a terminal, one plain line per step
//! otherwise (CI logs, test harnesses, redirected output).

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    bars: bool,
    lines: bool,
}

impl Ui {
    /// Bars if stderr is a terminal, plain lines if not.
    pub(crate) fn auto() -> Ui {
        Ui {
            bars: std::io::stderr().is_terminal(),
            lines: true,
        }
    }

    /// Silent (unit tests).
    #[cfg(test)]
    pub(crate) fn quiet() -> Ui {
        Ui {
            bars: false,
            lines: false,
        }
    }

    /// A one-off message.
    pub(crate) fn line(&self, msg: &str) {
        if self.lines {
            eprintln!("{msg}");
        }
    }

    /// A step of known size in bytes.
    pub(crate) fn bytes(&self, msg: String, total: u64) -> Step {
        if !self.bars {
            self.line(&msg);
            return Step::plain();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(msg.clone());
        Step::drawn(bar, msg)
    }

    /// A step of unknown size (a download run by pip).
    pub(crate) fn spinner(&self, msg: String) -> Step {
        if !self.bars {
            self.line(&msg);
            return Step::plain();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(msg.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        Step::drawn(bar, msg)
    }
}

/// One step on screen. On a terminal, finishing replaces the bar with a plain summary line
/// (so that later output never lands on the bar's line); dropping it unfinished (on an
/// error) just clears it.
pub(crate) struct Step {
    bar: Option<ProgressBar>,
    msg: String,
    start: Instant,
}

impl Step {
    fn plain() -> Step {
        Step {
            bar: None,
            msg: String::new(),
            start: Instant::now(),
        }
    }

    fn drawn(bar: ProgressBar, msg: String) -> Step {
        Step {
            bar: Some(bar),
            msg,
            start: Instant::now(),
        }
    }

    pub(crate) fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub(crate) fn finish(mut self) {
        if let Some(b) = self.bar.take() {
            let done = b.position();
            b.finish_and_clear();
            let secs = self.start.elapsed().as_secs_f64();
            if b.length().is_some() {
                eprintln!("{}: {} in {secs:.1} s", self.msg, HumanBytes(done));
            } else {
                eprintln!("{} ({secs:.1} s)", self.msg);
            }
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
