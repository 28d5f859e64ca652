//! Training one graph agent on several tasks at once (models and budgets), so that it learns
//! what transfers: `autoprune train-agent --config C`. Episodes cycle through the tasks; each
//! is scored by its own env's evaluator; the agent's network is written to the run folder
//! (`agent.safetensors`) for `autoprune transfer`.

use super::{write_atomic, AGENT_FILE, CONFIG_FILE};
use crate::agents::gnn::{GnnConfig, GraphAgent};
use crate::agents::{Agent, Episode, Learner, Observation};
use crate::env::{EnvSpec, PruneEnv};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::runlog::{MetricsSink, Progress};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// An agent-training config (`configs/gnn-train.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainAgentConfig {
    pub name: String,
    /// The env files whose models the agent trains on.
    pub envs: Vec<PathBuf>,
    /// Budgets (fraction of each env's target metric to keep); every env at every budget is
    /// one task.
    pub budgets: Vec<f64>,
    pub episodes: usize,
    #[serde(default)]
    pub seed: u64,
    /// Score each episode on only the first this many validation samples.
    #[serde(default)]
    pub eval_samples: Option<usize>,
    #[serde(default)]
    pub gnn: GnnConfig,
    #[serde(skip)]
    pub path: PathBuf,
}

/// What is wrong with a task distribution's keys, if anything: (key, message). Shared by
/// `train-agent` and `meta-train` configs.
pub(crate) fn check_tasks(
    envs: &[PathBuf],
    budgets: &[f64],
    eval_samples: Option<usize>,
) -> Option<(&'static str, &'static str)> {
    if envs.is_empty() {
        return Some(("envs", "name at least one env file"));
    }
    if budgets.is_empty() || budgets.iter().any(|b| !(*b > 0.0 && *b <= 1.0)) {
        return Some((
            "budgets",
            "give at least one budget, each a fraction in (0, 1]",
        ));
    }
    if eval_samples == Some(0) {
        return Some(("eval_samples", "must be at least 1"));
    }
    None
}

impl TrainAgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: TrainAgentConfig = crate::env::parse_toml(&text, path)?;
        config.path = path.to_path_buf();
        let invalid = |key: &str, message: &str| Error::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        };
        if let Some((key, message)) =
            check_tasks(&config.envs, &config.budgets, config.eval_samples)
        {
            return Err(invalid(key, message));
        }
        if config.episodes == 0 {
            return Err(invalid("episodes", "must be at least 1"));
        }
        if let Some((key, message)) = config.gnn.check() {
            return Err(invalid(key, &message));
        }
        Ok(config)
    }

    /// The config as TOML (written into the run folder).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// One task: an env's model at one budget, with its own evaluator.
pub struct Task {
    /// `<env name>@<budget>`.
    pub name: String,
    pub evaluator: Evaluator,
    pub spec: EnvSpec,
}

/// One training episode, as written to `episodes.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub episode: usize,
    pub task: String,
    pub reward: f64,
    pub accuracy: f64,
    pub params_kept: f64,
    pub flops_kept: f64,
    pub seconds: f64,
}

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
pub fn train_graph_agent(
    config: &TrainAgentConfig,
    tasks: &mut [Task],
    dir: &Path,
    sink: &mut dyn MetricsSink,
    progress: Progress,
    stop: &AtomicBool,
) -> Result<TrainOutcome> {
    let (mut envs, mut agent, mut log) =
        start_tasks(dir, &config.to_toml(), tasks, &config.gnn, config.seed)?;
    let bar = progress.bar(
        config.episodes as u64,
        &format!("gnn on {} tasks", tasks.len()),
    );
    let mut finished = 0;
    let mut interrupted = false;
    for index in 0..config.episodes {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let t = index % tasks.len();
        agent.select_task(t);
        task_episode(
            &mut agent,
            &mut envs[t],
            &mut tasks[t],
            t,
            index,
            &mut log,
            sink,
        )?;
        finished = index + 1;
        bar.set_position(finished as u64);
    }
    bar.finish_and_clear();
    let agent_path = dir.join(AGENT_FILE);
    crate::policy::save_agent(agent.policy().var_store(), &agent_path)?;
    Ok(TrainOutcome {
        episodes: finished,
        interrupted,
        best: log.best(tasks),
        agent: agent_path,
    })
}

/// Starts a multi-task run in `dir` (which must not hold a run yet): writes the config,
/// builds one env per task and a graph agent for all of them, and opens the episode log.
pub(crate) fn start_tasks(
    dir: &Path,
    config_toml: &str,
    tasks: &[Task],
    gnn: &GnnConfig,
    seed: u64,
) -> Result<(Vec<PruneEnv>, GraphAgent, TaskLog)> {
    super::new_run_dir(dir, "choose another folder")?;
    write_atomic(&dir.join(CONFIG_FILE), config_toml)?;
    let mut envs = Vec::with_capacity(tasks.len());
    for task in tasks {
        envs.push(PruneEnv::new(task.evaluator.wall(&task.spec.path)?));
    }
    let pairs: Vec<(&crate::prune::CostModel, f64)> = envs
        .iter()
        .map(|e| (e.costs(), e.wall().budget().keep))
        .collect();
    let agent = GraphAgent::for_tasks(gnn.clone(), &pairs, seed, tch::Device::Cpu)?;
    let log = TaskLog::create(&dir.join(super::EPISODES_FILE), tasks)?;
    Ok((envs, agent, log))
}

/// `episodes.jsonl` of a multi-task run, and the best reward reached on each task.
pub(crate) struct TaskLog {
    file: std::fs::File,
    path: PathBuf,
    best: Vec<f64>,
}

impl TaskLog {
    pub(crate) fn create(path: &Path, tasks: &[Task]) -> Result<Self> {
        Ok(Self {
            file: std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
            path: path.to_path_buf(),
            best: vec![f64::NEG_INFINITY; tasks.len()],
        })
    }

    /// (task name, best reward) in task order.
    pub(crate) fn best(&self, tasks: &[Task]) -> Vec<(String, f64)> {
        tasks
            .iter()
            .zip(&self.best)
            .map(|(t, b)| (t.name.clone(), *b))
            .collect()
    }
}

/// One explored episode of `agent` (already on task `t`) on `env`: act, fit to the budget,
/// score, learn, then log to `log` and `sink`. Returns the score.
pub(crate) fn task_episode(
    agent: &mut GraphAgent,
    env: &mut PruneEnv,
    task: &mut Task,
    t: usize,
    index: usize,
    log: &mut TaskLog,
    sink: &mut dyn MetricsSink,
) -> Result<crate::eval::Score> {
    let started = Instant::now();
    agent.begin_episode(index);
    let actions = agent.act(Observation::Graph(env.graph_state()), true);
    let keeps = env.step_profile(&actions);
    let score = task.evaluator.evaluate(&keeps)?;
    agent.learn(&Episode {
        index,
        transitions: Vec::new(),
        proposed: actions,
        reward: score.reward,
    })?;
    log.best[t] = log.best[t].max(score.reward);
    let record = TaskRecord {
        episode: index,
        task: task.name.clone(),
        reward: score.reward,
        accuracy: score.accuracy,
        params_kept: score.params_kept,
        flops_kept: score.flops_kept,
        seconds: started.elapsed().as_secs_f64(),
    };
    let line = serde_json::to_string(&record).map_err(|e| Error::data(&log.path, e.to_string()))?;
    log.file
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|_| log.file.flush())
        .map_err(|e| Error::io(&log.path, e))?;
    sink.scalar(&format!("reward/{}", task.name), score.reward, index);
    sink.scalar(&format!("accuracy/{}", task.name), score.accuracy, index);
    sink.scalar(&format!("best/reward/{}", task.name), log.best[t], index);
    sink.flush()?;
    Ok(score)
}
