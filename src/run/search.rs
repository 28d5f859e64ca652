//! The search loop: an agent against the pruning env for a number of episodes, every episode
//! logged before it counts, the best policy kept, and resume by replay.

use super::{EpisodeRecord, RunFolder, AGENT_FILE, BEST_FILE, ENV_FILE, EPISODES_FILE};
use crate::agents::ddpg::Ddpg;
use crate::agents::evolution::Evolution;
use crate::agents::gnn::GraphAgent;
use crate::agents::ppo::Ppo;
use crate::agents::random::RandomSearch;
use crate::agents::{AgentKind, SearchAgent};
use crate::config::{EnvSpec, SearchConfig};
use crate::data::SplitName;
use crate::env::{rollout, PruneEnv, STATE_DIM};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, LayerKeep, Score};
use crate::model::GraphNet;
use crate::policy::{fingerprint, PolicyFile};
use crate::runlog::{MetricsSink, Progress};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
        AgentKind::Meta => Box::new(super::agent_file::load_graph_agent(
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
    /// The env's pretrained model (what a PruningNet is built on).
    pub pretrained: &'a GraphNet,
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
    /// Runs the remaining episodes (a `pruningnet` search trains or loads its PruningNet
    /// first).
    pub fn run(mut self) -> Result<SearchOutcome> {
        if self.config.agent == AgentKind::Pruningnet {
            self.prepare_pruningnet()?;
        }
        let Search {
            config,
            spec,
            evaluator,
            folder,
            pretrained: _,
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
                config.to_toml()?,
                std::fs::read_to_string(folder.dir.join(ENV_FILE)).unwrap_or_default()
            );
            sink.text("config", &text, 0);
        }
        let bar = progress.bar(
            config.episodes as u64,
            &format!("{} {}", config.agent.name(), spec.name),
        );
        bar.set_position(recorded.len().min(config.episodes) as u64);
        let failpoints = failpoints();
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
            let acted = rollout(agent.as_mut(), &mut env, index, true);
            let policy = acted.policy.clone();
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
            agent.learn(&acted.episode(index, score.reward))?;
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
                failpoint(&failpoints, "logged", index);
                for (tag, value) in &record.scalars {
                    sink.scalar(tag, *value, index);
                }
                sink.histogram("keeps", &policy, index);
                if improved {
                    let best_file = best_policy_file(config, spec, &model, &score, index + 1);
                    sink.text("best_policy", &policy_text(&best_file), index);
                    best_file.save(&folder.dir.join(BEST_FILE))?;
                }
                failpoint(&failpoints, "saved", index);
                sink.flush()?;
                new_episodes += 1;
                seconds += started.elapsed().as_secs_f64();
            } else if index + 1 == recorded.len() {
                // The last replayed episode: make best.json agree with the log, as the
                // uninterrupted run wrote it when the best was found (the first episode with
                // the best reward).
                if let Some((best_reward, _, best_score)) = &best {
                    let found = recorded.iter().position(|r| r.reward == *best_reward);
                    best_policy_file(config, spec, &model, best_score, found.unwrap_or(index) + 1)
                        .save(&folder.dir.join(BEST_FILE))?;
                }
            }
            finished = index + 1;
            bar.set_position(finished as u64);
            bar.set_message(format!("best reward {best_reward:.4}"));
        }
        bar.finish_and_clear();
        // Agents with a network leave it in the run folder (for `autoprune transfer`).
        if let Some(checkpoint) = agent.checkpoint() {
            super::agent_file::save_agent(&checkpoint, &folder.dir.join(AGENT_FILE))?;
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

/// Crash tests kill a search at exact points instead of at a random time: the
/// `AUTOPRUNE_FAILPOINT` variable holds `STAGE:EPISODE` pairs (comma-separated), where STAGE
/// is `logged` (the episode's log line is written, its events and best.json not yet) or
/// `saved` (best.json is written, the events not yet flushed).
fn failpoints() -> Vec<(String, usize)> {
    std::env::var("AUTOPRUNE_FAILPOINT")
        .unwrap_or_default()
        .split(',')
        .filter_map(|point| {
            let (stage, episode) = point.split_once(':')?;
            Some((stage.trim().to_string(), episode.trim().parse().ok()?))
        })
        .collect()
}

/// Kills the process (SIGKILL, as a crash would) at a failpoint that names this stage and
/// episode.
fn failpoint(points: &[(String, usize)], stage: &str, episode: usize) {
    if points.iter().any(|(s, e)| s == stage && *e == episode) {
        // SAFETY: raising a signal on the current process has no memory-safety conditions.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
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
    PolicyFile::new(
        spec,
        model,
        score,
        config.agent.name(),
        episodes,
        config.seed,
    )
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
