//! Pruning environments: `EnvSpec`, parsed from `envs/*.toml` and validated into typed errors
//! before anything runs.
//!
//! Must not know about agent internals.

mod spec;

pub use spec::{
    Arch, DataSpec, EnvSpec, Granularity, Metric, ModelSpec, PruneSpec, RewardKind, RewardSpec,
    Target,
};
