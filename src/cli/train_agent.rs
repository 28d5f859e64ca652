//! `autoprune train-agent`: one graph agent trained on every env of the config at every
//! budget.

use super::print::best_rewards_json;
use super::{task_opening, DeviceArgs, JsonArg, SeedArg, TaskRun};
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
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Continue the run in this folder (after a crash or Ctrl-C): its logged episodes are
    /// replayed, not scored again, and the run goes on to the config's episodes (or
    /// `--episodes`, which may extend it).
    #[arg(long, conflicts_with_all = ["config", "seed", "logdir"])]
    resume: Option<PathBuf>,
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
    let (config_path, opening, logged) =
        task_opening(args.resume.as_deref(), args.config.as_deref(), &args.device)?;
    let mut config = TrainAgentConfig::load(&config_path)?.into_inner();
    if let Some(seed) = args.seed.seed {
        config.seed = seed;
    }
    if let Some(episodes) = args.episodes {
        config.episodes = episodes;
    }
    let config = config
        .check()
        .map_err(|e| e.noted("after the command line's overrides"))?;
    anyhow::ensure!(
        logged <= config.episodes,
        autoprune::Error::Invalid {
            path: config_path.clone(),
            key: "--episodes".into(),
            message: format!(
                "the run logged {logged} episodes, more than the {} asked; give --episodes {logged} or more",
                config.episodes
            ),
        }
    );
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
        train_graph_agent(
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
                "after {} of {} episodes; the agent as it was then is in {}; continue with autoprune train-agent --resume {}",
                outcome.episodes,
                config.episodes,
                outcome.agent.display(),
                dir.display()
            )
        }
    );
    Ok(())
}
