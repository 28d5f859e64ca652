//! `autoprune meta-train --config C`: Reptile over a distribution of pruning tasks (every env
//! of the config, at every budget, at every granularity). Each iteration picks a task at
//! random, adapts the graph agent to it for `inner_episodes` episodes, and moves the
//! meta-weights toward the adapted ones ([`crate::agents::meta::Reptile`]). The result is an
//! agent checkpoint (`agent.safetensors` in the run folder) for `autoprune transfer` and for
//! searches with `agent = "meta"`.

use super::agent_file::save_agent;
use super::pool::Scorer;
use super::tasks::{start_tasks, task_episodes, Opening, Task, TaskScorer};
use super::AGENT_FILE;
use crate::agents::meta::Reptile;
use crate::config::{Checked, MetaTrainConfig};
use crate::error::Result;
use crate::runlog::{MetricsSink, Progress};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How a meta-training run ended.
#[derive(Debug, Clone)]
pub struct MetaOutcome {
    pub iterations: usize,
    pub episodes: usize,
    pub interrupted: bool,
    /// The best reward reached on each task during adaptation, in task order.
    pub best: Vec<(String, f64)>,
    pub agent: PathBuf,
}

/// Runs Reptile over `tasks`, logging to `dir` (which must not hold a run yet) and `sink`;
/// writes the meta-trained agent to `dir/agent.safetensors`. On Ctrl-C the run stops after
/// the iteration in flight and the agent is still written.
#[allow(clippy::too_many_arguments)]
pub fn meta_train(
    config: &Checked<MetaTrainConfig>,
    tasks: &mut [Task],
    dir: &Path,
    sink: &mut dyn MetricsSink,
    progress: Progress,
    stop: &AtomicBool,
    remote: Option<&mut dyn Scorer>,
    opening: &Opening,
) -> Result<MetaOutcome> {
    let mut scorer = TaskScorer::new(remote, tasks, config.eval_deadline)?;
    // An iteration's episodes all run: Ctrl-C is honoured between iterations.
    let never = AtomicBool::new(false);
    let (mut envs, agent, mut log) = start_tasks(
        dir,
        &config.to_toml()?,
        tasks,
        &config.gnn,
        config.seed,
        opening,
        &progress,
    )?;
    let mut reptile = Reptile::new(agent);
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5EED_4E7A);
    let bar = progress.bar(
        config.reptile.iterations as u64,
        &format!("reptile on {} tasks", tasks.len()),
    );
    let (mut iterations, mut episode, mut interrupted) = (0, 0, false);
    for iteration in 0..config.reptile.iterations {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let t = rng.random_range(0..tasks.len());
        reptile.begin_task(t)?;
        let rewards = task_episodes(
            reptile.agent(),
            &mut envs,
            tasks,
            &|_| t,
            (episode, config.reptile.inner_episodes),
            &mut log,
            sink,
            &mut scorer,
            &never,
        )?;
        let total: f64 = rewards.iter().sum();
        episode += rewards.len();
        let epsilon = config.reptile.step_size(iteration);
        reptile.end_task(epsilon);
        sink.scalar(
            "meta/inner_mean_reward",
            total / config.reptile.inner_episodes as f64,
            iteration,
        );
        sink.scalar("meta/step_size", epsilon, iteration);
        sink.flush()?;
        iterations = iteration + 1;
        bar.set_position(iterations as u64);
        bar.set_message(tasks[t].name.clone());
    }
    bar.finish_and_clear();
    let agent_path = dir.join(AGENT_FILE);
    let agent = reptile.into_agent();
    save_agent(&agent.to_checkpoint(), &agent_path)?;
    Ok(MetaOutcome {
        iterations,
        episodes: episode,
        interrupted,
        best: log.best(tasks),
        agent: agent_path,
    })
}
