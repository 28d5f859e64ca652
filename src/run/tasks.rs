//! Multi-task runs (train-agent, meta-train): one task per env, budget and granularity, each
//! with its own evaluator over the env's pretrained model; the episode log they share; and
//! one explored episode on a task.

use super::folder::{new_run_dir, write_atomic, RunLock};
use super::heuristics::profile_env;
use super::{CONFIG_FILE, EPISODES_FILE};
use crate::agents::gnn::{GnnConfig, GraphAgent, ProfileReference};
use crate::agents::Learner;
use crate::config::{Distribution, EnvSpec};
use crate::env::{rollout, PruneEnv};
use crate::error::{Error, Result};
use crate::eval::{pretrained, EvalConfig, Evaluator, Score};
use crate::runlog::{MetricsSink, Progress};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One task per env, granularity and budget, each with its own evaluator over the env's
/// pretrained model (pretrained first where its checkpoint is missing) on `device`.
pub fn build_tasks(
    distribution: &Distribution<'_>,
    device: tch::Device,
    seed: u64,
) -> Result<Vec<Task>> {
    let mut tasks: Vec<Task> = Vec::new();
    for env in distribution.envs {
        let base = EnvSpec::load(env)?;
        let model = pretrained(&base, device, seed, &Progress::stderr())?;
        let own = [base.prune.granularity];
        let given = !distribution.granularities.is_empty();
        let granularities = if given {
            distribution.granularities
        } else {
            &own[..]
        };
        for &granularity in granularities {
            for &budget in distribution.budgets {
                let mut spec = base.clone();
                spec.prune.target.keep = budget;
                spec.prune.granularity = granularity;
                spec.validate().map_err(|e| {
                    e.noted(&format!(
                        "as a task of {} at {budget}",
                        distribution.config.display()
                    ))
                })?;
                let mut eval_config = EvalConfig::from_env(&spec, seed)?;
                eval_config.eval_samples = distribution.eval_samples;
                let name = if given {
                    format!("{}/{}@{budget}", spec.name, String::from(granularity))
                } else {
                    format!("{}@{budget}", spec.name)
                };
                if tasks.iter().any(|t| t.name == name) {
                    return Err(Error::Invalid {
                        path: distribution.config.to_path_buf(),
                        key: "envs".into(),
                        message: format!("two envs are named `{}` (or a budget repeats); give each env file its own `name`", spec.name),
                    });
                }
                tasks.push(Task {
                    name,
                    evaluator: Evaluator::new(&model.net, &model.data, eval_config)?,
                    spec,
                });
            }
        }
    }
    Ok(tasks)
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

/// Starts a multi-task run in `dir` (which must not hold a run yet): writes the config,
/// builds one env per task and a graph agent for all of them, and opens the episode log.
pub(crate) fn start_tasks(
    dir: &Path,
    config_toml: &str,
    tasks: &mut [Task],
    gnn: &GnnConfig,
    seed: u64,
) -> Result<(Vec<PruneEnv>, GraphAgent, TaskLog)> {
    let lock = new_run_dir(dir, "choose another folder")?;
    write_atomic(&dir.join(CONFIG_FILE), config_toml)?;
    let relative = gnn.reference == ProfileReference::BestHeuristic;
    let mut envs = Vec::with_capacity(tasks.len());
    for task in tasks.iter_mut() {
        let (env, _) = profile_env(&mut task.evaluator, &task.spec.path, relative, seed)?;
        envs.push(env);
    }
    let pairs: Vec<(&crate::prune::CostModel, f64)> = envs
        .iter()
        .map(|e| (e.costs(), e.wall().budget().keep))
        .collect();
    let agent = GraphAgent::for_tasks(gnn.clone(), &pairs, seed, tch::Device::Cpu)?;
    let log = TaskLog::create(&dir.join(EPISODES_FILE), tasks, lock)?;
    Ok((envs, agent, log))
}

/// `episodes.jsonl` of a multi-task run, and the best reward reached on each task. The run
/// folder's lock lives as long as the log: no second process writes into the folder.
pub(crate) struct TaskLog {
    file: std::fs::File,
    path: PathBuf,
    best: Vec<f64>,
    _lock: RunLock,
}

impl TaskLog {
    pub(crate) fn create(path: &Path, tasks: &[Task], lock: RunLock) -> Result<Self> {
        Ok(Self {
            file: std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
            path: path.to_path_buf(),
            best: vec![f64::NEG_INFINITY; tasks.len()],
            _lock: lock,
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
) -> Result<Score> {
    let started = Instant::now();
    let acted = rollout(agent, env, index, true);
    let score = task.evaluator.evaluate(&acted.policy)?;
    agent.learn(&acted.episode(index, score.reward))?;
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
