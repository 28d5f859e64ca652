//! Range checks for config values that name the failing field (`gnn.lr`), the first failure
//! winning: the checked-parameters step every config passes before anything runs.

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

    pub(crate) fn positive(self, key: &'static str, value: f64) -> Self {
        self.rule(key, value > 0.0 && value.is_finite(), || {
            format!("{value} must be a positive number")
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
        self.rule(key, ok, || format!("{value} must be in [{lo}, {hi}{close}"))
    }

    pub(crate) fn first(self) -> Option<(&'static str, String)> {
        self.0
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
    }
}
