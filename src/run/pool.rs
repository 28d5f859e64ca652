//! Where a search's policies are scored: on this process's evaluator, or spread over other
//! processes (MPI ranks, `run::mpi`) that build the same evaluator from a [`Recipe`].
//!
//! Loops hand out *jobs* in episode order and take the results back in that order, whoever
//! scored them, so a run's log and result do not depend on how many processes scored it.
//! Every evaluation starts from the pretrained weights with its own seeded generator, so the
//! process that scores a policy does not change its score.

use super::WholeSplit;
use crate::config::EnvSpec;
use crate::error::Result;
use crate::eval::{pretrained, EvalConfig, Evaluator, Score};
use crate::runlog::Progress;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// When a job scored on a subset of the evaluation split is scored again on the whole split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Rescore {
    /// Never (the evaluator scores the whole split already, or the policy is not a candidate).
    Never,
    /// Always (the heuristics' policies).
    Always,
    /// When the subset reward is at least this (the best whole-split reward so far, less the
    /// margin the subset's noise allows).
    AtLeast(f64),
}

/// One policy to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The evaluator that scores it: the handle of its prepared [`Recipe`] (always 0 for a
    /// process scoring one env).
    pub recipe: usize,
    /// The episode it belongs to (for messages: which evaluation failed or hung).
    pub episode: usize,
    pub policy: Vec<f64>,
    pub rescore: Rescore,
}

/// A job's score, and its whole-split score when it was rescored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub score: Score,
    pub whole: Option<WholeSplit>,
}

/// Scores one job on `evaluator`: on the evaluation split (cut to `eval_samples`), then on the
/// whole split when the job asks for it and the evaluator scores a subset.
pub fn score_job(evaluator: &mut Evaluator, job: &Job) -> Result<JobResult> {
    let score = evaluator.evaluate(&job.policy)?;
    let rescore = evaluator.scores_a_subset()
        && match job.rescore {
            Rescore::Never => false,
            Rescore::Always => true,
            Rescore::AtLeast(threshold) => score.reward >= threshold,
        };
    if !rescore {
        return Ok(JobResult { score, whole: None });
    }
    let split = evaluator.config().eval_split;
    let whole = evaluator.rescore_on(&job.policy, split)?;
    let seconds = score.seconds + whole.seconds;
    Ok(JobResult {
        whole: Some(WholeSplit {
            reward: whole.reward,
            accuracy: whole.accuracy,
            loss: whole.loss,
        }),
        score: Score { seconds, ..score },
    })
}

/// Scores `jobs` one after another on this process (`local` scores one job on its
/// evaluator), handing each result to `each` (with its position) as soon as it is known.
/// Stops before the next job once `stop` is set; returns how many were scored.
pub fn score_locally(
    local: &mut dyn FnMut(&Job) -> Result<JobResult>,
    jobs: &[Job],
    stop: &AtomicBool,
    each: &mut dyn FnMut(usize, JobResult) -> Result<()>,
) -> Result<usize> {
    for (position, job) in jobs.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            return Ok(position);
        }
        each(position, local(job)?)?;
    }
    Ok(jobs.len())
}

/// Scores `jobs` on `remote`'s processes when there are any, else one after another here.
pub fn score_jobs(
    remote: Option<&mut (dyn Scorer + '_)>,
    local: &mut dyn FnMut(&Job) -> Result<JobResult>,
    jobs: &[Job],
    stop: &AtomicBool,
    each: &mut dyn FnMut(usize, JobResult) -> Result<()>,
) -> Result<usize> {
    match remote {
        Some(scorer) => scorer.score(jobs, stop, each),
        None => score_locally(local, jobs, stop, each),
    }
}

/// What another process needs to build the same evaluator as this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub spec: EnvSpec,
    /// The env file (named in errors; `spec.path` is not serialised).
    pub spec_path: PathBuf,
    pub seed: u64,
    /// The config's `eval_samples`.
    pub eval_samples: Option<usize>,
    /// libtorch's threads (None: its default).
    pub threads: Option<i32>,
    /// The device asked for (`auto`, `cpu`, `cuda`, `cuda:N`); an evaluating process takes
    /// its own GPU when the answer is CUDA.
    pub device: String,
    /// The PruningNet whose weights every policy starts from (`pruningnet` searches).
    pub pruningnet: Option<PathBuf>,
}

impl Recipe {
    /// Builds the evaluator on `device` (the env's model must be pretrained already: the
    /// process that sent the recipe loaded it first).
    pub fn build(&self, device: tch::Device) -> Result<Evaluator> {
        if let Some(threads) = self.threads {
            crate::device::set_threads(threads.into())?;
        }
        crate::device::seed_torch(self.seed);
        let mut spec = self.spec.clone();
        spec.path = self.spec_path.clone();
        let model = pretrained(&spec, device, self.seed, &Progress::quiet())?;
        let mut config = EvalConfig::from_env(&spec, self.seed)?;
        config.eval_samples = self.eval_samples;
        let mut evaluator = Evaluator::new(&model.net, &model.data, config)?;
        if let Some(path) = &self.pruningnet {
            let net = crate::eval::pruningnet::PruningNet::load(path, &model.net)?;
            evaluator.set_source(Some(Box::new(net)));
        }
        Ok(evaluator)
    }
}

/// Processes other than this one that score jobs (MPI ranks).
pub trait Scorer {
    /// How many processes score jobs (this one not counted when it only coordinates).
    fn workers(&self) -> usize;

    /// Makes every worker ready to score policies of `recipe`; returns its handle.
    fn prepare(&mut self, recipe: &Recipe) -> Result<usize>;

    /// How long one evaluation may take (seconds) before the whole job is ended.
    fn set_deadline(&mut self, seconds: f64);

    /// Scores `jobs` (of prepared recipes), handing the results to `each` in job order as
    /// soon as the ones before them are in. Once `stop` is set no new job is handed out; the
    /// ones in flight finish. Returns how many results were handed over (a prefix).
    fn score(
        &mut self,
        jobs: &[Job],
        stop: &AtomicBool,
        each: &mut dyn FnMut(usize, JobResult) -> Result<()>,
    ) -> Result<usize>;
}

/// A scorer with the recipe its jobs are for.
pub struct Remote<'a> {
    pub scorer: &'a mut dyn Scorer,
    pub recipe: Recipe,
}

/// The number of processes of the MPI job this process was started in, when an MPI launcher
/// (`mpirun`, `srun` with PMI or PMIx) started it.
pub fn launched_ranks() -> Option<usize> {
    let number = |v: &str| std::env::var(v).ok()?.parse().ok();
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| number(v))
        .or_else(|| {
            // PMIx (`srun --mpi=pmix`) says the rank; Slurm says how many tasks.
            std::env::var_os("PMIX_RANK").map(|_| number("SLURM_NTASKS").unwrap_or(1))
        })
}
