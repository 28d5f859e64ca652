//! Range checks for config values that name the failing field (`gnn.lr`), the first failure
//! winning: the checked-parameters step every config passes before anything runs. Also the
//! upper bounds every size, count and thread number is held to (a value past them would
//! exhaust memory or run for hours), what a name that becomes a path may hold, and how an
//! error line prints a number.

/// Widths of layers: a model's hidden layers and conv widths, an agent's networks.
pub const MAX_WIDTH: usize = 16_384;
/// Layers of a model or of a graph agent's encoder.
pub const MAX_LAYERS: usize = 256;
/// Episodes of a search or training run, and iterations of meta-training.
pub const MAX_EPISODES: usize = 1_000_000;
/// Optimisation steps (fine-tuning, PruningNet training, BatchNorm recalibration batches).
pub const MAX_STEPS: usize = 1_000_000;
/// Training epochs (pretraining, an agent's passes over its samples).
pub const MAX_EPOCHS: usize = 10_000;
/// Samples: validation split sizes, evaluation subsets, replay buffers, batch sizes.
pub const MAX_SAMPLES: usize = 10_000_000;
/// An evolution population, or any other count of policies kept at once.
pub const MAX_POPULATION: usize = 100_000;
/// libtorch CPU threads.
pub const MAX_THREADS: usize = 1024;
/// Characters of a name that becomes part of a path (an env's, a config's).
pub const MAX_NAME: usize = 100;

/// A chain of checks; [`Checks::first`] gives the first failure as (key, message).
#[derive(Debug, Default)]
pub(crate) struct Checks(Option<(&'static str, String)>);

impl Checks {
    pub(crate) fn new() -> Self {
        Self(None)
    }

    /// `ok`, or `message` under `key`.
    pub(crate) fn rule(
        mut self,
        key: &'static str,
        ok: bool,
        message: impl FnOnce() -> String,
    ) -> Self {
        if self.0.is_none() && !ok {
            self.0 = Some((key, message()));
        }
        self
    }

    pub(crate) fn at_least(self, key: &'static str, value: usize, min: usize) -> Self {
        self.rule(key, value >= min, || {
            format!("{value} is too small; use at least {min}")
        })
    }

    pub(crate) fn at_most(self, key: &'static str, value: usize, max: usize) -> Self {
        self.rule(key, value <= max, || {
            format!("{value} is too large; use at most {max}")
        })
    }

    /// A name that becomes part of a file or folder name (see [`name_problem`]).
    pub(crate) fn name(self, key: &'static str, value: &str) -> Self {
        let problem = name_problem(value);
        self.rule(key, problem.is_none(), || problem.unwrap_or_default())
    }

    pub(crate) fn positive(self, key: &'static str, value: f64) -> Self {
        self.rule(key, value > 0.0 && value.is_finite(), || {
            format!("{} must be a positive number", number(value))
        })
    }

    /// `value` in [lo, hi] (`open_high`: [lo, hi)).
    pub(crate) fn within(
        self,
        key: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
        open_high: bool,
    ) -> Self {
        let ok = value >= lo && (value < hi || (!open_high && value == hi));
        let close = if open_high { ')' } else { ']' };
        self.rule(key, ok, || {
            format!(
                "{} must be in [{}, {}{close}",
                number(value),
                number(lo),
                number(hi)
            )
        })
    }

    pub(crate) fn first(self) -> Option<(&'static str, String)> {
        self.0
    }
}

/// What is wrong with `name` as a name that becomes part of a path, if anything: it may hold
/// letters, digits, `.`, `_` and `-`, must not start with a dot, and holds at most
/// [`MAX_NAME`] characters (so `../x` or `a/b` never leave the folder it is written into).
pub fn name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() {
        Some("must not be empty".into())
    } else if name.chars().count() > MAX_NAME {
        Some(format!(
            "is {} characters long; use at most {MAX_NAME}",
            name.chars().count()
        ))
    } else if name.starts_with('.') || !name.chars().all(allowed) {
        Some(format!(
            "{name:?} becomes part of a path: use letters, digits, `.`, `_` and `-`, not starting with a dot"
        ))
    } else {
        None
    }
}

/// A number as an error line shows it: plain where that is short, scientific where it is
/// extreme (`1e-300`, not three hundred digits).
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if value.is_finite() && magnitude != 0.0 && !(1e-4..1e9).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failing_field_is_named() {
        let found = Checks::new()
            .at_least("t.a", 3, 1)
            .positive("t.lr", 0.0)
            .within("t.clip", 2.0, 0.0, 1.0, true)
            .first();
        assert_eq!(
            found,
            Some(("t.lr", "0 must be a positive number".to_string()))
        );
        assert_eq!(
            Checks::new().within("t.x", 1.0, 0.0, 1.0, false).first(),
            None
        );
        let open = Checks::new().within("t.x", 1.0, 0.0, 1.0, true).first();
        assert_eq!(open, Some(("t.x", "1 must be in [0, 1)".to_string())));
        assert!(Checks::new().positive("t.y", f64::NAN).first().is_some());
        assert!(Checks::new().at_least("t.n", 0, 1).first().is_some());
        assert_eq!(
            Checks::new().at_most("t.n", 11, 10).first(),
            Some(("t.n", "11 is too large; use at most 10".to_string()))
        );
        assert!(Checks::new().at_most("t.n", 10, 10).first().is_none());
    }

    #[test]
    fn extreme_numbers_print_short() {
        assert_eq!(number(1e-300), "1e-300");
        assert_eq!(number(-2.5e300), "-2.5e300");
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn names_that_would_be_paths_are_refused() {
        for bad in [
            "../../x/evil",
            "a/b",
            ".hidden",
            "",
            "a b",
            "x\\y",
            &"n".repeat(101),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["synthetic-mlp", "fmnist_vgg.2", "A1"] {
            assert_eq!(name_problem(good), None);
        }
    }
}
