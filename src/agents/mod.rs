//! Agents that propose keep ratios. Every agent acts through [`Agent`] and learns through
//! [`Learner`]; the search loop drives them the same way whatever they are.
//!
//! Actions are normalised to [0, 1]: for sequential agents the env places them between the
//! lower bound and the largest feasible keep ratio; one-shot agents' actions are mapped into
//! the keep bounds and the ActionWall makes the policy feasible. Sequential agents (DDPG, PPO) act once per unit on
//! AMC's state; one-shot agents (evolution, random) propose a whole policy at once.
//!
//! Agents hold their own networks (tch) but read no files: checkpoints and run folders belong
//! to `policy` and `runlog`.

pub mod ddpg;
pub mod evolution;
pub mod gnn;
pub mod meta;
pub mod ppo;
pub mod pruningnet;
pub mod random;
mod util;

use crate::error::Result;
use serde::{Deserialize, Serialize};

/// How an agent acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One action per unit, seeing AMC's state for that unit.
    Sequential,
    /// One action per unit, all at once, seeing every unit's static features.
    OneShot,
    /// Like `OneShot`, but the actions are a relative keep profile that the env scales to
    /// the budget ([`crate::env::PruneEnv::step_profile`]): equal actions are uniform
    /// allocation, and only the shape of the allocation is learned.
    Profile,
}

/// What an agent sees.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// The current unit's state (sequential mode).
    Unit(&'a [f32]),
    /// Every unit's static features (one-shot mode).
    Graph(&'a [Vec<f32>]),
}

/// One sequential step as it happened: the state, the normalised action taken, and the next
/// state (`None` at the last unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: Vec<f32>,
    pub action: f64,
    pub next_state: Option<Vec<f32>>,
}

/// A finished episode, as learners see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub index: usize,
    /// Sequential agents: one transition per unit. Empty for one-shot agents.
    pub transitions: Vec<Transition>,
    /// The normalised actions the agent proposed (before the wall), one per unit.
    pub proposed: Vec<f64>,
    /// The evaluator's reward for the policy.
    pub reward: f64,
}

/// Acting: from an observation to normalised actions (one for `Unit`, one per unit for
/// `Graph`).
pub trait Agent {
    fn mode(&self) -> Mode;

    /// `explore` adds the agent's exploration (noise, sampling); without it the agent acts
    /// greedily.
    fn act(&mut self, observation: Observation<'_>, explore: bool) -> Vec<f64>;

    /// Called before each episode with its index.
    fn begin_episode(&mut self, index: usize);

    /// The agent's network, for a checkpoint, if it has one worth keeping.
    fn network(&self) -> Option<&tch::nn::VarStore> {
        None
    }
}

/// Learning: from finished episodes.
pub trait Learner {
    fn learn(&mut self, episode: &Episode) -> Result<()>;
}

/// An agent the search can run: it acts and learns.
pub trait SearchAgent: Agent + Learner {}

impl<T: Agent + Learner> SearchAgent for T {}

/// The agent families `search` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Ddpg,
    Ppo,
    Evolution,
    Random,
    Gnn,
    /// The graph agent started from a meta-trained initialisation (`autoprune meta-train`).
    Meta,
    /// MetaPruning: a PruningNet trained first, then evolution scoring candidates with its
    /// generated weights.
    Pruningnet,
}

impl AgentKind {
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Ddpg => "ddpg",
            AgentKind::Ppo => "ppo",
            AgentKind::Evolution => "evolution",
            AgentKind::Random => "random",
            AgentKind::Gnn => "gnn",
            AgentKind::Meta => "meta",
            AgentKind::Pruningnet => "pruningnet",
        }
    }
}
