//! `autoprune baseline`: allocates a policy without learning (uniform, global, LAMP, ERK,
//! random) and scores it.

use super::print::{print_score, report};
use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::Result;
use autoprune::config::{EnvOverrides, EnvSpec};
use autoprune::data::SplitName;
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::policy::{fingerprint, PolicyFile};
use autoprune::prune::{Criterion, Granularity, Method, Metric};
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct BaselineArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    #[arg(long, value_enum)]
    method: Method,
    /// Keep this fraction of the budget metric (overrides the env's target.keep).
    #[arg(long)]
    keep: Option<f64>,
    /// Budget metric (overrides the env's target.metric).
    #[arg(long, value_enum)]
    metric: Option<Metric>,
    /// unstructured, channel or N:M (overrides the env's granularity).
    #[arg(long)]
    granularity: Option<Granularity>,
    /// Pruning criterion (overrides the env's prune.criterion), e.g. wanda or sparsegpt.
    #[arg(long, value_enum)]
    criterion: Option<Criterion>,
    /// Masked fine-tuning steps before scoring (overrides the env's reward.finetune_steps).
    #[arg(long)]
    finetune_steps: Option<usize>,
    /// Write the policy file here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: BaselineArgs) -> Result<()> {
    let overrides = EnvOverrides {
        keep: args.keep,
        metric: args.metric,
        granularity: args.granularity,
        finetune_steps: args.finetune_steps,
        criterion: args.criterion,
    };
    let spec = EnvSpec::load(&args.env)?.with_overrides(&overrides)?;
    let out = args.out.as_deref();
    if let Some(path) = out {
        autoprune::fsio::prepare_output(path)?;
    }
    let seed = args.seed.seed.unwrap_or(0);
    let device = args.device.setup(seed)?;
    let model = pretrained(&spec, device, seed, &Progress::stderr())?;
    let mut evaluator =
        Evaluator::new(&model.net, &model.data, EvalConfig::from_env(&spec, seed)?)?;
    let method = args.method;
    let keeps = {
        let wall = evaluator.wall(&spec.path)?;
        evaluator.allocate(method, &wall, seed)?
    };
    let score = evaluator.evaluate(&keeps)?;
    let test = evaluator.rescore_on(&keeps, SplitName::Test)?;
    if let Some(path) = out {
        let model = fingerprint(evaluator.costs().graph());
        PolicyFile::new(&spec, &model, &score, method.name(), 0, seed).save(path)?;
    }
    if args.json.json {
        let extra = json!({"env": spec.name, "method": method.name(), "target": spec.prune.target, "granularity": spec.prune.granularity, "criterion": spec.prune.criterion, "finetune_steps": spec.reward.finetune_steps, "policy": out, "signal": evaluator.allocator_signal(method)});
        println!("{}", report(&score, &test, extra)?);
    } else {
        print_score(&format!("{} {}", spec.name, method.name()), &score, &test);
        if let Some(path) = out {
            println!("policy written to {}", path.display());
        }
    }
    Ok(())
}
