//! Runs: run folders (one naming function), the search loop, multi-task training
//! (train-agent, meta-train), adaptation curves, and the one way long commands stop on
//! Ctrl-C.
//!
//! `autoprune search` runs an agent against the pruning env for a number of episodes, keeps
//! the best policy (by reward on the evaluation split), logs every episode to TensorBoard and
//! to a JSONL file in the run folder, and can resume a run folder after a crash or Ctrl-C.
//!
//! Resuming replays the recorded episodes: the agent acts and learns again from the same seed
//! (its choices are checked against the record) while the recorded scores stand in for the
//! evaluations, so a resumed run continues exactly where the uninterrupted one would be.
//!
//! Must not know about the command line.

pub mod adapt;
pub mod agent_file;
mod episodes;
mod failpoint;
pub mod finetune;
mod folder;
pub mod heuristics;
pub mod interrupt;
pub mod meta_train;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pool;
pub mod proxy;
mod pruningnet;
mod search;
pub mod tasks;
pub mod train_agent;

pub use folder::{
    new_run_dir, read_records, remove_if_only_lock, run_dir, EpisodeRecord, RunFolder, RunLock,
    RunRecord, WholeSplit,
};
pub use pruningnet::check_pruningnet_env;
pub use search::{build_agent, test_score, Search, SearchOutcome};

/// Files of a run folder.
pub const CONFIG_FILE: &str = "config.toml";
pub const ENV_FILE: &str = "env.toml";
pub const EPISODES_FILE: &str = "episodes.jsonl";
pub const BEST_FILE: &str = "best.json";
pub const WEIGHTS_FILE: &str = "weights.txt";
/// What a resume must repeat that the config does not hold (`--threads`).
pub const RUN_FILE: &str = "run.json";
/// The reference allocation of each task of a multi-task run (the best heuristic's policy,
/// for agents relative to it), kept so a resume need not score the heuristics again.
pub const REFERENCES_FILE: &str = "references.json";
/// The lock of the process that works in the folder (it holds that process's id).
pub const LOCK_FILE: &str = "lock";
/// The agent's network at the end of the run (agents that have one).
pub const AGENT_FILE: &str = "agent.safetensors";
/// The trained PruningNet (searches with `agent = "pruningnet"`).
pub const PRUNINGNET_FILE: &str = "pruningnet.safetensors";
