//! `autoprune transfer`: a trained graph agent prunes another env's model, zero-shot or after
//! a few adaptation episodes.

use super::print::{print_score, report};
use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::{Context, Result};
use autoprune::agents::Agent;
use autoprune::config::default_heuristics;
use autoprune::config::{gnn_settings, EnvSpec, SearchConfig};
use autoprune::data::SplitName;
use autoprune::env::rollout;
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::policy::{files_fingerprint, fingerprint, PolicyFile};
use autoprune::run::agent_file::load_graph_agent;
use autoprune::run::heuristics::{best_heuristic, profile_env};
use autoprune::run::pool::{Recipe, Remote, Scorer};
use autoprune::run::{interrupt, new_run_dir, run_dir, RunFolder, RunRecord, Search};
use autoprune::runlog::{Progress, TensorBoardSink};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct TransferArgs {
    /// The graph agent's checkpoint (`agent.safetensors` of a search with agent = "gnn",
    /// of `train-agent` or of `meta-train`).
    #[arg(long)]
    agent: PathBuf,
    /// Env file (envs/*.toml) of the model to prune.
    #[arg(long)]
    env: PathBuf,
    /// Fine-tune the agent on this env for this many episodes (0: zero-shot).
    #[arg(long, default_value_t = 0)]
    adapt_episodes: usize,
    /// PPO settings for adaptation: the `[gnn]` table of this config (e.g. the
    /// meta-train config whose inner loop the agent was trained for); default: `[gnn]`'s
    /// defaults.
    #[arg(long)]
    gnn_config: Option<PathBuf>,
    /// Score adaptation episodes on only the first N validation samples.
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Run folder for the policy and the adaptation episodes (default:
    /// runs/transfer-<env>-s<seed>-<time>).
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// Write the policy file here (default: <logdir>/policy.json; a zero-shot transfer
    /// creates the run folder for it).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: TransferArgs, scorer: Option<&mut dyn Scorer>) -> Result<()> {
    let mut fresh_folder = None;
    let result = transfer(args, scorer, &mut fresh_folder);
    if result.is_err() {
        // A zero-shot transfer that failed leaves no empty run folder behind (it held only
        // its lock).
        if let Some(dir) = fresh_folder {
            autoprune::run::remove_if_only_lock(&dir);
        }
    }
    result
}

fn transfer(
    args: TransferArgs,
    scorer: Option<&mut dyn Scorer>,
    fresh_folder: &mut Option<PathBuf>,
) -> Result<()> {
    let env = &args.env;
    let env_text = std::fs::read_to_string(env)
        .with_context(|| format!("{}: cannot read the env file", env.display()))?;
    let spec = EnvSpec::parse(&env_text, env)?;
    let gnn = gnn_settings(args.gnn_config.as_deref())?;
    let seed = args.seed.seed.unwrap_or(0);
    let dir = run_dir(
        args.logdir.clone(),
        &format!("transfer-{}", spec.name),
        seed,
    );
    // The policy is written after all the work: make sure it can be, first. Zero-shot, the
    // run folder holds only the policy, so it is created (and held) now.
    let zero_shot_folder = match (&args.out, args.adapt_episodes) {
        (None, 0) => {
            if !dir.exists() {
                *fresh_folder = Some(dir.clone());
            }
            Some(new_run_dir(&dir, "choose another folder")?)
        }
        _ => None,
    };
    let out = args.out.clone().unwrap_or_else(|| dir.join("policy.json"));
    autoprune::fsio::prepare_output(&out)?;
    let device = args.device.setup(seed)?;
    let model = pretrained(&spec, device, seed, &Progress::stderr())?;
    let mut eval_config = EvalConfig::from_env(&spec, seed)?;
    let mut evaluator = Evaluator::new(&model.net, &model.data, eval_config.clone())?;
    let budget = evaluator.wall(&spec.path)?.budget().keep;
    let mut agent = load_graph_agent(&args.agent, evaluator.costs(), budget, seed, gnn.clone())?;
    // Zero-shot: the agent's greedy actions (relative to the best heuristic, for agents
    // trained so), made feasible by the wall, scored once.
    let (mut prune_env, reference) = profile_env(
        &mut evaluator,
        &spec.path,
        agent.acts_relative_to_reference(),
        seed,
        true,
    )?;
    let greedy = rollout(&mut agent, &mut prune_env, 0, false).policy;
    let zero_shot = evaluator.evaluate(&greedy)?;
    // The heuristics are scored as well (they are the reference of agents that act relative
    // to one), and the better of the agent's policy and the best heuristic on validation is
    // returned: a transfer never returns less than the heuristics it could have tried.
    let reference = match reference {
        Some(reference) => Some(reference),
        None => {
            let wall = evaluator.wall(&spec.path)?;
            best_heuristic(&default_heuristics(), &mut evaluator, &wall, seed)?
        }
    };
    let model_print = fingerprint(evaluator.costs().graph());
    let mut best = PolicyFile::new(&spec, &model_print, &zero_shot, "gnn-transfer", 0, seed);
    let mut best_from = "gnn-transfer".to_string();
    if let Some((heuristic, score)) = reference
        .as_ref()
        .filter(|(_, s)| s.reward > zero_shot.reward)
    {
        best = PolicyFile::new(&spec, &model_print, score, heuristic.method.name(), 0, seed);
        best_from = heuristic.method.name().to_string();
    }
    let mut folder_dir = zero_shot_folder.as_ref().map(|_| dir.clone());
    let mut interrupted = None;
    if args.adapt_episodes > 0 {
        let config =
            SearchConfig::adaptation(env, args.adapt_episodes, seed, args.eval_samples, gnn)?;
        let record = RunRecord {
            threads: args.device.threads,
        };
        let folder = RunFolder::create(&dir, &config, &spec, &record)?;
        folder.check_weights(
            &files_fingerprint(&spec.weights_files())?,
            &spec.weights_path(),
        )?;
        eval_config.eval_samples = args.eval_samples;
        let mut adapt_evaluator = Evaluator::new(&model.net, &model.data, eval_config)?;
        let stop = interrupt::arm();
        let outcome = {
            let mut sink = TensorBoardSink::new(&folder.dir)?;
            Search {
                config: &config,
                spec: &spec,
                evaluator: &mut adapt_evaluator,
                folder: &folder,
                pretrained: &model.net,
                recorded: Vec::new(),
                sink: &mut sink,
                progress: Progress::stderr(),
                stop,
                agent: Some(Box::new(agent)),
                remote: scorer.map(|scorer| Remote {
                    scorer,
                    recipe: Recipe {
                        spec: spec.clone(),
                        spec_path: spec.path.clone(),
                        seed: config.seed,
                        eval_samples: args.eval_samples,
                        threads: args.device.threads,
                        device: args.device.device.clone(),
                        pruningnet: None,
                    },
                }),
            }
            .run()
        }?;
        if let Some(adapted) = outcome.best {
            // Adapted policies were scored on `eval_samples`; rescore the best on the whole
            // validation split before comparing it with the zero-shot policy.
            let keeps: Vec<f64> = adapted.layers.iter().map(|l| l.keep).collect();
            let score = evaluator.evaluate(&keeps)?;
            if score.reward > best.metrics.reward {
                best.layers = score.layers.clone();
                best.metrics = score;
                best_from = match outcome.best_from {
                    Some(from) if from != config.agent.name() => from,
                    _ => "gnn-transfer".into(),
                };
                best.agent = best_from.clone();
            }
            best.episodes = outcome.episodes;
        }
        folder_dir = Some(folder.dir.clone());
        if outcome.interrupted {
            interrupted = Some(format!(
                "after {} of {} adaptation episodes; the best policy found by then is written",
                outcome.episodes, args.adapt_episodes
            ));
        }
    }
    let keeps: Vec<f64> = best.layers.iter().map(|l| l.keep).collect();
    let test = evaluator.evaluate_on(&keeps, SplitName::Test)?;
    // The agent's own zero-shot policy on test, whichever policy is returned (scored again
    // only when it is not the returned one).
    let zero_shot_test = if best.layers == zero_shot.layers {
        test.clone()
    } else {
        evaluator.evaluate_on(&greedy, SplitName::Test)?
    };
    best.save(&out)?;
    if args.json.json {
        let extra = json!({
            "env": spec.name,
            "agent": args.agent,
            "adapt_episodes": args.adapt_episodes,
            "zero_shot_reward": zero_shot.reward,
            "zero_shot_accuracy": zero_shot.accuracy,
            "best_from": best_from,
            "zero_shot": report(&zero_shot, &zero_shot_test, json!({}))?,
            "reference": reference.as_ref().map(|(h, score)| json!({"method": h.method.name(), "reward": score.reward, "accuracy": score.accuracy})),
            "policy": out,
            "logdir": folder_dir,
        });
        println!("{}", report(&best.metrics, &test, extra)?);
    } else {
        print_score(
            &format!(
                "{} transferred to {} ({} adaptation episodes)",
                args.agent.display(),
                spec.name,
                args.adapt_episodes
            ),
            &best.metrics,
            &test,
        );
        if best_from != "gnn-transfer" {
            println!(
                "the policy is {best_from}'s: the agent's own scored lower on validation (reward {:.4} against {:.4})",
                zero_shot.reward, best.metrics.reward
            );
        }
        println!("policy written to {}", out.display());
    }
    match interrupted {
        Some(message) => Err(autoprune::Error::Interrupted { message }.into()),
        None => Ok(()),
    }
}
