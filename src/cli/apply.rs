//! `autoprune apply`: applies a policy file to the env's model, scores it, and optionally
//! saves the pruned model.

use super::print::{print_score, report};
use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::Result;
use autoprune::config::{EnvOverrides, EnvSpec};
use autoprune::data::SplitName;
use autoprune::eval::pruningnet::PruningNet;
use autoprune::eval::{graph_sidecar, pretrained, EvalConfig, Evaluator};
use autoprune::policy::PolicyFile;
use autoprune::prune::CostModel;
use autoprune::prune::Criterion;
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct ApplyArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    /// Policy file (policies/*.json).
    #[arg(long)]
    policy: PathBuf,
    /// Pruning criterion (overrides the env's prune.criterion), e.g. wanda or sparsegpt.
    #[arg(long, value_enum)]
    criterion: Option<Criterion>,
    /// Masked fine-tuning steps before scoring (overrides the env's reward.finetune_steps).
    #[arg(long)]
    finetune_steps: Option<usize>,
    /// Write the pruned model here: an ONNX file when FILE ends in .onnx; for a GPT, a
    /// Hugging Face GPT-2 directory when FILE has no extension (heads removed, other pruning
    /// as zeros); else safetensors plus FILE.graph.json. Channel-pruned models are physically
    /// slimmed.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Start from a PruningNet's weights for the policy (the pruningnet.safetensors of a
    /// search with agent = "pruningnet") instead of the pretrained model's.
    #[arg(long)]
    pruningnet: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: ApplyArgs) -> Result<()> {
    let overrides = EnvOverrides {
        finetune_steps: args.finetune_steps,
        criterion: args.criterion,
        ..EnvOverrides::default()
    };
    let spec = EnvSpec::load(&args.env)?.with_overrides(&overrides)?;
    let policy_path = &args.policy;
    let policy = PolicyFile::load(policy_path)?;
    if policy.target != spec.prune.target {
        Progress::stderr().println(&format!(
            "note: {} was made for {:?} keep {}, the env asks for {:?} keep {}; scoring the policy as it is",
            policy_path.display(),
            policy.target.metric,
            policy.target.keep,
            spec.prune.target.metric,
            spec.prune.target.keep
        ));
    }
    // Check the fingerprint before loading data or weights.
    let costs = CostModel::new(&spec.build_graph()?, spec.prune.granularity);
    let keeps = policy.keeps_for(&costs, policy_path)?;
    let save = args.save.as_deref();
    let gpt2_dir = save.is_some_and(|p| p.extension().is_none()) && spec.model.is_language_model();
    if let Some(path) = save {
        autoprune::eval::check_save(&spec, path)?;
    }
    match save {
        Some(dir) if gpt2_dir => autoprune::fsio::prepare_output_dir(dir)?,
        Some(path) => autoprune::fsio::prepare_output(path)?,
        None => {}
    }
    if args.pruningnet.is_some() {
        autoprune::run::check_pruningnet_env(&spec)?;
    }
    let seed = args.seed.seed.unwrap_or(0);
    let device = args.device.setup(seed)?;
    let model = pretrained(&spec, device, seed, &Progress::stderr())?;
    let mut evaluator =
        Evaluator::new(&model.net, &model.data, EvalConfig::from_env(&spec, seed)?)?;
    if let Some(path) = &args.pruningnet {
        evaluator.set_source(Some(Box::new(PruningNet::load(path, &model.net)?)));
    }
    let score = evaluator.evaluate(&keeps)?;
    let test = evaluator.rescore_on(&keeps, SplitName::Test)?;
    if let Some(path) = save {
        let source = match spec.model.hf_path() {
            Some(_) => Some(spec.hf_gpt2()?),
            None => None,
        };
        evaluator.save_pruned(&keeps, path, source.as_ref())?;
    }
    if args.json.json {
        let extra = json!({"env": spec.name, "policy": policy_path, "agent": policy.agent, "finetune_steps": spec.reward.finetune_steps, "saved": save, "pruningnet": args.pruningnet});
        println!("{}", report(&score, &test, extra)?);
    } else {
        print_score(
            &format!("{} with {}", spec.name, policy_path.display()),
            &score,
            &test,
        );
        if let Some(path) = save {
            if path.extension().is_some_and(|e| e == "onnx") {
                println!("pruned model written to {} (ONNX)", path.display());
            } else if gpt2_dir {
                println!(
                    "pruned model written to {} (a Hugging Face GPT-2 directory)",
                    path.display()
                );
            } else {
                println!(
                    "pruned model written to {} (graph in {})",
                    path.display(),
                    graph_sidecar(path).display()
                );
            }
        }
    }
    Ok(())
}
