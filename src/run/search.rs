//! The search loop: an agent against the pruning env for a number of episodes, every episode
//! logged before it counts, the best policy kept, and resume by replay.

use super::failpoint;
use super::heuristics::{heuristic_policies, Heuristic};
use super::{EpisodeRecord, RunFolder, WholeSplit, AGENT_FILE, BEST_FILE, ENV_FILE, EPISODES_FILE};
use crate::agents::ddpg::Ddpg;
use crate::agents::evolution::Evolution;
use crate::agents::gnn::GraphAgent;
use crate::agents::ppo::Ppo;
use crate::agents::random::RandomSearch;
use crate::agents::{AgentKind, Demonstration, SearchAgent};
use crate::config::{Checked, EnvSpec, SearchConfig};
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
    /// The noise of a subset score (std of the reward over disjoint windows of the
    /// evaluation split) when episodes are scored on a subset.
    pub subset_std: Option<f64>,
    /// Where the best policy came from: the heuristic's name (`lamp`, ...), or the agent's.
    pub best_from: Option<String>,
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
    /// Only a checked config runs.
    pub config: &'a Checked<SearchConfig>,
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
    /// first). The first episodes score the config's heuristics, in order; the agent's own
    /// episodes follow.
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
        let mut env = PruneEnv::new(wall.clone());
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
        let heuristics = heuristic_policies(&config.heuristics, evaluator, &wall, config.seed);
        let noise = match heuristics.first() {
            Some(first) => evaluator.subset_noise(&first.keeps)?,
            None => evaluator.subset_noise(&wall.fit(&vec![1.0; env.len()]))?,
        };
        let mut state = Episodes::open(config, spec, evaluator, folder, sink, noise, &env)?;
        if recorded.is_empty() {
            state.log_config()?;
        }
        let bar = progress.bar(
            config.episodes as u64,
            &format!("{} {}", config.agent.name(), spec.name),
        );
        bar.set_position(recorded.len().min(config.episodes) as u64);
        let mut finished = 0;
        let mut interrupted = false;
        for index in 0..config.episodes {
            let record = recorded.get(index);
            if record.is_none() && stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let started = Instant::now();
            let heuristic = heuristics.get(index);
            if index == heuristics.len() && agent.acts_relative_to_reference() {
                env.set_reference(state.best.as_ref().map(|b| b.keeps.clone()));
            }
            // The agent's episodes are counted from its first one.
            let (policy, acted) = match heuristic {
                Some(h) => (h.keeps.clone(), None),
                None => {
                    let acted = rollout(agent.as_mut(), &mut env, index - heuristics.len(), true);
                    (acted.policy.clone(), Some(acted))
                }
            };
            let (score, whole) = match record {
                Some(record) => {
                    check_replayed(record, &policy, heuristic, &folder.dir, index)?;
                    let score = score_from_record(record, &state.units, spec.data.eval_split);
                    (score, record.whole_split)
                }
                None => state.score(&policy, heuristic.is_some())?,
            };
            match acted {
                Some(acted) => {
                    agent.learn(&acted.episode(index - heuristics.len(), score.reward))?
                }
                None => {
                    let (transitions, actions) = env.demonstration(&policy);
                    agent.demonstrate(&Demonstration {
                        transitions,
                        actions,
                        reward: score.reward,
                    });
                }
            }
            let scored = Scored {
                score: &score,
                policy: &policy,
                heuristic: heuristic.map(|h| h.method.name().to_string()),
                whole_split: whole,
            };
            let improved = state.keep_if_best(index, &scored);
            if record.is_none() {
                state.write(index, &scored, improved, started)?;
            } else if index + 1 == recorded.len() {
                // The last replayed episode: make best.json agree with the log, as the
                // uninterrupted run wrote it when the best was found.
                state.save_best()?;
            }
            finished = index + 1;
            bar.set_position(finished as u64);
            bar.set_message(format!("best reward {:.4}", state.best_reward(&score)));
        }
        bar.finish_and_clear();
        // Agents with a network leave it in the run folder (for `autoprune transfer`).
        if let Some(checkpoint) = agent.checkpoint() {
            super::agent_file::save_agent(&checkpoint, &folder.dir.join(AGENT_FILE))?;
        }
        Ok(state.outcome(finished, interrupted))
    }
}

/// The best policy so far, by reward on the whole evaluation split.
struct Best {
    keeps: Vec<f64>,
    /// Its whole-split score.
    score: Score,
    /// The episode that found it.
    episode: usize,
    /// The heuristic's name, or the agent's.
    from: String,
}

/// A search's episodes in progress: the run folder's log, the sink, the best so far, and
/// the time spent.
struct Episodes<'a> {
    config: &'a SearchConfig,
    spec: &'a EnvSpec,
    evaluator: &'a mut Evaluator,
    folder: &'a RunFolder,
    sink: &'a mut dyn MetricsSink,
    log: std::fs::File,
    log_path: std::path::PathBuf,
    units: Vec<String>,
    model: String,
    /// True when episodes are scored on a subset of the evaluation split.
    subset: bool,
    /// The subset score's noise (std of the reward), when scoring a subset.
    noise: Option<f64>,
    best: Option<Best>,
    failpoints: Vec<(String, usize)>,
    new_episodes: usize,
    seconds: f64,
    eval_seconds: f64,
}

impl<'a> Episodes<'a> {
    fn open(
        config: &'a SearchConfig,
        spec: &'a EnvSpec,
        evaluator: &'a mut Evaluator,
        folder: &'a RunFolder,
        sink: &'a mut dyn MetricsSink,
        noise: Option<f64>,
        env: &PruneEnv,
    ) -> Result<Self> {
        let log_path = folder.dir.join(EPISODES_FILE);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        Ok(Self {
            subset: evaluator.scores_a_subset(),
            config,
            spec,
            evaluator,
            folder,
            sink,
            log,
            log_path,
            units: env.costs().units().iter().map(|u| u.name.clone()).collect(),
            model: fingerprint(env.costs().graph()),
            noise,
            best: None,
            failpoints: failpoint::failpoints(),
            new_episodes: 0,
            seconds: 0.0,
            eval_seconds: 0.0,
        })
    }

    /// The run's config and env as TensorBoard text, and the subset's noise, once per run.
    fn log_config(&mut self) -> Result<()> {
        let text = format!(
            "config:\n\n```toml\n{}\n```\n\nenv:\n\n```toml\n{}\n```",
            self.config.to_toml()?,
            std::fs::read_to_string(self.folder.dir.join(ENV_FILE)).unwrap_or_default()
        );
        self.sink.text("config", &text, 0);
        if let Some(std) = self.noise {
            self.sink.scalar("fidelity/subset_std", std, 0);
        }
        Ok(())
    }

    /// Scores a new episode's policy; rescores it on the whole split when episodes are
    /// scored on a subset and it is a heuristic's or promising (within `rescore_sigmas` of
    /// the noise of the best whole-split reward).
    fn score(&mut self, policy: &[f64], heuristic: bool) -> Result<(Score, Option<WholeSplit>)> {
        let score = self.evaluator.evaluate(policy)?;
        self.eval_seconds += score.seconds;
        let best_reward = self
            .best
            .as_ref()
            .map_or(f64::NEG_INFINITY, |b| b.score.reward);
        let margin = self.config.rescore_sigmas * self.noise.unwrap_or(0.0);
        if !self.subset || !(heuristic || score.reward + margin >= best_reward) {
            return Ok((score, None));
        }
        let whole = self
            .evaluator
            .rescore_on(policy, self.spec.data.eval_split)?;
        self.eval_seconds += whole.seconds;
        let whole = WholeSplit {
            reward: whole.reward,
            accuracy: whole.accuracy,
            loss: whole.loss,
        };
        Ok((score, Some(whole)))
    }

    /// Keeps an episode's policy if its whole-split score is the best so far; true if so.
    fn keep_if_best(&mut self, index: usize, scored: &Scored<'_>) -> bool {
        let whole = match (scored.whole_split, self.subset) {
            (Some(w), _) => Score {
                reward: w.reward,
                accuracy: w.accuracy,
                loss: w.loss,
                ..scored.score.clone()
            },
            (None, false) => scored.score.clone(),
            (None, true) => return false,
        };
        if self
            .best
            .as_ref()
            .is_some_and(|b| whole.reward <= b.score.reward)
        {
            return false;
        }
        self.best = Some(Best {
            keeps: scored.policy.to_vec(),
            score: whole,
            episode: index,
            from: scored
                .heuristic
                .clone()
                .unwrap_or_else(|| self.config.agent.name().to_string()),
        });
        true
    }

    fn best_reward(&self, score: &Score) -> f64 {
        self.best.as_ref().map_or(score.reward, |b| b.score.reward)
    }

    /// The best policy as a policy file, as it stood when it was found.
    fn best_file(&self) -> Option<PolicyFile> {
        let best = self.best.as_ref()?;
        Some(PolicyFile::new(
            self.spec,
            &self.model,
            &best.score,
            self.config.agent.name(),
            best.episode + 1,
            self.config.seed,
        ))
    }

    fn save_best(&self) -> Result<()> {
        match self.best_file() {
            Some(file) => file.save(&self.folder.dir.join(BEST_FILE)),
            None => Ok(()),
        }
    }

    /// Writes a new episode: the log line first (it is what resume trusts), then its events
    /// and best.json; a crash between them loses at most this episode's events.
    fn write(
        &mut self,
        index: usize,
        scored: &Scored<'_>,
        improved: bool,
        started: Instant,
    ) -> Result<()> {
        let best_reward = self.best_reward(scored.score);
        let record = episode_record(index, scored, &self.units, best_reward, started);
        let line = serde_json::to_string(&record)
            .map_err(|e| Error::data(&self.log_path, e.to_string()))?;
        self.log
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| self.log.flush())
            .map_err(|e| Error::io(&self.log_path, e))?;
        failpoint::failpoint(&self.failpoints, "logged", index);
        for (tag, value) in &record.scalars {
            self.sink.scalar(tag, *value, index);
        }
        self.sink.histogram("keeps", scored.policy, index);
        if improved {
            if let Some(file) = self.best_file() {
                self.sink.text("best_policy", &policy_text(&file), index);
                file.save(&self.folder.dir.join(BEST_FILE))?;
            }
        }
        failpoint::failpoint(&self.failpoints, "saved", index);
        self.sink.flush()?;
        self.new_episodes += 1;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn outcome(self, finished: usize, interrupted: bool) -> SearchOutcome {
        let best = self.best_file().map(|mut file| {
            file.episodes = finished;
            file
        });
        SearchOutcome {
            episodes: finished,
            interrupted,
            best,
            new_episodes: self.new_episodes,
            seconds: self.seconds,
            eval_seconds: self.eval_seconds,
            subset_std: self.noise,
            best_from: self.best.map(|b| b.from),
        }
    }
}

/// Checks a replayed episode against its record: the same policy, and the same heuristic.
fn check_replayed(
    record: &EpisodeRecord,
    policy: &[f64],
    heuristic: Option<&Heuristic>,
    dir: &std::path::Path,
    index: usize,
) -> Result<()> {
    let same = record.keeps.len() == policy.len()
        && record
            .keeps
            .iter()
            .zip(policy)
            .all(|(a, b)| (a - b).abs() <= 1e-12)
        && record.heuristic.as_deref() == heuristic.map(|h| h.method.name());
    if same {
        return Ok(());
    }
    Err(Error::Invalid {
        path: dir.to_path_buf(),
        key: EPISODES_FILE.into(),
        message: format!("episode {index} chose another policy than the one recorded; the run cannot be resumed with this build, config or device"),
    })
}

/// What one episode scored.
struct Scored<'a> {
    score: &'a Score,
    policy: &'a [f64],
    /// The allocator the policy came from (None: the agent's).
    heuristic: Option<String>,
    /// The whole-split score, for episodes scored on a subset and rescored.
    whole_split: Option<WholeSplit>,
}

/// The log line of a finished episode, with exactly the scalars logged to TensorBoard.
fn episode_record(
    index: usize,
    scored: &Scored<'_>,
    units: &[String],
    best_reward: f64,
    started: Instant,
) -> EpisodeRecord {
    let Scored {
        score,
        policy,
        heuristic,
        whole_split,
    } = scored;
    let memory = crate::runlog::memory();
    let mut scalars = BTreeMap::new();
    scalars.insert("reward".to_string(), score.reward);
    scalars.insert("accuracy".to_string(), score.accuracy);
    scalars.insert("params_kept".to_string(), score.params_kept);
    scalars.insert("flops_kept".to_string(), score.flops_kept);
    scalars.insert("best/reward".to_string(), best_reward);
    if let Some(latency) = &score.latency {
        scalars.insert("latency/ms".to_string(), latency.latency_ms);
        scalars.insert(
            "latency/predicted_ms".to_string(),
            latency.predicted_latency_ms,
        );
        scalars.insert("latency/speedup".to_string(), latency.speedup);
    }
    if let Some(whole) = whole_split {
        scalars.insert("whole_split/reward".to_string(), whole.reward);
        scalars.insert("whole_split/accuracy".to_string(), whole.accuracy);
    }
    for (name, keep) in units.iter().zip(policy.iter()) {
        scalars.insert(format!("keep/{name}"), *keep);
    }
    EpisodeRecord {
        episode: index,
        reward: score.reward,
        accuracy: score.accuracy,
        loss: score.loss,
        params_kept: score.params_kept,
        flops_kept: score.flops_kept,
        params: score.params,
        flops: score.flops,
        best_reward,
        keeps: policy.to_vec(),
        scalars,
        seconds: started.elapsed().as_secs_f64(),
        eval_seconds: score.seconds,
        rss_bytes: memory.resident,
        peak_rss_bytes: memory.peak,
        heuristic: heuristic.clone(),
        whole_split: *whole_split,
        latency: score.latency,
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
        latency: record.latency,
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
