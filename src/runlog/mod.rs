//! Run output: progress bars and status lines on stderr (stdout is kept for results).
//!
//! Must not know about models.

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
