//! Multi-task runs (train-agent, meta-train): one task per env, budget and granularity, each
//! with its own evaluator over the env's pretrained model; the episode log they share; and
//! one explored episode on a task.

use super::folder::{
    keep_complete, new_run_dir, read_numbered, read_run_record, write_atomic, RunLock, RunRecord,
};
use super::heuristics::profile_env;
use super::pool::{score_job, score_jobs, Job, JobResult, Recipe, Rescore, Scorer};
use super::{CONFIG_FILE, EPISODES_FILE, REFERENCES_FILE, RUN_FILE};
use crate::agents::gnn::{GnnConfig, GraphAgent, ProfileReference};
use crate::agents::{Agent, Learner};
use crate::config::{Distribution, EnvSpec};
use crate::env::{rollout, PruneEnv};
use crate::error::{Error, Result};
use crate::eval::{pretrained, EvalConfig, Evaluator, Score};
use crate::runlog::{MetricsSink, Progress};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
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
                    recipe: Recipe {
                        spec: spec.clone(),
                        spec_path: spec.path.clone(),
                        seed,
                        eval_samples: distribution.eval_samples,
                        threads: None,
                        device: "auto".into(),
                        pruningnet: None,
                    },
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
    /// What another process needs to build the same evaluator (MPI workers); the command
    /// line sets its threads and device.
    pub recipe: Recipe,
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
    /// The policy's keep ratios (what a resume checks its replay against).
    #[serde(default)]
    pub keeps: Vec<f64>,
}

/// How a multi-task run opens its folder.
pub enum Opening {
    /// A new run: the folder must not hold one; `RunRecord` is written for a later resume.
    New(RunRecord),
    /// The run the folder holds, continued with what it recorded: its logged episodes are
    /// replayed, not scored.
    Resume(RunRecord),
}

/// The config file and run record of the multi-task run in `dir`, and how many episodes it
/// logged, for `--resume` (read before its tasks are built; the run takes the folder's lock
/// when it opens it).
pub fn resumable(dir: &Path) -> Result<(PathBuf, RunRecord, usize)> {
    if !dir.join(CONFIG_FILE).is_file() || !dir.join(EPISODES_FILE).is_file() {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            key: "--resume".into(),
            message: format!(
                "holds no run ({CONFIG_FILE} or {EPISODES_FILE} is missing); give the folder a run wrote, or start one with --config"
            ),
        });
    }
    let (logged, _) = read_numbered(&dir.join(EPISODES_FILE), |r: &TaskRecord| r.episode)?;
    Ok((
        dir.join(CONFIG_FILE),
        read_run_record(&dir.join(RUN_FILE))?,
        logged.len(),
    ))
}

/// Starts a multi-task run in `dir` (a new one: the config and run record are written; or
/// the one it holds, to resume), builds one env per task and a graph agent for all of them,
/// and opens the episode log. For agents relative to the best heuristic, each task's
/// heuristics are scored once and its reference kept in the folder's `references.json`, which
/// a resume reads instead of scoring them again.
pub(crate) fn start_tasks(
    dir: &Path,
    config_toml: &str,
    tasks: &mut [Task],
    gnn: &GnnConfig,
    seed: u64,
    opening: &Opening,
    progress: &Progress,
) -> Result<(Vec<PruneEnv>, GraphAgent, TaskLog)> {
    let lock = match opening {
        Opening::New(record) => {
            let lock = new_run_dir(dir, "resume it with --resume, or choose another folder")?;
            write_atomic(&dir.join(CONFIG_FILE), config_toml)?;
            let record =
                serde_json::to_string(record).map_err(|e| Error::data(dir, e.to_string()))?;
            write_atomic(&dir.join(RUN_FILE), &format!("{record}\n"))?;
            lock
        }
        Opening::Resume(_) => {
            let lock = RunLock::acquire(dir)?;
            crate::fsio::remove_stale_temporaries(dir);
            // The length may have changed (`train-agent --resume --episodes N`).
            write_atomic(&dir.join(CONFIG_FILE), config_toml)?;
            lock
        }
    };
    let relative = gnn.reference == ProfileReference::BestHeuristic;
    let references_path = dir.join(REFERENCES_FILE);
    let mut references = match opening {
        Opening::Resume(_) if relative => read_references(&references_path)?,
        _ => BTreeMap::new(),
    };
    let to_score = tasks
        .iter()
        .filter(|t| relative && !references.contains_key(&t.name))
        .count();
    let bar = progress.bar(to_score as u64, "scoring the heuristics of each task");
    let mut envs = Vec::with_capacity(tasks.len());
    for task in tasks.iter_mut() {
        let env = match references.get(&task.name) {
            Some(reference) => {
                let mut env = PruneEnv::new(task.evaluator.wall(&task.spec.path)?);
                if reference.len() != env.len() {
                    return Err(Error::data(
                        &references_path,
                        format!(
                            "task `{}` has {} reference keep ratios for {} units; the file is not this run's (remove it to score the heuristics again)",
                            task.name,
                            reference.len(),
                            env.len()
                        ),
                    ));
                }
                env.set_reference(Some(reference.clone()));
                env
            }
            None => {
                let (env, _) =
                    profile_env(&mut task.evaluator, &task.spec.path, relative, seed, false)?;
                if let Some(reference) = env.reference() {
                    references.insert(task.name.clone(), reference.to_vec());
                }
                bar.inc(u64::from(relative));
                env
            }
        };
        envs.push(env);
    }
    bar.finish_and_clear();
    if relative {
        let text = serde_json::to_string_pretty(&references)
            .map_err(|e| Error::data(&references_path, e.to_string()))?;
        write_atomic(&references_path, &format!("{text}\n"))?;
    }
    let pairs: Vec<(&crate::prune::CostModel, f64)> = envs
        .iter()
        .map(|e| (e.costs(), e.wall().budget().keep))
        .collect();
    let agent = GraphAgent::for_tasks(gnn.clone(), &pairs, seed, tch::Device::Cpu)?;
    let log = match opening {
        Opening::New(_) => TaskLog::create(&dir.join(EPISODES_FILE), tasks, lock)?,
        Opening::Resume(_) => TaskLog::resume(&dir.join(EPISODES_FILE), tasks, lock)?,
    };
    Ok((envs, agent, log))
}

/// The references a multi-task run kept (none when it kept no file: a run from before they
/// were kept scores its heuristics again).
fn read_references(path: &Path) -> Result<BTreeMap<String, Vec<f64>>> {
    if !path.is_file() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let references: BTreeMap<String, Vec<f64>> = serde_json::from_str(&text).map_err(|e| {
        Error::data(
            path,
            format!("{e}; remove the file to score the heuristics again"),
        )
    })?;
    let feasible = |keeps: &Vec<f64>| {
        keeps
            .iter()
            .all(|k| k.is_finite() && (0.0..=1.0).contains(k))
    };
    if let Some((task, _)) = references.iter().find(|(_, keeps)| !feasible(keeps)) {
        return Err(Error::data(
            path,
            format!("task `{task}` has a reference keep ratio outside [0, 1]; remove the file to score the heuristics again"),
        ));
    }
    Ok(references)
}

/// `episodes.jsonl` of a multi-task run, and the best reward reached on each task. The run
/// folder's lock lives as long as the log: no second process writes into the folder.
pub(crate) struct TaskLog {
    file: std::fs::File,
    path: PathBuf,
    best: Vec<f64>,
    /// Episodes a resumed run recorded before: replayed, not scored again.
    recorded: Vec<TaskRecord>,
    _lock: RunLock,
}

impl TaskLog {
    pub(crate) fn create(path: &Path, tasks: &[Task], lock: RunLock) -> Result<Self> {
        Ok(Self {
            file: std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
            path: path.to_path_buf(),
            best: vec![f64::NEG_INFINITY; tasks.len()],
            recorded: Vec::new(),
            _lock: lock,
        })
    }

    /// The log of a run to resume: its complete records (a torn last line dropped from the
    /// file), each checked, with the best reward per task they reached.
    fn resume(path: &Path, tasks: &[Task], lock: RunLock) -> Result<Self> {
        let (recorded, valid) = read_numbered(path, |r: &TaskRecord| r.episode)?;
        let mut best = vec![f64::NEG_INFINITY; tasks.len()];
        for (line, record) in recorded.iter().enumerate() {
            let fraction = |x: f64| (0.0..=1.0).contains(&x);
            let Some(t) = tasks.iter().position(|t| t.name == record.task) else {
                return Err(Error::data(
                    path,
                    format!(
                        "line {} records task `{}`, which the run's config does not have; the log is not this run's",
                        line + 1,
                        record.task
                    ),
                ));
            };
            let ranges = record.reward.is_finite()
                && fraction(record.accuracy)
                && fraction(record.params_kept)
                && fraction(record.flops_kept)
                && record.keeps.iter().all(|&k| fraction(k));
            if !ranges {
                return Err(Error::data(
                    path,
                    format!(
                        "line {}: a reward that is not finite, or an accuracy or kept fraction outside [0, 1]; the log is damaged",
                        line + 1
                    ),
                ));
            }
            best[t] = best[t].max(record.reward);
        }
        keep_complete(path, valid)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            best,
            recorded,
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

/// Where a multi-task run's episodes are scored: here, or by other processes that prepared
/// every task's evaluator (`handles[t]` is task t's).
pub struct TaskScorer<'a> {
    pub remote: Option<&'a mut dyn Scorer>,
    pub handles: Vec<usize>,
}

impl<'a> TaskScorer<'a> {
    /// Prepares every task on `remote`'s processes (None: episodes are scored here), with
    /// `deadline` seconds allowed per evaluation there.
    pub fn new(remote: Option<&'a mut dyn Scorer>, tasks: &[Task], deadline: f64) -> Result<Self> {
        let mut handles = Vec::with_capacity(tasks.len());
        let remote = match remote {
            Some(scorer) => {
                scorer.set_deadline(deadline);
                for task in tasks {
                    handles.push(scorer.prepare(&task.recipe)?);
                }
                Some(scorer)
            }
            None => None,
        };
        Ok(Self { remote, handles })
    }
}

/// Explored episodes `first..first + count` of `agent`, episode i on task `task_of(i)`: the
/// agent acts in batches of what it proposes before learning ([`Agent::ahead`]), the batch is
/// scored (in parallel where `scorer` has processes), and each result is learned from and
/// logged in episode order. Stops before the next evaluation once `stop` is set. Returns
/// the rewards of the episodes finished, in order.
///
/// [`Agent::ahead`]: crate::agents::Agent::ahead
#[allow(clippy::too_many_arguments)]
pub(crate) fn task_episodes(
    agent: &mut GraphAgent,
    envs: &mut [PruneEnv],
    tasks: &mut [Task],
    task_of: &dyn Fn(usize) -> usize,
    (first, count): (usize, usize),
    log: &mut TaskLog,
    sink: &mut dyn MetricsSink,
    scorer: &mut TaskScorer<'_>,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let mut rewards = Vec::with_capacity(count);
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let end = first + count;
    let mut index = first;
    while index < end {
        let ahead = agent.ahead(index).clamp(1, end - index);
        let mut acted = Vec::with_capacity(ahead);
        let mut jobs = Vec::with_capacity(ahead);
        for i in index..index + ahead {
            let t = task_of(i);
            agent.select_task(t);
            let rollout = rollout(agent, &mut envs[t], i, true);
            jobs.push(Job {
                recipe: scorer.handles.get(t).copied().unwrap_or(0),
                episode: i,
                policy: rollout.policy.clone(),
                rescore: Rescore::Never,
            });
            acted.push(Some((t, rollout)));
        }
        // Episodes the log holds already (a resume) are learned from as recorded.
        let replayed = log.recorded.len().clamp(index, index + ahead) - index;
        for (position, act) in acted.iter_mut().take(replayed).enumerate() {
            let i = index + position;
            let Some((t, rollout)) = act.take() else {
                continue;
            };
            let reward = log.replay(i, &names[t], &rollout.policy, envs[t].costs())?;
            agent.learn(&rollout.episode(i, reward))?;
            rewards.push(reward);
        }
        let jobs = jobs.split_off(replayed);
        let mut last = Instant::now();
        let mut each = |position: usize, result: JobResult| -> Result<()> {
            let position = position + replayed;
            let i = index + position;
            let Some((t, rollout)) = acted[position].take() else {
                return Ok(());
            };
            let score = result.score;
            let name = &names[t];
            let seconds = last.elapsed().as_secs_f64();
            log.record(name, t, i, &score, &rollout.policy, seconds)?;
            agent.learn(&rollout.episode(i, score.reward))?;
            sink.scalar(&format!("reward/{name}"), score.reward, i);
            sink.scalar(&format!("accuracy/{name}"), score.accuracy, i);
            sink.scalar(&format!("best/reward/{name}"), log.best[t], i);
            sink.flush()?;
            rewards.push(score.reward);
            last = Instant::now();
            Ok(())
        };
        let scored = score_jobs(
            scorer.remote.as_deref_mut(),
            &mut |job| {
                let t = task_of(job.episode);
                score_job(&mut tasks[t].evaluator, job)
            },
            &jobs,
            stop,
            &mut each,
        )?;
        if scored < jobs.len() {
            break;
        }
        index += ahead;
    }
    Ok(rewards)
}

impl TaskLog {
    /// The recorded reward of episode `index`, replayed: the episode must be on the task
    /// and choose the policy recorded (else the run cannot be resumed as it ran).
    fn replay(
        &self,
        index: usize,
        task: &str,
        policy: &[f64],
        costs: &crate::prune::CostModel,
    ) -> Result<f64> {
        let record = &self.recorded[index];
        let same_policy = if record.keeps.is_empty() {
            let counts = costs.counts(policy);
            counts.params_kept == record.params_kept && counts.flops_kept == record.flops_kept
        } else {
            record.keeps.len() == policy.len()
                && record
                    .keeps
                    .iter()
                    .zip(policy)
                    .all(|(a, b)| (a - b).abs() <= 1e-12)
        };
        if record.task != task || !same_policy {
            return Err(Error::data(
                &self.path,
                format!("episode {index} chose another task or policy than the one recorded; the run cannot be resumed with this build, config or device"),
            ));
        }
        Ok(record.reward)
    }

    /// Appends episode `index` on task `t` to the log and keeps the task's best reward.
    fn record(
        &mut self,
        name: &str,
        t: usize,
        index: usize,
        score: &Score,
        policy: &[f64],
        seconds: f64,
    ) -> Result<()> {
        self.best[t] = self.best[t].max(score.reward);
        let record = TaskRecord {
            episode: index,
            task: name.to_string(),
            reward: score.reward,
            accuracy: score.accuracy,
            params_kept: score.params_kept,
            flops_kept: score.flops_kept,
            seconds,
            keeps: policy.to_vec(),
        };
        let line =
            serde_json::to_string(&record).map_err(|e| Error::data(&self.path, e.to_string()))?;
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}
