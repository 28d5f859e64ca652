//! Checked configs (linfa's checked-parameters pattern): a run config becomes a
//! [`Checked`] only through [`Validate::check`], and the loops that run (search,
//! train-agent, meta-train) take only checked ones. Changing a checked config means taking
//! it apart ([`Checked::into_inner`]) and checking it again, so no override skips a check.

use crate::error::Result;
use std::ops::Deref;

/// A config whose values passed its checks; read it through `Deref`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T>(T);

impl<T> Checked<T> {
    /// The config, to change (and check again).
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Checked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A config with checks: every range, bound and cross-field rule, each failure one error
/// naming the file and the key.
pub trait Validate: Sized {
    /// What is wrong with the config, as one error.
    fn validate(&self) -> Result<()>;

    /// The config, checked.
    fn check(self) -> Result<Checked<Self>> {
        self.validate()?;
        Ok(Checked(self))
    }
}
