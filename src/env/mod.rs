//! Pruning environments: `EnvSpec`, parsed from `envs/*.toml` and validated into typed errors
//! before anything runs.
//!
//! Must not know about agent internals.

mod prune_env;
mod spec;

pub use prune_env::{PruneEnv, StepResult, STATE_DIM};
pub use spec::{
    parse_toml, Arch, DataSpec, EnvSpec, Granularity, Metric, ModelSpec, PruneSpec, RewardKind,
    RewardSpec, Target,
};
