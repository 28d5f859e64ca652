//! The search loop: an agent against the pruning env for a number of episodes, every episode
//! logged before it counts, the best policy kept, and resume by replay.

use super::episodes::{check_replayed, score_from_record, Episodes, Scored};
use super::heuristics::{heuristic_policies, Heuristic};
use super::pool::{score_job, score_jobs, Job, JobResult, Remote};
use super::{EpisodeRecord, RunFolder, AGENT_FILE, EPISODES_FILE, PRUNINGNET_FILE};
use crate::agents::ddpg::Ddpg;
use crate::agents::diffsparse::DiffSparse;
use crate::agents::evolution::Evolution;
use crate::agents::gnn::GraphAgent;
use crate::agents::ppo::Ppo;
use crate::agents::random::RandomSearch;
use crate::agents::{AgentKind, Demonstration, SearchAgent};
use crate::config::{Checked, EnvSpec, SearchConfig};
use crate::data::SplitName;
use crate::env::{rollout, PruneEnv, Rollout, STATE_DIM};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Score};
use crate::model::GraphNet;
use crate::policy::PolicyFile;
use crate::runlog::{MetricsSink, Progress};
use std::sync::atomic::AtomicBool;
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
        AgentKind::Diffsparse => {
            return Err(Error::Invalid {
                path: config.path.clone(),
                key: "agent".into(),
                message: "diffsparse trains on the model itself: it runs inside `autoprune search`"
                    .into(),
            })
        }
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
    /// Other processes that score the episodes (MPI ranks); None: this one scores them.
    pub remote: Option<Remote<'a>>,
}

/// The most episodes proposed before any is learned from (agents whose episodes are all
/// independent, such as random search). A constant, so a run does not depend on how many
/// processes score it.
const MAX_AHEAD: usize = 64;

impl Search<'_> {
    /// Runs the remaining episodes (a `pruningnet` search trains or loads its PruningNet
    /// first). The first episodes score the config's heuristics, in order; the agent's own
    /// episodes follow.
    ///
    /// Episodes go in batches of what the agent proposes before learning ([`Agent::ahead`]):
    /// the batch is proposed, scored (here, or by the remote scorer's processes), and each
    /// result is learned from, kept and written in episode order as soon as the ones before
    /// it are in.
    ///
    /// [`Agent::ahead`]: crate::agents::Agent::ahead
    pub fn run(mut self) -> Result<SearchOutcome> {
        if self.config.agent == AgentKind::Pruningnet {
            self.prepare_pruningnet()?;
            if let Some(remote) = self.remote.as_mut() {
                remote.recipe.pruningnet = Some(self.folder.dir.join(PRUNINGNET_FILE));
            }
        }
        let Search {
            config,
            spec,
            evaluator,
            folder,
            pretrained,
            recorded,
            sink,
            progress,
            stop,
            agent,
            remote,
        } = self;
        let wall = evaluator.wall(&spec.path)?;
        if spec.data.eval_split == SplitName::Test {
            return Err(Error::Invalid {
                path: spec.path.clone(),
                key: "data.eval_split".into(),
                message: "a search selects its policy on the evaluation split, so it must be `val`; test accuracy is reported once at the end".into(),
            });
        }
        let env = PruneEnv::new(wall.clone());
        if env.is_empty() {
            return Err(Error::graph(
                "<model>",
                "has no prunable units at this granularity; nothing to search",
            ));
        }
        let agent = match agent {
            Some(agent) => agent,
            None if config.agent == AgentKind::Diffsparse => Box::new(DiffSparse::new(
                config.diffsparse.clone(),
                pretrained,
                evaluator.train_split(),
                evaluator.masker(),
                wall.clone(),
                config.seed,
                &config.path,
            )?),
            None => build_agent(config, &env)?,
        };
        let (mut scorer, recipe) = match remote {
            Some(remote) => {
                let handle = remote.scorer.prepare(&remote.recipe)?;
                (Some(remote.scorer), handle)
            }
            None => (None, 0),
        };
        let heuristics = heuristic_policies(&config.heuristics, evaluator, &wall, config.seed)?;
        let noise = match heuristics.first() {
            Some(first) => evaluator.subset_noise(&first.keeps)?,
            None => evaluator.subset_noise(&wall.fit(&vec![1.0; env.len()]))?,
        };
        let subset = evaluator.scores_a_subset();
        let mut state = Episodes::open(config, spec, folder, sink, subset, noise, &env)?;
        if recorded.is_empty() {
            state.log_config()?;
        }
        let bar = progress.bar(
            config.episodes as u64,
            &format!("{} {}", config.agent.name(), spec.name),
        );
        bar.set_position(recorded.len().min(config.episodes) as u64);
        let mut run = Loop {
            agent,
            env,
            heuristics,
            state,
            recorded,
            bar,
            last: Instant::now(),
        };
        let mut index = 0;
        let mut interrupted = false;
        while index < config.episodes {
            let batch = run.propose(index, config.episodes);
            let end = index + batch.len();
            let replayed = run.recorded.len().clamp(index, end) - index;
            let jobs = run.jobs(recipe, index + replayed, &batch[replayed..]);
            let mut proposals: Vec<Option<Proposal>> = batch.into_iter().map(Some).collect();
            for (position, proposal) in proposals.iter_mut().take(replayed).enumerate() {
                let proposal = proposal.take().unwrap_or_default();
                run.finish(index + position, proposal, None)?;
            }
            let mut each = |position: usize, result: JobResult| {
                let at = replayed + position;
                let proposal = proposals[at].take().unwrap_or_default();
                run.finish(index + at, proposal, Some(result))
            };
            let scored = score_jobs(
                scorer.as_deref_mut(),
                &mut |job| score_job(evaluator, job),
                &jobs,
                stop,
                &mut each,
            )?;
            if scored < jobs.len() {
                index += replayed + scored;
                interrupted = true;
                break;
            }
            index = end;
        }
        run.bar.finish_and_clear();
        // Agents with a network leave it in the run folder (for `autoprune transfer`).
        if let Some(checkpoint) = run.agent.checkpoint() {
            super::agent_file::save_agent(&checkpoint, &folder.dir.join(AGENT_FILE))?;
        }
        Ok(run.state.outcome(index, interrupted))
    }
}

/// An episode's policy before it is scored, and the agent's rollout (None: a heuristic's).
#[derive(Default)]
struct Proposal {
    policy: Vec<f64>,
    acted: Option<Rollout>,
}

/// The search loop's state between batches.
struct Loop<'a> {
    agent: Box<dyn SearchAgent>,
    env: PruneEnv,
    heuristics: Vec<Heuristic>,
    state: Episodes<'a>,
    recorded: Vec<EpisodeRecord>,
    bar: indicatif::ProgressBar,
    /// When the last episode finished (an episode's time is the time since).
    last: Instant,
}

impl Loop<'_> {
    /// The next batch from episode `index` on: the heuristics' policies, or what the agent
    /// proposes before it must learn (at most `MAX_AHEAD`, never past `episodes`).
    fn propose(&mut self, index: usize, episodes: usize) -> Vec<Proposal> {
        let first_own = self.heuristics.len();
        if index == first_own && self.agent.acts_relative_to_reference() {
            let reference = self.state.best.as_ref().map(|b| b.keeps.clone());
            self.env.set_reference(reference);
        }
        if index < first_own {
            return self.heuristics[index..first_own.min(episodes)]
                .iter()
                .map(|h| Proposal {
                    policy: h.keeps.clone(),
                    acted: None,
                })
                .collect();
        }
        let ahead = self.agent.ahead(index - first_own).clamp(1, MAX_AHEAD);
        (index..(index + ahead).min(episodes))
            .map(|i| {
                let acted = rollout(self.agent.as_mut(), &mut self.env, i - first_own, true);
                Proposal {
                    policy: acted.policy.clone(),
                    acted: Some(acted),
                }
            })
            .collect()
    }

    /// Jobs for the batch's proposals from episode `first` on, with the rescoring rule as it
    /// stands at the start of the batch.
    fn jobs(&self, recipe: usize, first: usize, proposals: &[Proposal]) -> Vec<Job> {
        proposals
            .iter()
            .enumerate()
            .map(|(i, p)| Job {
                recipe,
                episode: first + i,
                policy: p.policy.clone(),
                rescore: self.state.rescore(p.acted.is_none()),
            })
            .collect()
    }

    /// Finishes episode `index`: its score (the record's when replayed, else `result`), the
    /// agent's learning, the best so far, and the episode written.
    fn finish(
        &mut self,
        index: usize,
        proposal: Proposal,
        result: Option<JobResult>,
    ) -> Result<()> {
        let heuristic = self.heuristics.get(index);
        let policy = proposal.policy;
        let (score, whole) = match (result, self.recorded.get(index)) {
            (Some(result), _) => (result.score, result.whole),
            (None, Some(record)) => {
                check_replayed(record, &policy, heuristic, &self.state.folder.dir, index)?;
                let score = score_from_record(
                    record,
                    &self.state.units,
                    self.state.spec.data.eval_split,
                    self.state.spec.data.dataset.is_text(),
                );
                (score, record.whole_split)
            }
            (None, None) => {
                return Err(Error::Invalid {
                    path: self.state.folder.dir.clone(),
                    key: EPISODES_FILE.into(),
                    message: format!("episode {index} has neither a record nor a score"),
                })
            }
        };
        match proposal.acted {
            Some(acted) => self
                .agent
                .learn(&acted.episode(index - self.heuristics.len(), score.reward))?,
            None => {
                let (transitions, actions) = self.env.demonstration(&policy);
                self.agent.demonstrate(&Demonstration {
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
        let improved = self.state.keep_if_best(index, &scored);
        if index >= self.recorded.len() {
            self.state.write(index, &scored, improved, self.last)?;
        } else if index + 1 == self.recorded.len() {
            // The last replayed episode: make best.json agree with the log, as the
            // uninterrupted run wrote it when the best was found.
            self.state.save_best()?;
        }
        self.last = Instant::now();
        self.bar.set_position(index as u64 + 1);
        self.bar
            .set_message(format!("best reward {:.4}", self.state.best_reward(&score)));
        Ok(())
    }
}

/// Scores the best policy once on the test split (the report, never a selection).
pub fn test_score(evaluator: &mut Evaluator, policy: &PolicyFile) -> Result<Score> {
    let keeps: Vec<f64> = policy.layers.iter().map(|l| l.keep).collect();
    evaluator.evaluate_on(&keeps, SplitName::Test)
}
