//! `autoprune meta-train --config C`: Reptile over a distribution of pruning tasks (every env
//! of the config, at every budget, at every granularity). Each iteration picks a task at
//! random, adapts the graph agent to it for `inner_episodes` episodes, and moves the
//! meta-weights toward the adapted ones ([`crate::agents::meta::Reptile`]). The result is an
//! agent checkpoint (`agent.safetensors` in the run folder) for `autoprune transfer` and for
//! searches with `agent = "meta"`.

use super::train_agent::{check_tasks, start_tasks, task_episode, Task};
use super::AGENT_FILE;
use crate::agents::gnn::GnnConfig;
use crate::agents::meta::{Reptile, ReptileConfig};
use crate::env::Granularity;
use crate::error::{Error, Result};
use crate::runlog::{MetricsSink, Progress};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A meta-training config (`configs/meta-train.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaTrainConfig {
    pub name: String,
    /// The env files whose models (and data sets) make up the task distribution.
    pub envs: Vec<PathBuf>,
    /// Budgets (fraction of each env's target metric to keep).
    pub budgets: Vec<f64>,
    /// Granularities to prune each env at (default: each env's own).
    #[serde(default)]
    pub granularities: Vec<Granularity>,
    #[serde(default)]
    pub seed: u64,
    /// Score each episode on only the first this many validation samples.
    #[serde(default)]
    pub eval_samples: Option<usize>,
    #[serde(default)]
    pub reptile: ReptileConfig,
    /// The graph agent and its inner-loop PPO.
    #[serde(default)]
    pub gnn: GnnConfig,
    #[serde(skip)]
    pub path: PathBuf,
}

impl MetaTrainConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: MetaTrainConfig = crate::env::parse_toml(&text, path)?;
        config.path = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: &str| Error::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        };
        if let Some((key, message)) = check_tasks(&self.envs, &self.budgets, self.eval_samples) {
            return Err(invalid(key, message));
        }
        if let Some((key, message)) = self.reptile.check().or_else(|| self.gnn.check()) {
            return Err(invalid(key, &message));
        }
        // PPO updates once every `episodes_per_update` episodes and each task starts with no
        // samples left over: fewer inner episodes would never move the weights, and a
        // remainder would be explored and thrown away.
        let per_update = self.gnn.episodes_per_update;
        if !self.reptile.inner_episodes.is_multiple_of(per_update) {
            return Err(invalid(
                "reptile.inner_episodes",
                &format!(
                    "{} is not a multiple of gnn.episodes_per_update ({per_update}): each task's adaptation must end on a PPO update",
                    self.reptile.inner_episodes
                ),
            ));
        }
        Ok(())
    }

    /// Episodes the whole run takes.
    pub fn episodes(&self) -> usize {
        self.reptile.iterations * self.reptile.inner_episodes
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

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
pub fn meta_train(
    config: &MetaTrainConfig,
    tasks: &mut [Task],
    dir: &Path,
    sink: &mut dyn MetricsSink,
    progress: Progress,
    stop: &AtomicBool,
) -> Result<MetaOutcome> {
    let (mut envs, agent, mut log) =
        start_tasks(dir, &config.to_toml(), tasks, &config.gnn, config.seed)?;
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
        let mut total = 0.0;
        for _ in 0..config.reptile.inner_episodes {
            let score = task_episode(
                reptile.agent(),
                &mut envs[t],
                &mut tasks[t],
                t,
                episode,
                &mut log,
                sink,
            )?;
            total += score.reward;
            episode += 1;
        }
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
    crate::policy::save_agent(agent.policy().var_store(), &agent_path)?;
    Ok(MetaOutcome {
        iterations,
        episodes: episode,
        interrupted,
        best: log.best(tasks),
        agent: agent_path,
    })
}
