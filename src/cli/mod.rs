//! One file per command: its clap `Args` and a `run` that calls the library and prints.
//! The flags every command shares are declared here once and flattened.
//!
//! Must not hold algorithms: the work itself is in the library.

mod adapt_curve;
mod apply;
mod baseline;
mod evaluate;
mod finetune;
mod graph;
mod latency;
mod meta_train;
mod pretrain;
mod print;
mod proxy_study;
mod report;
mod search;
mod split;
mod train_agent;
mod transfer;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "autoprune",
    version,
    about = "Learns layer-wise sparsity policies for neural networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Trains the env's model from scratch and saves its checkpoint.
    Pretrain(pretrain::PretrainArgs),
    /// Scores the env's pretrained model (pretraining it first if its checkpoint is missing).
    Evaluate(evaluate::EvaluateArgs),
    /// Allocates a policy without learning and scores it.
    Baseline(baseline::BaselineArgs),
    /// Prunes an env's model with a trained graph agent: zero-shot (one forward pass, one
    /// evaluation), or adapted for a few episodes first; writes the policy and scores it.
    Transfer(transfer::TransferArgs),
    /// Applies a policy file to the env's model, scores it, and optionally saves the pruned model.
    Apply(apply::ApplyArgs),
    /// Fine-tunes the model a policy prunes (one-shot, or in stages along a cubic schedule),
    /// optionally distilling from the dense model; resumable; reports and saves the result.
    Finetune(finetune::FinetuneArgs),
    /// Scores policies with cheap proxies (no recovery, BatchNorm recalibration, k fine-tuning
    /// steps) and after full fine-tuning, and reports each proxy's rank correlations.
    ProxyStudy(proxy_study::ProxyStudyArgs),
    /// Trains one graph agent on several models and budgets at once (for `transfer`).
    TrainAgent(train_agent::TrainAgentArgs),
    /// Meta-trains a graph agent with Reptile over many models, budgets and granularities, for
    /// fast adaptation to new ones (`transfer --adapt-episodes`, or agent = "meta" in search).
    MetaTrain(meta_train::MetaTrainArgs),
    /// Measures how fast graph agents adapt to envs: for every initialisation, env and seed,
    /// the validation reward of the best policy found within each number of adaptation
    /// episodes (0 = the zero-shot greedy policy). Writes JSON and optionally a PNG.
    AdaptCurve(adapt_curve::AdaptCurveArgs),
    /// Searches a per-layer keep-ratio policy with an agent, logging to TensorBoard.
    Search(search::SearchArgs),
    /// Draws a PNG of one or more runs: reward curves and the best policy's per-layer keep
    /// profile beside uniform and LAMP at the same budget.
    Report(report::ReportArgs),
    /// Writes how the env's data is split and normalised (JSON: training and validation
    /// indices into the training file, per-channel mean and std), so a model trained outside
    /// autoprune can train on the same training samples and see the same inputs.
    Split(split::SplitArgs),
    /// Shows the env's model graph: nodes, costs and prunable groups.
    Graph(graph::GraphArgs),
    /// Measures (or reads from its cache) the env's latency table for channel pruning on
    /// this device, and compares its predictions with the measured latency of random
    /// policies.
    Latency(latency::LatencyArgs),
}

impl Cli {
    /// The names of the commands (`search`, `train-agent`, ...).
    pub fn command_names() -> Vec<String> {
        use clap::CommandFactory;
        Self::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect()
    }
}

impl Command {
    /// Runs the command; `scorer` is the other processes of an MPI job that score policies
    /// (None: this process scores them).
    pub fn run(self, scorer: Option<&mut dyn autoprune::run::pool::Scorer>) -> Result<()> {
        match self {
            Command::Pretrain(args) => pretrain::run(args),
            Command::Evaluate(args) => evaluate::run(args),
            Command::Baseline(args) => baseline::run(args),
            Command::Transfer(args) => transfer::run(args, scorer),
            Command::Apply(args) => apply::run(args),
            Command::Finetune(args) => finetune::run(args),
            Command::ProxyStudy(args) => proxy_study::run(args),
            Command::TrainAgent(args) => train_agent::run(args, scorer),
            Command::MetaTrain(args) => meta_train::run(args, scorer),
            Command::AdaptCurve(args) => adapt_curve::run(args, scorer),
            Command::Search(args) => search::run(args, scorer),
            Command::Report(args) => report::run(args),
            Command::Split(args) => split::run(args),
            Command::Graph(args) => graph::run(args),
            Command::Latency(args) => latency::run(args),
        }
    }
}

/// Where a command runs its models.
#[derive(Args)]
pub struct DeviceArgs {
    /// auto, cpu, cuda or cuda:N (auto picks CUDA when available).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Threads libtorch may use on the CPU (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl DeviceArgs {
    /// The device, with libtorch's threads set and its generators seeded with `seed`.
    pub fn setup(&self, seed: u64) -> Result<tch::Device> {
        self.setup_with_threads(seed, self.threads)
    }

    /// As [`Self::setup`], with `threads` in place of `--threads` (a resumed run's own).
    pub fn setup_with_threads(&self, seed: u64, threads: Option<i32>) -> Result<tch::Device> {
        let device = autoprune::device::parse_device(&self.device)?;
        if let Some(threads) = threads {
            autoprune::device::set_threads(threads.into())?;
        }
        autoprune::device::seed_torch(seed);
        Ok(device)
    }
}

/// What `train-agent` and `meta-train` start from: one task per env and budget on the
/// device, a new run folder, and Ctrl-C armed.
pub struct TaskRun {
    pub tasks: Vec<autoprune::run::tasks::Task>,
    pub dir: std::path::PathBuf,
    pub stop: &'static std::sync::atomic::AtomicBool,
}

impl TaskRun {
    /// Builds the tasks with `threads` CPU threads. `opening` says whether `logdir` must be
    /// a new run folder or holds the run to resume.
    pub fn start(
        device_args: &DeviceArgs,
        distribution: &autoprune::config::Distribution<'_>,
        (name, seed): (&str, u64),
        logdir: Option<std::path::PathBuf>,
        opening: &autoprune::run::tasks::Opening,
    ) -> Result<Self> {
        let threads = match opening {
            autoprune::run::tasks::Opening::New(record) => record.threads,
            autoprune::run::tasks::Opening::Resume(record) => record.threads,
        };
        let device = device_args.setup_with_threads(seed, threads)?;
        let mut tasks = autoprune::run::tasks::build_tasks(distribution, device, seed)?;
        // MPI workers build the same evaluators, with the same threads and kind of device.
        for task in &mut tasks {
            task.recipe.threads = threads;
            task.recipe.device = device_args.device.clone();
        }
        let dir = autoprune::run::run_dir(logdir, name, seed);
        if let autoprune::run::tasks::Opening::New(_) = opening {
            // Refused early; the run takes the folder's lock when it starts writing there.
            drop(autoprune::run::new_run_dir(
                &dir,
                "resume it with --resume, or choose another folder",
            )?);
        }
        let stop = autoprune::run::interrupt::arm();
        Ok(Self { tasks, dir, stop })
    }
}

/// How `train-agent` and `meta-train` open their folder: `--resume DIR` (the config file the
/// run wrote, the threads it recorded (another `--threads` is refused) and how many
/// episodes it logged), or a new run from `config` with the command line's threads.
pub fn task_opening(
    resume: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    device: &DeviceArgs,
) -> Result<(std::path::PathBuf, autoprune::run::tasks::Opening, usize)> {
    use autoprune::run::tasks::Opening;
    let Some(dir) = resume else {
        let config = config.context("give --config FILE, or --resume DIR")?;
        let record = autoprune::run::RunRecord {
            threads: device.threads,
        };
        return Ok((config.to_path_buf(), Opening::New(record), 0));
    };
    let (config, record, logged) = autoprune::run::tasks::resumable(dir)?;
    if let Some(threads) = device.threads.filter(|t| Some(*t) != record.threads) {
        let recorded = match record.threads {
            Some(n) => format!("--threads {n}"),
            None => "libtorch's default threads".into(),
        };
        return Err(autoprune::Error::Invalid {
            path: dir.to_path_buf(),
            key: "--threads".into(),
            message: format!("the run was made with {recorded}, and {threads} would change its results; leave --threads out to resume"),
        }
        .into());
    }
    Ok((config, Opening::Resume(record), logged))
}

/// `--seed`.
#[derive(Args)]
pub struct SeedArg {
    /// Seeds shuffling, initialisation and every random choice (default: the config's seed,
    /// or 0).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `--json`.
#[derive(Args)]
pub struct JsonArg {
    /// Print one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

/// `--epochs`, `--steps`, `--lr`: how long and how fast full fine-tuning trains (with the
/// env's optimiser, schedule and batch size).
#[derive(Args)]
pub struct BudgetArgs {
    /// Epochs of the training split (default: the command's).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<f64>,
    /// Optimisation steps instead of epochs (one batch each).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Learning rate at the start of the schedule (default: the env's train.lr).
    #[arg(long)]
    pub lr: Option<f64>,
}

impl BudgetArgs {
    /// The epochs (`default` unless given), after checking every value; `env` names the
    /// file in errors.
    pub fn epochs(&self, env: &std::path::Path, default: f64) -> Result<f64> {
        let invalid = |key: &str, message: String| autoprune::Error::Invalid {
            path: env.to_path_buf(),
            key: key.into(),
            message,
        };
        if let Some(lr) = self.lr.filter(|lr| !(*lr > 0.0 && lr.is_finite())) {
            return Err(invalid("--lr", format!("{lr} must be a positive number")).into());
        }
        let epochs = self.epochs.unwrap_or(default);
        if self.steps == Some(0) || !(epochs > 0.0 && epochs.is_finite()) {
            return Err(invalid("--steps", "fine-tuning needs at least one step".into()).into());
        }
        Ok(epochs)
    }

    /// The env's training settings with `--lr`.
    pub fn train(&self, spec: &autoprune::config::EnvSpec) -> autoprune::model::TrainConfig {
        let mut train = spec.train.clone();
        if let Some(lr) = self.lr {
            train.lr = lr;
        }
        train
    }
}
