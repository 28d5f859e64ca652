//! `Hw`: a size per spatial axis, written as one number when both are equal.

use serde::{Deserialize, Serialize};

/// A size per spatial axis (height, width) of a kernel, stride, padding or dilation. In JSON
/// it is one number when both are equal (as every square window is written) or `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hw {
    pub h: usize,
    pub w: usize,
}

impl Hw {
    /// The same size on both axes.
    pub const fn square(n: usize) -> Self {
        Self { h: n, w: n }
    }

    /// `h · w`.
    pub fn area(&self) -> usize {
        self.h * self.w
    }

    /// The pair as `[h, w]` for libtorch and ONNX.
    pub fn pair(&self) -> [i64; 2] {
        [self.h as i64, self.w as i64]
    }

    /// The larger of the two sizes (the one number AMC's layer features carry).
    pub fn max(&self) -> usize {
        self.h.max(self.w)
    }

    pub(super) fn one() -> Self {
        Self::square(1)
    }

    pub(super) fn is_one(&self) -> bool {
        *self == Self::one()
    }
}

impl From<usize> for Hw {
    fn from(n: usize) -> Self {
        Self::square(n)
    }
}

impl std::fmt::Display for Hw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.h == self.w {
            write!(f, "{}", self.h)
        } else {
            write!(f, "{}×{}", self.h, self.w)
        }
    }
}

impl Serialize for Hw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.h == self.w {
            s.serialize_u64(self.h as u64)
        } else {
            [self.h, self.w].serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Hw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(usize),
            Two([usize; 2]),
        }
        Ok(match Either::deserialize(d)? {
            Either::One(n) => Hw::square(n),
            Either::Two([h, w]) => Hw { h, w },
        })
    }
}
