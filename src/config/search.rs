//! Search configs (`configs/*.toml`): which env, which agent, how many episodes, and the
//! agent's hyper-parameters.

use super::PruningNetConfig;
use super::{Checked, Validate};
use crate::agents::ddpg::DdpgConfig;
use crate::agents::diffsparse::DiffSparseConfig;
use crate::agents::evolution::EvolutionConfig;
use crate::agents::gnn::GnnConfig;
use crate::agents::meta::MetaConfig;
use crate::agents::ppo::PpoConfig;
use crate::agents::AgentKind;
use crate::check::{Checks, MAX_EPISODES, MAX_SAMPLES};
use crate::error::{Error, Result};
use crate::prune::Method;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A parsed and validated search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    pub name: String,
    /// Env file the search runs on.
    pub env: PathBuf,
    pub agent: AgentKind,
    pub episodes: usize,
    #[serde(default)]
    pub seed: u64,
    /// Score each episode on only the first this many samples of the evaluation split
    /// (default: all of it).
    #[serde(default)]
    pub eval_samples: Option<usize>,
    /// The allocators scored first, as the search's first episodes: the search starts from
    /// them (demonstrations for DDPG and evolution, the reference of the graph agent's
    /// profile) and never returns less than the best of them. `[]` starts from nothing.
    #[serde(default = "default_heuristics")]
    pub heuristics: Vec<Method>,
    /// With `eval_samples`: a candidate is rescored on the whole evaluation split when its
    /// reward on the subset is within this many standard deviations of the subset's noise of
    /// the best whole-split reward so far. The search's result is always a whole-split score.
    #[serde(default = "default_rescore_sigmas")]
    pub rescore_sigmas: f64,
    /// Seconds one evaluation may take on an MPI worker before the whole job is ended with
    /// a line naming the worker (a hung worker). Without MPI it is not used.
    #[serde(default = "super::default_eval_deadline")]
    pub eval_deadline: f64,
    #[serde(default)]
    pub ddpg: DdpgConfig,
    #[serde(default)]
    pub ppo: PpoConfig,
    #[serde(default)]
    pub evolution: EvolutionConfig,
    #[serde(default)]
    pub gnn: GnnConfig,
    /// With `agent = "meta"`: the meta-trained initialisation (the `[gnn]` table sets how
    /// it adapts).
    #[serde(default)]
    pub meta: MetaConfig,
    /// With `agent = "pruningnet"`: the PruningNet's training (the `[evolution]` table sets
    /// the search).
    #[serde(default)]
    pub pruningnet: PruningNetConfig,
    /// With `agent = "diffsparse"`: how the keep levels learn.
    #[serde(default)]
    pub diffsparse: DiffSparseConfig,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

impl SearchConfig {
    /// The search a trained graph agent adapts with (`autoprune transfer --adapt-episodes`):
    /// `episodes` of PPO with `gnn`'s settings on the env at `env`, which errors name.
    pub fn adaptation(
        env: &Path,
        episodes: usize,
        seed: u64,
        eval_samples: Option<usize>,
        gnn: GnnConfig,
    ) -> Result<Checked<Self>> {
        SearchConfig {
            name: "transfer".into(),
            env: env.to_path_buf(),
            agent: AgentKind::Gnn,
            episodes,
            seed,
            eval_samples,
            heuristics: default_heuristics(),
            rescore_sigmas: default_rescore_sigmas(),
            eval_deadline: super::default_eval_deadline(),
            ddpg: Default::default(),
            ppo: Default::default(),
            evolution: Default::default(),
            gnn,
            meta: Default::default(),
            pruningnet: Default::default(),
            diffsparse: Default::default(),
            path: env.to_path_buf(),
        }
        .check()
    }

    pub fn load(path: &Path) -> Result<Checked<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Checked<Self>> {
        let mut config: SearchConfig = super::parse_toml(text, path)?;
        config.path = path.to_path_buf();
        config.check()
    }

    /// The config as TOML (written into the run folder, read back on resume).
    pub fn to_toml(&self) -> Result<String> {
        super::to_toml(self, &self.path)
    }
}

impl Validate for SearchConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: String| Error::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message,
        };
        let bounds = Checks::new()
            .name("name", &self.name)
            .at_least("episodes", self.episodes, 1)
            .at_most("episodes", self.episodes, MAX_EPISODES)
            .at_most("eval_samples", self.eval_samples.unwrap_or(0), MAX_SAMPLES)
            .first();
        if let Some((key, message)) = bounds {
            return Err(invalid(key, message));
        }
        if self.eval_samples == Some(0) {
            return Err(invalid(
                "eval_samples",
                "must be at least 1 (or left out for the whole split)".into(),
            ));
        }
        if let Some((key, message)) = super::check_eval_deadline(self.eval_deadline) {
            return Err(invalid(key, message));
        }
        if let Some(repeated) = self
            .heuristics
            .iter()
            .enumerate()
            .find(|(i, m)| self.heuristics[..*i].contains(m))
        {
            return Err(invalid(
                "heuristics",
                format!("`{}` is listed twice", repeated.1.name()),
            ));
        }
        if !(self.rescore_sigmas >= 0.0 && self.rescore_sigmas.is_finite()) {
            return Err(invalid(
                "rescore_sigmas",
                format!("{} must be a finite number >= 0", self.rescore_sigmas),
            ));
        }
        let problem = match self.agent {
            AgentKind::Ddpg => self.ddpg.check(),
            AgentKind::Ppo => self.ppo.check(),
            AgentKind::Evolution => self.evolution.check(),
            AgentKind::Random => None,
            AgentKind::Gnn => self.gnn.check(),
            AgentKind::Meta if !self.meta.init.is_file() => Some((
                "meta.init",
                format!(
                    "{}: no such agent checkpoint; run `autoprune meta-train` and point `init` at its agent.safetensors",
                    self.meta.init.display()
                ),
            )),
            AgentKind::Meta => self.gnn.check(),
            AgentKind::Pruningnet => self.pruningnet.check().or_else(|| self.evolution.check()),
            AgentKind::Diffsparse => self.diffsparse.check(),
        };
        match problem {
            Some((key, message)) => Err(invalid(key, message)),
            None => Ok(()),
        }
    }
}

/// Uniform, global magnitude, LAMP and ERK: the cheap allocators every search starts from.
pub fn default_heuristics() -> Vec<Method> {
    vec![Method::Uniform, Method::Global, Method::Lamp, Method::Erk]
}

fn default_rescore_sigmas() -> f64 {
    2.0
}

/// The graph agent's adaptation settings: the `[gnn]` table of the config file at `path` (a
/// search, `train-agent` or `meta-train` config; the defaults for what it leaves out, its
/// other keys unread), or the defaults when there is no file.
pub fn gnn_settings(path: Option<&Path>) -> Result<GnnConfig> {
    #[derive(Deserialize)]
    struct Section {
        #[serde(default)]
        gnn: GnnConfig,
    }
    let Some(path) = path else {
        return Ok(GnnConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config = super::parse_toml::<Section>(&text, path)?.gnn;
    if let Some((key, message)) = config.check() {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(agent: &str, table: &str) -> String {
        let text =
            format!("name = \"s\"\nenv = \"e.toml\"\nagent = \"{agent}\"\nepisodes = 3\n{table}\n");
        SearchConfig::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bad_hyper_parameter_is_named_by_its_field() {
        for (agent, table, key) in [
            ("gnn", "[gnn]\nlr = 0.0", "gnn.lr"),
            ("ppo", "[ppo]\nclip = 1.0", "ppo.clip"),
            ("ddpg", "[ddpg]\nbatch_size = 64\nbuffer = 8", "ddpg.buffer"),
            (
                "evolution",
                "[evolution]\npopulation = 4\ntop_k = 5",
                "evolution.top_k",
            ),
            (
                "pruningnet",
                "[pruningnet]\nbudget_share = 2.0",
                "pruningnet.budget_share",
            ),
        ] {
            let line = error(agent, table);
            assert!(
                line.starts_with(&format!("c.toml: key `{key}`: ")),
                "{line}"
            );
        }
    }
}
