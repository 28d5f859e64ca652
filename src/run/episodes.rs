//! A search's episodes as they are written: the run folder's log line (what resume trusts),
//! TensorBoard, the best policy so far, and the checks a replayed episode must pass.

use super::failpoint;
use super::heuristics::Heuristic;
use super::pool::Rescore;
use super::search::SearchOutcome;
use super::{EpisodeRecord, RunFolder, WholeSplit, BEST_FILE, ENV_FILE, EPISODES_FILE};
use crate::config::{EnvSpec, SearchConfig};
use crate::data::SplitName;
use crate::env::PruneEnv;
use crate::error::{Error, Result};
use crate::eval::{LayerKeep, Score};
use crate::policy::{fingerprint, PolicyFile};
use crate::runlog::MetricsSink;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

/// The best policy so far, by reward on the whole evaluation split.
pub(super) struct Best {
    pub(super) keeps: Vec<f64>,
    /// Its whole-split score.
    pub(super) score: Score,
    /// Its reward on the subset the search scores on (the whole-split reward without one).
    pub(super) subset_reward: f64,
    /// The episode that found it.
    pub(super) episode: usize,
    /// The heuristic's name, or the agent's.
    pub(super) from: String,
}

/// A search's episodes in progress: the run folder's log, the sink, the best so far, and
/// the time spent.
pub(super) struct Episodes<'a> {
    pub(super) config: &'a SearchConfig,
    pub(super) spec: &'a EnvSpec,
    pub(super) folder: &'a RunFolder,
    pub(super) sink: &'a mut dyn MetricsSink,
    pub(super) log: std::fs::File,
    pub(super) log_path: std::path::PathBuf,
    pub(super) units: Vec<String>,
    pub(super) model: String,
    /// True when episodes are scored on a subset of the evaluation split.
    pub(super) subset: bool,
    /// The subset score's noise (std of the reward), when scoring a subset.
    pub(super) noise: Option<f64>,
    pub(super) best: Option<Best>,
    pub(super) failpoints: Vec<(String, usize)>,
    pub(super) new_episodes: usize,
    pub(super) seconds: f64,
    pub(super) eval_seconds: f64,
}

impl<'a> Episodes<'a> {
    pub(super) fn open(
        config: &'a SearchConfig,
        spec: &'a EnvSpec,
        folder: &'a RunFolder,
        sink: &'a mut dyn MetricsSink,
        subset: bool,
        noise: Option<f64>,
        env: &PruneEnv,
    ) -> Result<Self> {
        let log_path = folder.dir.join(EPISODES_FILE);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        Ok(Self {
            subset,
            config,
            spec,
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
    pub(super) fn log_config(&mut self) -> Result<()> {
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

    /// When a new episode's policy is scored again on the whole split: never without a
    /// subset; always for a heuristic's; else when its subset reward comes within
    /// `rescore_sigmas` of the noise of the subset reward of the best policy so far (by
    /// whole-split reward). Subset is compared with subset: a subset easier or harder than
    /// the whole split shifts every subset reward alike.
    pub(super) fn rescore(&self, heuristic: bool) -> Rescore {
        if !self.subset {
            return Rescore::Never;
        }
        if heuristic {
            return Rescore::Always;
        }
        let best_reward = self
            .best
            .as_ref()
            .map_or(f64::NEG_INFINITY, |b| b.subset_reward);
        let margin = self.config.rescore_sigmas * self.noise.unwrap_or(0.0);
        Rescore::AtLeast(best_reward - margin)
    }

    /// Keeps an episode's policy if its whole-split score is the best so far; true if so.
    pub(super) fn keep_if_best(&mut self, index: usize, scored: &Scored<'_>) -> bool {
        let whole = match (scored.whole_split, self.subset) {
            (Some(w), _) => Score {
                reward: w.reward,
                accuracy: w.accuracy,
                loss: w.loss,
                perplexity: scored.score.perplexity.map(|_| w.loss.exp()),
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
            subset_reward: scored.score.reward,
            episode: index,
            from: scored
                .heuristic
                .clone()
                .unwrap_or_else(|| self.config.agent.name().to_string()),
        });
        true
    }

    pub(super) fn best_reward(&self, score: &Score) -> f64 {
        self.best.as_ref().map_or(score.reward, |b| b.score.reward)
    }

    /// The best policy as a policy file, as it stood when it was found.
    pub(super) fn best_file(&self) -> Option<PolicyFile> {
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

    pub(super) fn save_best(&self) -> Result<()> {
        match self.best_file() {
            Some(file) => file.save(&self.folder.dir.join(BEST_FILE)),
            None => Ok(()),
        }
    }

    /// Writes a new episode: the log line first (it is what resume trusts), then its events
    /// and best.json; a crash between them loses at most this episode's events.
    pub(super) fn write(
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
        self.eval_seconds += scored.score.seconds;
        Ok(())
    }

    pub(super) fn outcome(self, finished: usize, interrupted: bool) -> SearchOutcome {
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
pub(super) fn check_replayed(
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
pub(super) struct Scored<'a> {
    pub(super) score: &'a Score,
    pub(super) policy: &'a [f64],
    /// The allocator the policy came from (None: the agent's).
    pub(super) heuristic: Option<String>,
    /// The whole-split score, for episodes scored on a subset and rescored.
    pub(super) whole_split: Option<WholeSplit>,
}

/// The log line of a finished episode, with exactly the scalars logged to TensorBoard.
pub(super) fn episode_record(
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
pub(super) fn score_from_record(
    record: &EpisodeRecord,
    units: &[String],
    split: SplitName,
    language_model: bool,
) -> Score {
    Score {
        accuracy: record.accuracy,
        loss: record.loss,
        perplexity: language_model.then(|| record.loss.exp()),
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
pub(super) fn policy_text(policy: &PolicyFile) -> String {
    let mut text = format!(
        "reward {:.4}, {:?} accuracy {:.4}, params kept {:.4}, FLOPs kept {:.4}\n\n| layer | keep |\n|---|---|\n",
        policy.metrics.reward, policy.metrics.split, policy.metrics.accuracy, policy.metrics.params_kept, policy.metrics.flops_kept
    );
    for layer in &policy.layers {
        text.push_str(&format!("| {} | {:.4} |\n", layer.name, layer.keep));
    }
    text
}
