//! `autoprune search`: searches a per-layer keep-ratio policy with an agent, logging to
//! TensorBoard; `--resume` continues a run folder.

use super::print::{print_score, report};
use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::{Context, Result};
use autoprune::agents::AgentKind;
use autoprune::config::{Checked, EnvSpec, SearchConfig, Validate};
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::policy::{files_fingerprint, now_rfc3339};
use autoprune::run::pool::{Recipe, Remote, Scorer};
use autoprune::run::{
    interrupt, run_dir, test_score, EpisodeRecord, RunFolder, RunRecord, Search, SearchOutcome,
    BEST_FILE,
};
use autoprune::runlog::{Progress, TensorBoardSink};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct SearchArgs {
    /// Search config (configs/*.toml).
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Env file (overrides the config's env).
    #[arg(long)]
    env: Option<PathBuf>,
    /// Agent (overrides the config's agent).
    #[arg(long, value_enum)]
    agent: Option<AgentKind>,
    /// Episodes (overrides the config's episodes).
    #[arg(long)]
    episodes: Option<usize>,
    #[command(flatten)]
    seed: SeedArg,
    /// Run folder (default: runs/<config>-<env>-s<seed>-<time>).
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// Write the best policy here (default: <run folder>/policy.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder (after a crash or Ctrl-C).
    #[arg(long, conflicts_with_all = ["config", "env", "agent", "seed", "logdir"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    json: JsonArg,
}

/// A new run folder for the config, with the command line's overrides.
fn start(args: &SearchArgs) -> Result<(RunFolder, Checked<SearchConfig>, EnvSpec)> {
    let path = args.config.as_deref().context("--config is required")?;
    let mut config = SearchConfig::load(path)?.into_inner();
    if let Some(env) = &args.env {
        config.env = env.clone();
    }
    if let Some(agent) = args.agent {
        config.agent = agent;
    }
    if let Some(seed) = args.seed.seed {
        config.seed = seed;
    }
    if let Some(episodes) = args.episodes {
        config.episodes = episodes;
    }
    let config = config.check()?;
    let env_text = std::fs::read_to_string(&config.env).with_context(|| {
        format!(
            "{}: cannot read the env file (key `env` in {})",
            config.env.display(),
            path.display()
        )
    })?;
    let spec = EnvSpec::parse(&env_text, &config.env)?;
    let label = format!("{}-{}", config.name, spec.name);
    let dir = run_dir(args.logdir.clone(), &label, config.seed);
    let record = RunRecord {
        threads: args.device.threads,
    };
    let folder = RunFolder::create(&dir, &config, &spec, &record)?;
    Ok((folder, config, spec))
}

/// A run folder opened to run in: its config and env, the run's record and the episodes it
/// finished.
type Opened = (
    RunFolder,
    Checked<SearchConfig>,
    EnvSpec,
    RunRecord,
    Vec<EpisodeRecord>,
);

/// A run folder to resume, with the command line's episodes: never fewer than it finished
/// (the best policy of fewer would replace the run's best), and its own thread count.
fn resume(args: &SearchArgs, dir: &Path) -> Result<Opened> {
    let (folder, config, spec, record, recorded) = RunFolder::open(dir)?;
    let invalid = |key: &str, message: String| autoprune::Error::Invalid {
        path: dir.to_path_buf(),
        key: key.into(),
        message,
    };
    if let Some(episodes) = args.episodes {
        if episodes < recorded.len() {
            return Err(invalid("--episodes", format!(
                "{episodes} is fewer than the {} episodes the run finished; give --episodes {} or more",
                recorded.len(),
                recorded.len()
            ))
            .into());
        }
        let mut changed = config.into_inner();
        changed.episodes = episodes;
        return Ok((folder, changed.check()?, spec, record, recorded));
    }
    if let Some(threads) = args.device.threads.filter(|t| Some(*t) != record.threads) {
        let recorded = match record.threads {
            Some(n) => format!("--threads {n}"),
            None => "libtorch's default threads".into(),
        };
        return Err(invalid("--threads", format!(
            "the run was searched with {recorded}, and {threads} would change its results; leave --threads out to resume"
        ))
        .into());
    }
    let weights = spec.weights_path();
    if !weights.is_file() {
        return Err(autoprune::Error::Invalid {
            path: weights,
            key: "model.checkpoint".into(),
            message: format!(
                "the weights the run in {} was scored with are missing; restore them to resume",
                dir.display()
            ),
        }
        .into());
    }
    Ok((folder, config, spec, record, recorded))
}

pub fn run(args: SearchArgs, scorer: Option<&mut dyn Scorer>) -> Result<()> {
    let started = Instant::now();
    let (folder, config, spec, record, recorded) = match &args.resume {
        Some(dir) => resume(&args, dir)?,
        None => {
            let (folder, config, spec) = start(&args)?;
            let record = RunRecord {
                threads: args.device.threads,
            };
            (folder, config, spec, record, Vec::new())
        }
    };
    // The policy is written after all the work: make sure it can be, first.
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| folder.dir.join("policy.json"));
    autoprune::fsio::prepare_output(&out)?;
    let device = args
        .device
        .setup_with_threads(config.seed, record.threads)?;
    let model = pretrained(&spec, device, config.seed, &Progress::stderr())?;
    folder.check_weights(
        &files_fingerprint(&spec.weights_files())?,
        &spec.weights_path(),
    )?;
    let progress = Progress::stderr();
    let mut eval_config = EvalConfig::from_env(&spec, config.seed)?;
    eval_config.eval_samples = config.eval_samples;
    let mut evaluator = Evaluator::new(&model.net, &model.data, eval_config)?;
    let stop = interrupt::arm();
    progress.println(&announcement(&config, &spec, recorded.len(), &folder));
    // The writer lives in this scope only: it is dropped (and its events are on disk) on
    // every way out of it, errors included.
    let outcome = {
        let mut sink = TensorBoardSink::new(&folder.dir)?;
        Search {
            config: &config,
            spec: &spec,
            evaluator: &mut evaluator,
            folder: &folder,
            pretrained: &model.net,
            recorded,
            sink: &mut sink,
            progress,
            stop,
            agent: None,
            remote: scorer.map(|scorer| {
                scorer.set_deadline(config.eval_deadline);
                Remote {
                    scorer,
                    recipe: Recipe {
                        spec: spec.clone(),
                        spec_path: spec.path.clone(),
                        seed: config.seed,
                        eval_samples: config.eval_samples,
                        threads: record.threads,
                        device: args.device.device.clone(),
                        pruningnet: None,
                    },
                }
            }),
        }
        .run()
    }?;
    let Some(mut best) = outcome.best.clone() else {
        return Err(autoprune::Error::Interrupted {
            message: format!(
                "the search stopped before its first episode finished; resume it with --resume {}",
                folder.dir.display()
            ),
        }
        .into());
    };
    if outcome.interrupted {
        return Err(interrupted(&outcome, &config, &folder, args.json.json).into());
    }
    let test = test_score(&mut evaluator, &best)?;
    best.created = now_rfc3339();
    best.save(&out)?;
    if args.json.json {
        let extra = json!({
            "env": spec.name,
            "agent": config.agent.name(),
            "episodes": outcome.episodes,
            "seed": config.seed,
            "policy": out,
            "logdir": folder.dir,
            "search_seconds": started.elapsed().as_secs_f64(),
            "seconds_per_episode": outcome.seconds_per_episode(),
            "outside_evaluator_share": outcome.outside_evaluator_share(),
            "best_from": outcome.best_from,
            "subset_std": outcome.subset_std,
        });
        println!("{}", report(&best.metrics, &test, extra)?);
    } else {
        print_result(&outcome, &config, &spec, &test, &out, &folder.dir);
    }
    Ok(())
}

/// The line that says what a search is about to do.
fn announcement(
    config: &SearchConfig,
    spec: &EnvSpec,
    recorded: usize,
    folder: &RunFolder,
) -> String {
    format!(
        "search: {} on {} ({:?} keep {} of {:?}), {} episodes{}, run folder {}",
        config.agent.name(),
        spec.name,
        spec.prune.granularity,
        spec.prune.target.keep,
        spec.prune.target.metric,
        config.episodes,
        if recorded == 0 {
            String::new()
        } else {
            format!(" ({recorded} already done)")
        },
        folder.dir.display()
    )
}

/// The error of a search stopped by Ctrl-C, with the command that continues it (and its JSON
/// object first, with `--json`).
fn interrupted(
    outcome: &SearchOutcome,
    config: &SearchConfig,
    folder: &RunFolder,
    json: bool,
) -> autoprune::Error {
    if json {
        let best_reward = outcome.best.as_ref().map(|b| b.metrics.reward);
        println!(
            "{}",
            json!({"interrupted": true, "episodes": outcome.episodes, "logdir": folder.dir, "best_reward": best_reward})
        );
    }
    autoprune::Error::Interrupted {
        message: format!(
            "after {} of {} episodes; best so far in {}; continue with: autoprune search --resume {}",
            outcome.episodes,
            config.episodes,
            folder.dir.join(BEST_FILE).display(),
            folder.dir.display()
        ),
    }
}

/// The result as text: the best policy's scores and layers, where it came from, the cost of
/// the episodes, and where the policy and logs are.
fn print_result(
    outcome: &SearchOutcome,
    config: &SearchConfig,
    spec: &EnvSpec,
    test: &autoprune::eval::Score,
    out: &Path,
    logdir: &Path,
) {
    let Some(best) = &outcome.best else {
        return;
    };
    let title = format!(
        "best of {} {} episodes on {}",
        outcome.episodes,
        config.agent.name(),
        spec.name
    );
    print_score(&title, &best.metrics, test);
    if let Some(from) = outcome
        .best_from
        .as_deref()
        .filter(|f| *f != config.agent.name())
    {
        println!("the best policy is the `{from}` heuristic's (scored as one of the first episodes); the agent found nothing better on the whole validation split");
    }
    if outcome.new_episodes > 0 {
        let per_episode = outcome.seconds_per_episode();
        let per_episode = if per_episode < 0.1 {
            format!("{:.1} ms", 1e3 * per_episode)
        } else {
            format!("{per_episode:.2} s")
        };
        println!(
            "{} episodes run: {per_episode} per episode, {:.1}% of it outside the evaluator",
            outcome.new_episodes,
            100.0 * outcome.outside_evaluator_share()
        );
    }
    println!("policy written to {}", out.display());
    println!(
        "TensorBoard logs in {} (tensorboard --logdir {})",
        logdir.display(),
        logdir.display()
    );
}
