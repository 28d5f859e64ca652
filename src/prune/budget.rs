//! The budget types every layer shares: how weights are removed (granularity), which cost a
//! budget is stated in (metric) and the budget itself (target). Env files, the wall, the
//! cost model and policy files all speak in these.
//!
//! Must not know about env files, models or agents.

use serde::{Deserialize, Serialize};

/// Which cost a budget is stated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Params,
    Flops,
    /// Latency on the evaluator's device, predicted by a measured table (channel pruning).
    Latency,
}

/// Keep this fraction of the dense model's prunable params or FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub metric: Metric,
    pub keep: f64,
}

/// How weights are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Granularity {
    Unstructured,
    Channel,
    /// Keep `n` of every `m` consecutive weights along the input dimension.
    NOfM {
        n: usize,
        m: usize,
    },
}

impl Granularity {
    /// Whether policies of one granularity apply to the other: the same kind, and for N:M the
    /// same M (a policy's keep ratios choose each layer's N).
    pub fn compatible(self, other: Granularity) -> bool {
        match (self, other) {
            (Granularity::NOfM { m: a, .. }, Granularity::NOfM { m: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }
}

impl TryFrom<String> for Granularity {
    type Error = String;

    fn try_from(value: String) -> std::result::Result<Self, String> {
        match value.as_str() {
            "unstructured" => Ok(Granularity::Unstructured),
            "channel" => Ok(Granularity::Channel),
            other => {
                let parsed = other
                    .split_once(':')
                    .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
                match parsed {
                    Some((n, m)) if n >= 1 && n <= m => Ok(Granularity::NOfM { n, m }),
                    _ => Err(format!(
                        "granularity `{other}` is not one of unstructured, channel, or N:M with 1 <= N <= M (e.g. \"2:4\")"
                    )),
                }
            }
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        Granularity::try_from(text.to_string())
    }
}

impl From<Granularity> for String {
    fn from(value: Granularity) -> String {
        match value {
            Granularity::Unstructured => "unstructured".into(),
            Granularity::Channel => "channel".into(),
            Granularity::NOfM { n, m } => format!("{n}:{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularities_parse_and_print_back() {
        for text in ["unstructured", "channel", "2:4", "1:1", "3:8"] {
            let parsed: Granularity = text.parse().unwrap();
            assert_eq!(String::from(parsed), text);
        }
        assert_eq!(
            " 2 : 4".parse::<Granularity>(),
            Ok(Granularity::NOfM { n: 2, m: 4 })
        );
        for bad in ["", "dense", "0:4", "5:4", "2:", ":4", "a:b"] {
            assert!(bad.parse::<Granularity>().is_err(), "{bad}");
        }
    }

    #[test]
    fn n_of_m_policies_carry_over_only_at_the_same_m() {
        let two_four = Granularity::NOfM { n: 2, m: 4 };
        assert!(two_four.compatible(Granularity::NOfM { n: 1, m: 4 }));
        assert!(!two_four.compatible(Granularity::NOfM { n: 2, m: 8 }));
        assert!(!Granularity::Channel.compatible(Granularity::Unstructured));
        assert!(Granularity::Channel.compatible(Granularity::Channel));
    }
}
