//! Multi-task run configs: `train-agent` (one graph agent over several models, budgets and
//! granularities) and `meta-train` (Reptile over the same kind of task distribution).

use super::{parse_toml, Checked, Validate};
use crate::agents::gnn::GnnConfig;
use crate::agents::meta::ReptileConfig;
use crate::check::{Checks, MAX_EPISODES, MAX_SAMPLES};
use crate::error::{Error, Result};
use crate::prune::Granularity;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// Granularities to prune each env at (default: each env's own).
    #[serde(default)]
    pub granularities: Vec<Granularity>,
    pub episodes: usize,
    #[serde(default)]
    pub seed: u64,
    /// Score each episode on only the first this many validation samples.
    #[serde(default)]
    pub eval_samples: Option<usize>,
    /// Seconds one evaluation may take on an MPI worker before the whole job is ended with
    /// a line naming the worker (a hung worker). Without MPI it is not used.
    #[serde(default = "super::default_eval_deadline")]
    pub eval_deadline: f64,
    #[serde(default)]
    pub gnn: GnnConfig,
    #[serde(skip)]
    pub path: PathBuf,
}

/// What is wrong with a task distribution's keys, if anything: (key, message). Shared by
/// `train-agent` and `meta-train` configs.
fn check_tasks(
    envs: &[PathBuf],
    budgets: &[f64],
    eval_samples: Option<usize>,
    eval_deadline: f64,
) -> Option<(&'static str, String)> {
    if let Some(problem) = super::check_eval_deadline(eval_deadline) {
        return Some(problem);
    }
    if envs.is_empty() {
        return Some(("envs", "name at least one env file".into()));
    }
    if budgets.is_empty() || budgets.iter().any(|b| !(*b > 0.0 && *b <= 1.0)) {
        return Some((
            "budgets",
            "give at least one budget, each a fraction in (0, 1]".into(),
        ));
    }
    if eval_samples == Some(0) {
        return Some(("eval_samples", "must be at least 1".into()));
    }
    Checks::new()
        .at_most("eval_samples", eval_samples.unwrap_or(0), MAX_SAMPLES)
        .first()
}

impl TrainAgentConfig {
    /// Every env at every budget and granularity.
    pub fn tasks(&self) -> Distribution<'_> {
        Distribution {
            config: &self.path,
            envs: &self.envs,
            budgets: &self.budgets,
            granularities: &self.granularities,
            eval_samples: self.eval_samples,
            eval_deadline: self.eval_deadline,
        }
    }

    pub fn load(path: &Path) -> Result<Checked<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: TrainAgentConfig = parse_toml(&text, path)?;
        config.path = path.to_path_buf();
        config.check()
    }

    /// The config as TOML (written into the run folder).
    pub fn to_toml(&self) -> Result<String> {
        super::to_toml(self, &self.path)
    }
}

impl Validate for TrainAgentConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: &str| Error::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        };
        if let Some((key, message)) = check_tasks(
            &self.envs,
            &self.budgets,
            self.eval_samples,
            self.eval_deadline,
        ) {
            return Err(invalid(key, &message));
        }
        let bounds = Checks::new()
            .name("name", &self.name)
            .at_least("episodes", self.episodes, 1)
            .at_most("episodes", self.episodes, MAX_EPISODES)
            .first();
        if let Some((key, message)) = bounds {
            return Err(invalid(key, &message));
        }
        if let Some((key, message)) = self.gnn.check() {
            return Err(invalid(key, &message));
        }
        Ok(())
    }
}

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
    /// Seconds one evaluation may take on an MPI worker before the whole job is ended with
    /// a line naming the worker (a hung worker). Without MPI it is not used.
    #[serde(default = "super::default_eval_deadline")]
    pub eval_deadline: f64,
    #[serde(default)]
    pub reptile: ReptileConfig,
    /// The graph agent and its inner-loop PPO.
    #[serde(default)]
    pub gnn: GnnConfig,
    #[serde(skip)]
    pub path: PathBuf,
}

impl MetaTrainConfig {
    /// Every env at every budget and granularity.
    pub fn tasks(&self) -> Distribution<'_> {
        Distribution {
            config: &self.path,
            envs: &self.envs,
            budgets: &self.budgets,
            granularities: &self.granularities,
            eval_samples: self.eval_samples,
            eval_deadline: self.eval_deadline,
        }
    }

    pub fn load(path: &Path) -> Result<Checked<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: MetaTrainConfig = parse_toml(&text, path)?;
        config.path = path.to_path_buf();
        config.check()
    }

    /// Episodes the whole run takes.
    pub fn episodes(&self) -> usize {
        self.reptile.iterations * self.reptile.inner_episodes
    }

    /// The config as TOML (written into the run folder).
    pub fn to_toml(&self) -> Result<String> {
        super::to_toml(self, &self.path)
    }
}

impl Validate for MetaTrainConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: &str| Error::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        };
        if let Some((key, message)) = check_tasks(
            &self.envs,
            &self.budgets,
            self.eval_samples,
            self.eval_deadline,
        ) {
            return Err(invalid(key, &message));
        }
        if let Some((key, message)) = Checks::new().name("name", &self.name).first() {
            return Err(invalid(key, &message));
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
}

/// A task distribution as a config gives it.
#[derive(Debug, Clone, Copy)]
pub struct Distribution<'a> {
    /// The config file, named in errors.
    pub config: &'a Path,
    pub envs: &'a [PathBuf],
    pub budgets: &'a [f64],
    /// Granularities to prune each env at (empty: each env's own).
    pub granularities: &'a [Granularity],
    /// Score each episode on only the first this many validation samples.
    pub eval_samples: Option<usize>,
    /// Seconds one evaluation may take on an MPI worker.
    pub eval_deadline: f64,
}
