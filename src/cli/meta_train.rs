//! `autoprune meta-train`: Reptile over the config's task distribution.

use super::print::best_rewards_json;
use super::{task_opening, DeviceArgs, JsonArg, SeedArg, TaskRun};
use anyhow::{Context, Result};
use autoprune::config::{MetaTrainConfig, Validate};
use autoprune::run::meta_train::meta_train;
use autoprune::runlog::{Progress, TensorBoardSink};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct MetaTrainArgs {
    /// Meta-training config (configs/meta-train.toml).
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Continue the run in this folder (after a crash or Ctrl-C): its logged episodes are
    /// replayed, not scored again, and the run goes on to the config's iterations.
    #[arg(long, conflicts_with_all = ["config", "seed", "iterations", "logdir"])]
    resume: Option<PathBuf>,
    /// Also write the meta-trained agent here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    seed: SeedArg,
    /// Reptile iterations (overrides the config's reptile.iterations).
    #[arg(long)]
    iterations: Option<usize>,
    /// Run folder (default: runs/<config name>-s<seed>-<time>).
    #[arg(long)]
    logdir: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(
    args: MetaTrainArgs,
    scorer: Option<&mut dyn autoprune::run::pool::Scorer>,
) -> Result<()> {
    let (config_path, opening, _) =
        task_opening(args.resume.as_deref(), args.config.as_deref(), &args.device)?;
    let mut config = MetaTrainConfig::load(&config_path)?.into_inner();
    if let Some(seed) = args.seed.seed {
        config.seed = seed;
    }
    if let Some(iterations) = args.iterations {
        config.reptile.iterations = iterations;
    }
    let config = config
        .check()
        .map_err(|e| e.noted("after the command line's overrides"))?;
    if let Some(out) = &args.out {
        autoprune::fsio::prepare_output(out)?;
    }
    let TaskRun {
        mut tasks,
        dir,
        stop,
    } = TaskRun::start(
        &args.device,
        &config.tasks(),
        (&config.name, config.seed),
        args.resume.clone().or(args.logdir),
        &opening,
    )?;
    let outcome = {
        let mut sink = TensorBoardSink::new(&dir)?;
        meta_train(
            &config,
            &mut tasks,
            &dir,
            &mut sink,
            Progress::stderr(),
            stop,
            scorer,
            &opening,
        )
    }?;
    let agent = match args.out {
        Some(out) => {
            let bytes = std::fs::read(&outcome.agent)
                .with_context(|| format!("{}: cannot read", outcome.agent.display()))?;
            autoprune::fsio::write_atomic(&out, &bytes)?;
            out
        }
        None => outcome.agent.clone(),
    };
    if args.json.json {
        let best = best_rewards_json(&outcome.best);
        println!(
            "{}",
            json!({"iterations": outcome.iterations, "episodes": outcome.episodes, "interrupted": outcome.interrupted, "tasks": tasks.len(), "best_reward": best, "agent": agent, "logdir": dir})
        );
    } else {
        println!(
            "{} Reptile iterations ({} episodes) over {} tasks; meta-trained agent written to {} (use it with autoprune transfer --agent, or agent = \"meta\" in a search config)",
            outcome.iterations,
            outcome.episodes,
            tasks.len(),
            agent.display()
        );
    }
    anyhow::ensure!(
        !outcome.interrupted,
        autoprune::Error::Interrupted {
            message: format!("the agent holds the meta-weights after the last finished iteration; continue with autoprune meta-train --resume {}", dir.display())
        }
    );
    Ok(())
}
