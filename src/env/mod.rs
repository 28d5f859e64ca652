//! The pruning environment an agent acts in (`PruneEnv`: sequential, one-shot and profile
//! steps through the ActionWall) and the one rollout routine every loop uses.
//!
//! Must not know about agent internals, files or the evaluator's internals.

mod prune_env;
mod rollout;

pub use prune_env::{PruneEnv, StepResult, STATE_DIM};
pub use rollout::{rollout, Rollout};
