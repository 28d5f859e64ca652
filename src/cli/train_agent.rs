//! `autoprune train-agent`: one graph agent trained on every env of the config at every
//! budget.

use super::print::best_rewards_json;
use super::{DeviceArgs, JsonArg, SeedArg, TaskRun};
use anyhow::Result;
use autoprune::config::{TrainAgentConfig, Validate};
use autoprune::run::train_agent::train_graph_agent;
use autoprune::runlog::{Progress, TensorBoardSink};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainAgentArgs {
    /// Agent-training config (configs/gnn-train.toml).
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    seed: SeedArg,
    /// Episodes (overrides the config's episodes).
    #[arg(long)]
    episodes: Option<usize>,
    /// Run folder (default: runs/<config name>-s<seed>-<time>).
    #[arg(long)]
    logdir: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(
    args: TrainAgentArgs,
    scorer: Option<&mut dyn autoprune::run::pool::Scorer>,
) -> Result<()> {
    let mut config = TrainAgentConfig::load(&args.config)?.into_inner();
    if let Some(seed) = args.seed.seed {
        config.seed = seed;
    }
    if let Some(episodes) = args.episodes {
        config.episodes = episodes;
    }
    let config = config
        .check()
        .map_err(|e| e.noted("after the command line's overrides"))?;
    let TaskRun {
        mut tasks,
        dir,
        stop,
    } = TaskRun::start(
        &args.device,
        &config.tasks(),
        &config.name,
        config.seed,
        args.logdir,
    )?;
    let outcome = {
        let mut sink = TensorBoardSink::new(&dir)?;
        train_graph_agent(
            &config,
            &mut tasks,
            &dir,
            &mut sink,
            Progress::stderr(),
            stop,
            scorer,
        )
    }?;
    if args.json.json {
        let best = best_rewards_json(&outcome.best);
        println!(
            "{}",
            json!({"episodes": outcome.episodes, "interrupted": outcome.interrupted, "tasks": tasks.len(), "best_reward": best, "agent": outcome.agent, "logdir": dir})
        );
    } else {
        for (task, reward) in &outcome.best {
            println!("{task}: best reward {reward:.4}");
        }
        println!(
            "{} episodes on {} tasks; agent written to {} (use it with autoprune transfer --agent)",
            outcome.episodes,
            tasks.len(),
            outcome.agent.display()
        );
    }
    anyhow::ensure!(
        !outcome.interrupted,
        autoprune::Error::Interrupted {
            message: format!(
                "after {} of {} episodes; the agent as it was then is in {}",
                outcome.episodes,
                config.episodes,
                outcome.agent.display()
            )
        }
    );
    Ok(())
}
