//! `autoprune search`: runs an agent against the pruning env for a number of episodes, keeps
//! the best policy (by reward on the evaluation split), logs every episode to TensorBoard and
//! to a JSONL file in the run folder, and can resume a run folder after a crash or Ctrl-C.
//!
//! Resuming replays the recorded episodes: the agent acts and learns again from the same seed
//! (its choices are checked against the record) while the recorded scores stand in for the
//! evaluations, so a resumed run continues exactly where the uninterrupted one would be.

pub mod adapt;
mod config;
pub mod meta_train;
pub mod train_agent;

pub use config::SearchConfig;

use crate::agents::ddpg::Ddpg;
use crate::agents::evolution::Evolution;
use crate::agents::gnn::GraphAgent;
use crate::agents::ppo::Ppo;
use crate::agents::random::RandomSearch;
use crate::agents::{AgentKind, Episode, Mode, Observation, SearchAgent, Transition};
use crate::data::SplitName;
use crate::env::{EnvSpec, PruneEnv, STATE_DIM};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, LayerKeep, Score};
use crate::policy::{fingerprint, now_rfc3339, PolicyFile, SCHEMA};
use crate::runlog::{MetricsSink, Progress};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Files of a run folder.
pub const CONFIG_FILE: &str = "config.toml";
pub const ENV_FILE: &str = "env.toml";
pub const EPISODES_FILE: &str = "episodes.jsonl";
pub const BEST_FILE: &str = "best.json";
pub const WEIGHTS_FILE: &str = "weights.txt";
/// The agent's network at the end of the run (agents that have one).
pub const AGENT_FILE: &str = "agent.safetensors";
/// The trained PruningNet (searches with `agent = "pruningnet"`).
pub const PRUNINGNET_FILE: &str = "pruningnet.safetensors";

/// One finished episode, as written to `episodes.jsonl` (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub episode: usize,
    pub reward: f64,
    pub accuracy: f64,
    pub loss: f64,
    pub params_kept: f64,
    pub flops_kept: f64,
    pub params: usize,
    pub flops: usize,
    pub best_reward: f64,
    /// The policy's keep ratios, one per unit.
    pub keeps: Vec<f64>,
    /// Exactly the scalars logged to TensorBoard for this episode (tag -> value).
    pub scalars: BTreeMap<String, f64>,
    /// Wall time of the episode (agent, environment, evaluator).
    pub seconds: f64,
    /// The part of `seconds` spent in the evaluator.
    #[serde(default)]
    pub eval_seconds: f64,
    /// Resident memory of the process after the episode, and its peak so far, in bytes
    /// (0 where the system does not say).
    #[serde(default)]
    pub rss_bytes: u64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

/// Reads the complete records of an episodes file. A torn last line (a crash mid-write, no
/// newline yet) is dropped; any other line that is not a record is an error. Returns the
/// records and the byte length they span.
pub fn read_records(path: &Path) -> Result<(Vec<EpisodeRecord>, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut records = Vec::new();
    let mut valid = 0u64;
    let mut rest = bytes.as_slice();
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let record: EpisodeRecord = serde_json::from_slice(line).map_err(|e| {
            Error::data(
                path,
                format!(
                    "line {} is not an episode record ({e}); the log is damaged",
                    records.len() + 1
                ),
            )
        })?;
        if record.episode != records.len() {
            return Err(Error::data(
                path,
                format!(
                    "line {} records episode {}; the file is not a run's episode log",
                    records.len() + 1,
                    record.episode
                ),
            ));
        }
        records.push(record);
        valid += end as u64 + 1;
        rest = &rest[end + 1..];
    }
    Ok((records, valid))
}

/// A run folder: config and env as the run uses them, the episode log, the best policy and
/// the TensorBoard events.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
}

impl RunFolder {
    /// Creates a new run folder holding the config and env text. Refuses a folder that already
    /// holds a run (use `--resume` for that).
    pub fn create(dir: &Path, config: &SearchConfig, env_text: &str) -> Result<Self> {
        new_run_dir(dir, "resume it with --resume, or choose another folder")?;
        write_atomic(&dir.join(CONFIG_FILE), &config.to_toml())?;
        write_atomic(&dir.join(ENV_FILE), env_text)?;
        write_atomic(&dir.join(EPISODES_FILE), "")?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens a run folder to resume it: its config, its env and the episodes it finished.
    pub fn open(dir: &Path) -> Result<(Self, SearchConfig, EnvSpec, Vec<EpisodeRecord>)> {
        if !dir.join(CONFIG_FILE).is_file() || !dir.join(EPISODES_FILE).is_file() {
            return Err(Error::Invalid {
                path: dir.to_path_buf(),
                key: "--resume".into(),
                message: format!(
                    "holds no run ({CONFIG_FILE} or {EPISODES_FILE} is missing); give the folder a search wrote, or start one with --config"
                ),
            });
        }
        crate::fsio::remove_stale_temporaries(dir);
        let config = SearchConfig::load(&dir.join(CONFIG_FILE))?;
        let spec = EnvSpec::load(&dir.join(ENV_FILE))?;
        let (records, valid) = read_records(&dir.join(EPISODES_FILE))?;
        // Drop a torn last line so appends continue a clean file.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(EPISODES_FILE))
            .map_err(|e| Error::io(dir.join(EPISODES_FILE), e))?;
        file.set_len(valid)
            .map_err(|e| Error::io(dir.join(EPISODES_FILE), e))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
            },
            config,
            spec,
            records,
        ))
    }
}

impl RunFolder {
    /// Ties the run to the pretrained weights it scores: the first call records their
    /// fingerprint, later calls (resume) refuse other weights, whose scores would not mix.
    pub fn check_weights(&self, fingerprint: &str, checkpoint: &Path) -> Result<()> {
        let path = self.dir.join(WEIGHTS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(recorded) if recorded.trim() == fingerprint => Ok(()),
            Ok(recorded) => Err(Error::Invalid {
                path: checkpoint.to_path_buf(),
                key: "model.checkpoint".into(),
                message: format!(
                    "these weights ({fingerprint}) are not the ones the run in {} was scored with ({}); restore them to resume",
                    self.dir.display(),
                    recorded.trim()
                ),
            }),
            Err(_) => write_atomic(&path, &format!("{fingerprint}\n")),
        }
    }
}

/// Creates a run folder, refusing one that already holds a run (`instead` says what to do).
fn new_run_dir(dir: &Path, instead: &str) -> Result<()> {
    if dir.join(EPISODES_FILE).exists() {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            key: "--logdir".into(),
            message: format!("already holds a run; {instead}"),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::data(
            dir,
            format!("cannot create the run folder ({e}); choose another --logdir"),
        )
    })
}

/// Writes a text file of the run folder atomically.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    crate::fsio::write_atomic(path, text.as_bytes())
}

/// How a search ended.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// Episodes finished (recorded), resumed ones included.
    pub episodes: usize,
    /// True when stopped early (Ctrl-C); the run folder can be resumed.
    pub interrupted: bool,
    /// The best policy so far, as a policy file (its `metrics` on the evaluation split).
    pub best: Option<PolicyFile>,
    /// Episodes run by this call (replayed ones not included).
    pub new_episodes: usize,
    /// Wall time of those episodes, logging included.
    pub seconds: f64,
    /// The part of `seconds` spent in the evaluator.
    pub eval_seconds: f64,
}

impl SearchOutcome {
    /// Seconds per episode run by this call (0 when none ran).
    pub fn seconds_per_episode(&self) -> f64 {
        if self.new_episodes == 0 {
            0.0
        } else {
            self.seconds / self.new_episodes as f64
        }
    }

    /// The share of this call's search time spent outside the evaluator (agent, environment,
    /// logging), in [0, 1].
    pub fn outside_evaluator_share(&self) -> f64 {
        if self.seconds <= 0.0 {
            0.0
        } else {
            ((self.seconds - self.eval_seconds) / self.seconds).clamp(0.0, 1.0)
        }
    }
}

/// Builds the agent a config asks for.
pub fn build_agent(config: &SearchConfig, env: &PruneEnv) -> Result<Box<dyn SearchAgent>> {
    tch::manual_seed(config.seed as i64);
    Ok(match config.agent {
        AgentKind::Ddpg => Box::new(Ddpg::new(config.ddpg.clone(), STATE_DIM, config.seed)?),
        AgentKind::Ppo => Box::new(Ppo::new(config.ppo.clone(), STATE_DIM, config.seed)?),
        AgentKind::Evolution | AgentKind::Pruningnet => Box::new(Evolution::new(
            config.evolution.clone(),
            env.wall().clone(),
            config.seed,
        )),
        AgentKind::Random => Box::new(RandomSearch::new(env.wall().clone(), config.seed)),
        AgentKind::Gnn => Box::new(GraphAgent::new(
            config.gnn.clone(),
            env.costs(),
            env.wall().budget().keep,
            config.seed,
            tch::Device::Cpu,
        )?),
        AgentKind::Meta => Box::new(crate::policy::load_graph_agent(
            &config.meta.init,
            env.costs(),
            env.wall().budget().keep,
            config.seed,
            config.gnn.clone(),
        )?),
    })
}

/// Everything one search needs.
pub struct Search<'a> {
    pub config: &'a SearchConfig,
    pub spec: &'a EnvSpec,
    pub evaluator: &'a mut Evaluator,
    pub folder: &'a RunFolder,
    /// Episodes already recorded in the folder (resume), replayed before new ones.
    pub recorded: Vec<EpisodeRecord>,
    pub sink: &'a mut dyn MetricsSink,
    pub progress: Progress,
    /// Set (by Ctrl-C) to stop after the episode in flight.
    pub stop: &'a AtomicBool,
    /// An agent to run instead of a fresh one built from the config (e.g. a trained graph
    /// agent adapting to a new env). Such a run cannot be resumed.
    pub agent: Option<Box<dyn SearchAgent>>,
}

impl Search<'_> {
    /// Runs the remaining episodes.
    pub fn run(self) -> Result<SearchOutcome> {
        let Search {
            config,
            spec,
            evaluator,
            folder,
            recorded,
            sink,
            progress,
            stop,
            agent,
        } = self;
        let wall = evaluator.wall(&spec.path)?;
        if spec.data.eval_split == SplitName::Test {
            return Err(Error::Invalid {
                path: spec.path.clone(),
                key: "data.eval_split".into(),
                message: "a search selects its policy on the evaluation split, so it must be `val`; test accuracy is reported once at the end".into(),
            });
        }
        let mut env = PruneEnv::new(wall);
        if env.is_empty() {
            return Err(Error::graph(
                "<model>",
                "has no prunable units at this granularity; nothing to search",
            ));
        }
        let mut agent = match agent {
            Some(agent) => agent,
            None => build_agent(config, &env)?,
        };
        let units: Vec<String> = env.costs().units().iter().map(|u| u.name.clone()).collect();
        let model = fingerprint(env.costs().graph());
        let episodes_path = folder.dir.join(EPISODES_FILE);
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&episodes_path)
            .map_err(|e| Error::io(&episodes_path, e))?;
        if recorded.is_empty() {
            let text = format!(
                "config:\n\n```toml\n{}\n```\n\nenv:\n\n```toml\n{}\n```",
                config.to_toml(),
                std::fs::read_to_string(folder.dir.join(ENV_FILE)).unwrap_or_default()
            );
            sink.text("config", &text, 0);
        }
        let bar = progress.bar(
            config.episodes as u64,
            &format!("{} {}", config.agent.name(), spec.name),
        );
        bar.set_position(recorded.len().min(config.episodes) as u64);
        let mut best: Option<(f64, Vec<f64>, Score)> = None;
        let mut finished = 0;
        let mut interrupted = false;
        let (mut new_episodes, mut seconds, mut eval_seconds) = (0, 0.0, 0.0);
        for index in 0..config.episodes {
            if index >= recorded.len() && stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let started = Instant::now();
            agent.begin_episode(index);
            let (proposed, transitions) = match agent.mode() {
                Mode::Sequential => {
                    let mut state = env.reset();
                    let mut proposed = Vec::with_capacity(env.len());
                    let mut transitions = Vec::with_capacity(env.len());
                    loop {
                        let action = agent
                            .act(Observation::Unit(&state), true)
                            .first()
                            .copied()
                            .unwrap_or(0.5);
                        proposed.push(action);
                        let step = env.step(action);
                        transitions.push(Transition {
                            state: state.clone(),
                            action: action.clamp(0.0, 1.0),
                            next_state: step.next_state.clone(),
                        });
                        match step.next_state {
                            Some(next) => state = next,
                            None => break,
                        }
                    }
                    (proposed, transitions)
                }
                Mode::OneShot | Mode::Profile => {
                    let actions = agent.act(Observation::Graph(env.graph_state()), true);
                    if agent.mode() == Mode::Profile {
                        env.step_profile(&actions);
                    } else {
                        env.step_actions(&actions);
                    }
                    (actions, Vec::new())
                }
            };
            let policy = env.policy();
            let score = match recorded.get(index) {
                Some(record) => {
                    let same = record.keeps.len() == policy.len()
                        && record
                            .keeps
                            .iter()
                            .zip(&policy)
                            .all(|(a, b)| (a - b).abs() <= 1e-12);
                    if !same {
                        return Err(Error::Invalid {
                            path: folder.dir.clone(),
                            key: EPISODES_FILE.into(),
                            message: format!("episode {index} chose another policy than the one recorded; the run cannot be resumed with this build or device"),
                        });
                    }
                    score_from_record(record, &units, spec.data.eval_split)
                }
                None => {
                    let score = evaluator.evaluate(&policy)?;
                    eval_seconds += score.seconds;
                    score
                }
            };
            agent.learn(&Episode {
                index,
                transitions,
                proposed,
                reward: score.reward,
            })?;
            let improved = best.as_ref().is_none_or(|(r, _, _)| score.reward > *r);
            if improved {
                best = Some((score.reward, policy.clone(), score.clone()));
            }
            let best_reward = best.as_ref().map(|b| b.0).unwrap_or(score.reward);
            if index >= recorded.len() {
                let memory = crate::runlog::memory();
                let mut scalars = BTreeMap::new();
                scalars.insert("reward".to_string(), score.reward);
                scalars.insert("accuracy".to_string(), score.accuracy);
                scalars.insert("params_kept".to_string(), score.params_kept);
                scalars.insert("flops_kept".to_string(), score.flops_kept);
                scalars.insert("best/reward".to_string(), best_reward);
                for (name, keep) in units.iter().zip(&policy) {
                    scalars.insert(format!("keep/{name}"), *keep);
                }
                let record = EpisodeRecord {
                    episode: index,
                    reward: score.reward,
                    accuracy: score.accuracy,
                    loss: score.loss,
                    params_kept: score.params_kept,
                    flops_kept: score.flops_kept,
                    params: score.params,
                    flops: score.flops,
                    best_reward,
                    keeps: policy.clone(),
                    scalars,
                    seconds: started.elapsed().as_secs_f64(),
                    eval_seconds: score.seconds,
                    rss_bytes: memory.resident,
                    peak_rss_bytes: memory.peak,
                };
                // The log line first: it is what resume trusts. Events and best.json follow;
                // a crash between them loses at most this episode's events.
                let line = serde_json::to_string(&record)
                    .map_err(|e| Error::data(&episodes_path, e.to_string()))?;
                log.write_all(format!("{line}\n").as_bytes())
                    .and_then(|_| log.flush())
                    .map_err(|e| Error::io(&episodes_path, e))?;
                for (tag, value) in &record.scalars {
                    sink.scalar(tag, *value, index);
                }
                sink.histogram("keeps", &policy, index);
                if improved {
                    let best_file = best_policy_file(config, spec, &model, &score, index + 1);
                    sink.text("best_policy", &policy_text(&best_file), index);
                    best_file.save(&folder.dir.join(BEST_FILE))?;
                }
                sink.flush()?;
                new_episodes += 1;
                seconds += started.elapsed().as_secs_f64();
            } else if index + 1 == recorded.len() {
                // The last replayed episode: make best.json agree with the log.
                if let Some((_, _, best_score)) = &best {
                    best_policy_file(config, spec, &model, best_score, index + 1)
                        .save(&folder.dir.join(BEST_FILE))?;
                }
            }
            finished = index + 1;
            bar.set_position(finished as u64);
            bar.set_message(format!("best reward {best_reward:.4}"));
        }
        bar.finish_and_clear();
        // Agents with a network leave it in the run folder (for `autoprune transfer`).
        if let Some(network) = agent.network() {
            crate::policy::save_agent(network, &folder.dir.join(AGENT_FILE))?;
        }
        let best =
            best.map(|(_, _, score)| best_policy_file(config, spec, &model, &score, finished));
        Ok(SearchOutcome {
            episodes: finished,
            interrupted,
            best,
            new_episodes,
            seconds,
            eval_seconds,
        })
    }
}

/// The score an episode record stands for.
fn score_from_record(record: &EpisodeRecord, units: &[String], split: SplitName) -> Score {
    Score {
        accuracy: record.accuracy,
        loss: record.loss,
        params_kept: record.params_kept,
        flops_kept: record.flops_kept,
        params: record.params,
        flops: record.flops,
        reward: record.reward,
        layers: units
            .iter()
            .zip(&record.keeps)
            .map(|(name, &keep)| LayerKeep {
                name: name.clone(),
                keep,
            })
            .collect(),
        split,
        seconds: record.seconds,
    }
}

fn best_policy_file(
    config: &SearchConfig,
    spec: &EnvSpec,
    model: &str,
    score: &Score,
    episodes: usize,
) -> PolicyFile {
    PolicyFile {
        schema: SCHEMA,
        env: spec.name.clone(),
        model: model.to_string(),
        granularity: spec.prune.granularity,
        target: spec.prune.target,
        layers: score.layers.clone(),
        metrics: score.clone(),
        agent: config.agent.name().into(),
        episodes,
        seed: config.seed,
        created: now_rfc3339(),
    }
}

/// A Markdown table of a policy, for TensorBoard's text tab.
fn policy_text(policy: &PolicyFile) -> String {
    let mut text = format!(
        "reward {:.4}, {:?} accuracy {:.4}, params kept {:.4}, FLOPs kept {:.4}\n\n| layer | keep |\n|---|---|\n",
        policy.metrics.reward, policy.metrics.split, policy.metrics.accuracy, policy.metrics.params_kept, policy.metrics.flops_kept
    );
    for layer in &policy.layers {
        text.push_str(&format!("| {} | {:.4} |\n", layer.name, layer.keep));
    }
    text
}

/// Scores the best policy once on the test split (the report, never a selection).
pub fn test_score(evaluator: &mut Evaluator, policy: &PolicyFile) -> Result<Score> {
    let keeps: Vec<f64> = policy.layers.iter().map(|l| l.keep).collect();
    evaluator.evaluate_on(&keeps, SplitName::Test)
}

/// Whether `spec` can be scored with a PruningNet's weights: channel pruning (it generates
/// weights for channel counts), with BatchNorm recalibrated (generated weights have no
/// running statistics of their own).
pub fn check_pruningnet_env(spec: &EnvSpec) -> Result<()> {
    let invalid = |key: &str, message: &str| Error::Invalid {
        path: spec.path.clone(),
        key: key.into(),
        message: message.into(),
    };
    if spec.prune.granularity != crate::env::Granularity::Channel {
        return Err(invalid(
            "prune.granularity",
            "a PruningNet generates weights for channel counts; set granularity = \"channel\" (or choose another agent)",
        ));
    }
    if spec.reward.recalibration_batches == 0 {
        return Err(invalid(
            "reward.recalibration_batches",
            "a PruningNet's weights have no BatchNorm statistics of their own; give at least 1 batch (default 20)",
        ));
    }
    Ok(())
}

/// The PruningNet of a `pruningnet` search in `dir`: loaded from `dir/pruningnet.safetensors`
/// when a run being resumed already trained it, else trained on the evaluator's training
/// split (logging its loss to `sink`) and saved there. The evaluator then scores every
/// policy from the PruningNet's weights.
#[allow(clippy::too_many_arguments)]
pub fn prepare_pruningnet(
    config: &SearchConfig,
    spec: &EnvSpec,
    model: &crate::model::GraphNet,
    evaluator: &mut Evaluator,
    dir: &Path,
    sink: &mut dyn MetricsSink,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<()> {
    use crate::agents::pruningnet::PruningNet;
    check_pruningnet_env(spec)?;
    let path = dir.join(PRUNINGNET_FILE);
    let net = if path.is_file() {
        crate::policy::load_pruningnet(&path, model)?
    } else {
        let mut net = PruningNet::new(model, &config.pruningnet)?;
        let wall = evaluator.wall(&spec.path)?;
        let bar = progress.bar(config.pruningnet.steps as u64, "training the PruningNet");
        let mut mean = 0.0;
        net.train(
            &config.pruningnet,
            evaluator.masker(),
            &wall,
            evaluator.train_split(),
            config.seed,
            |step, loss| {
                if stop.load(Ordering::SeqCst) {
                    return Err(Error::Interrupted {
                        message: format!(
                            "while training the PruningNet, before any episode; start again with: autoprune search --resume {}",
                            dir.display()
                        ),
                    });
                }
                mean = if step == 0 { loss } else { 0.98 * mean + 0.02 * loss };
                sink.scalar("pruningnet/loss", loss, step);
                bar.set_position(step as u64 + 1);
                bar.set_message(format!("loss {mean:.4}"));
                Ok(())
            },
        )?;
        bar.finish_and_clear();
        sink.flush()?;
        crate::policy::save_agent(net.var_store(), &path)?;
        net
    };
    evaluator.set_source(Some(Box::new(net)));
    Ok(())
}
