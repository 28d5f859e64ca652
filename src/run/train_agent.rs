//! Training one graph agent on several tasks at once (models and budgets), so that it learns
//! what transfers: `autoprune train-agent --config C`. Episodes cycle through the tasks; each
//! is scored by its own env's evaluator; the agent's network is written to the run folder
//! (`agent.safetensors`) for `autoprune transfer`.

use super::agent_file::save_agent;
use super::pool::Scorer;
use super::tasks::{start_tasks, task_episodes, Opening, Task, TaskScorer};
use super::AGENT_FILE;
use crate::config::{Checked, TrainAgentConfig};
use crate::error::Result;
use crate::runlog::{MetricsSink, Progress};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How a training run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub episodes: usize,
    pub interrupted: bool,
    /// The best reward reached on each task, in task order.
    pub best: Vec<(String, f64)>,
    pub agent: PathBuf,
}

/// Trains a graph agent on `tasks`, episodes cycling through them, logging to `dir` (which
/// must not hold a run yet) and `sink`; writes the agent to `dir/agent.safetensors`.
#[allow(clippy::too_many_arguments)]
pub fn train_graph_agent(
    config: &Checked<TrainAgentConfig>,
    tasks: &mut [Task],
    dir: &Path,
    sink: &mut dyn MetricsSink,
    progress: Progress,
    stop: &AtomicBool,
    remote: Option<&mut dyn Scorer>,
    opening: &Opening,
) -> Result<TrainOutcome> {
    let mut scorer = TaskScorer::new(remote, tasks, config.eval_deadline)?;
    let (mut envs, mut agent, mut log) = start_tasks(
        dir,
        &config.to_toml()?,
        tasks,
        &config.gnn,
        config.seed,
        opening,
        &progress,
    )?;
    let bar = progress.bar(
        config.episodes as u64,
        &format!("gnn on {} tasks", tasks.len()),
    );
    let n = tasks.len();
    let mut finished = 0;
    // In chunks, so the bar moves and Ctrl-C is seen between them (a chunk ends on a batch
    // of the agent's, so chunking changes nothing the agent does).
    let chunk = config.gnn.episodes_per_update;
    while finished < config.episodes && !stop.load(Ordering::SeqCst) {
        let count = chunk.min(config.episodes - finished);
        let rewards = task_episodes(
            &mut agent,
            &mut envs,
            tasks,
            &|i| i % n,
            (finished, count),
            &mut log,
            sink,
            &mut scorer,
            stop,
        )?;
        finished += rewards.len();
        bar.set_position(finished as u64);
        if rewards.len() < count {
            break;
        }
    }
    let interrupted = finished < config.episodes;
    bar.finish_and_clear();
    let agent_path = dir.join(AGENT_FILE);
    save_agent(&agent.to_checkpoint(), &agent_path)?;
    Ok(TrainOutcome {
        episodes: finished,
        interrupted,
        best: log.best(tasks),
        agent: agent_path,
    })
}
