//! Run output: metrics sinks (TensorBoard, or none), progress bars and status lines on
//! stderr (stdout is kept for results).
//!
//! Must not know about models.

mod tensorboard;

pub use tensorboard::{histogram_buckets, TensorBoardSink};

/// Where per-episode metrics go.
pub trait MetricsSink {
    fn scalar(&mut self, tag: &str, value: f64, step: usize);
    fn histogram(&mut self, tag: &str, values: &[f64], step: usize);
    fn text(&mut self, tag: &str, text: &str, step: usize);
    /// Puts everything logged so far on disk; the first failed write is reported here.
    fn flush(&mut self) -> crate::error::Result<()>;
}

/// A sink that drops everything.
#[derive(Debug, Default)]
pub struct NoSink;

impl MetricsSink for NoSink {
    fn scalar(&mut self, _tag: &str, _value: f64, _step: usize) {}
    fn histogram(&mut self, _tag: &str, _values: &[f64], _step: usize) {}
    fn text(&mut self, _tag: &str, _text: &str, _step: usize) {}
    fn flush(&mut self) -> crate::error::Result<()> {
        Ok(())
    }
}

/// Resident memory of this process, now and at its peak, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub resident: u64,
    pub peak: u64,
}

/// This process's memory from `/proc/self/status` (`VmRSS`, `VmHWM`); zeros elsewhere.
pub fn memory() -> Memory {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Memory::default();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    Memory {
        resident: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes: bars and lines on stderr, or nothing.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    quiet: bool,
}

impl Progress {
    /// Bars and lines on stderr (bars only when stderr is a terminal).
    pub fn stderr() -> Self {
        Self { quiet: false }
    }

    /// Nothing at all (tests, library use).
    pub fn quiet() -> Self {
        Self { quiet: true }
    }

    /// A progress bar of `len` steps with a prefix; hidden when quiet or not on a terminal.
    pub fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        let target = if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// One status line on stderr.
    pub fn println(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}
