//! `autoprune finetune`: fine-tunes the model a policy prunes (one-shot, or iteratively along
//! a cubic schedule), optionally distilling from the dense model, with resumable checkpoints;
//! reports validation and test scores and can save the model.

use super::print::{print_score, report};
use super::{BudgetArgs, DeviceArgs, JsonArg, SeedArg};
use anyhow::{Context, Result};
use autoprune::config::{EnvOverrides, EnvSpec};
use autoprune::data::SplitName;
use autoprune::eval::{pretrained, Distill, EvalConfig, Evaluator};
use autoprune::policy::PolicyFile;
use autoprune::prune::CostModel;
use autoprune::run::finetune::{finetune, FinetuneSpec};
use autoprune::run::{interrupt, new_run_dir, run_dir, RunLock};
use autoprune::runlog::Progress;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct FinetuneArgs {
    /// Env file (envs/*.toml).
    #[arg(long, required_unless_present = "resume")]
    env: Option<PathBuf>,
    /// Policy file (policies/*.json).
    #[arg(long, required_unless_present = "resume")]
    policy: Option<PathBuf>,
    /// The budget (default: the env's train.epochs, at its train.lr).
    #[command(flatten)]
    budget: BudgetArgs,
    /// Prune in this many stages along a cubic schedule, fine-tuning between them, within
    /// the same total steps (1: one-shot).
    #[arg(long, default_value_t = 1)]
    stages: usize,
    /// Distil from the dense model: `T,W` is the temperature T and the weight W of the
    /// distillation term (the labels' cross-entropy has 1 − W); `T` alone takes W = 0.5.
    #[arg(long, value_name = "T,W", value_delimiter = ',')]
    kd: Vec<f64>,
    /// Write a checkpoint every this many steps (and at the end of every stage).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    /// Write the fine-tuned model here (as `apply --save`).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Run folder (default: runs/finetune-<env>-s<seed>-<time>).
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// Continue the run in this folder (after a crash or Ctrl-C).
    #[arg(long, conflicts_with_all = ["env", "policy", "epochs", "steps", "lr", "stages", "kd", "seed", "logdir", "save"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

/// What a run folder records to be resumed: the fine-tuning settings and where the model goes.
#[derive(Serialize, Deserialize)]
struct Record {
    /// `spec.steps` is 0 until the data is loaded when the run is given in epochs.
    spec: FinetuneSpec,
    epochs: f64,
    threads: Option<i32>,
    save: Option<PathBuf>,
}

const RECORD_FILE: &str = "finetune.json";
const ENV_FILE: &str = "env.toml";
const POLICY_FILE: &str = "policy.json";

pub fn run(args: FinetuneArgs) -> Result<()> {
    let (dir, _lock, env_path, policy_path, mut record) = match &args.resume {
        Some(dir) => open(dir, &args)?,
        None => start(&args)?,
    };
    let overrides = EnvOverrides {
        finetune_steps: Some(0),
        ..EnvOverrides::default()
    };
    let spec = EnvSpec::load(&env_path)?.with_overrides(&overrides)?;
    let policy = PolicyFile::load(&policy_path)?;
    let costs = CostModel::new(&spec.build_graph()?, spec.prune.granularity);
    let keeps = policy.keeps_for(&costs, &policy_path)?;
    let seed = record.spec.seed;
    let device = args.device.setup_with_threads(seed, record.threads)?;
    let progress = Progress::stderr();
    let model = pretrained(&spec, device, seed, &progress)?;
    if record.spec.steps == 0 {
        let per_epoch = model
            .data
            .train
            .len()
            .div_ceil(record.spec.train.batch_size.max(1));
        record.spec.steps = ((record.epochs * per_epoch as f64).round() as usize).max(1);
    }
    if record.spec.stages > record.spec.steps {
        let message = format!(
            "{} stages need at least as many steps ({})",
            record.spec.stages, record.spec.steps
        );
        return Err(autoprune::Error::Invalid {
            path: dir.clone(),
            key: "--stages".into(),
            message,
        }
        .into());
    }
    let mut evaluator =
        Evaluator::new(&model.net, &model.data, EvalConfig::from_env(&spec, seed)?)?;
    let stop = interrupt::arm();
    let teacher = record.spec.distill.map(|_| &model.net);
    let stages = finetune(
        &mut evaluator,
        &keeps,
        &record.spec,
        teacher,
        &dir,
        &progress,
        stop,
    )?;
    let score = evaluator.rescore_on(&keeps, SplitName::Val)?;
    let test = evaluator.rescore_on(&keeps, SplitName::Test)?;
    if let Some(path) = &record.save {
        let source = match spec.model.hf_path() {
            Some(_) => Some(spec.hf_gpt2()?),
            None => None,
        };
        evaluator.save_working(&keeps, path, source.as_ref())?;
    }
    let extra = json!({"env": spec.name, "policy": policy_path, "agent": policy.agent, "run": dir, "steps": record.spec.steps, "stages": record.spec.stages, "lr": record.spec.train.lr, "distill": record.spec.distill, "stage_reports": stages, "saved": record.save});
    let value = report(&score, &test, extra)?;
    let text = serde_json::to_string_pretty(&value)?;
    autoprune::fsio::write_atomic(&dir.join("result.json"), text.as_bytes())?;
    if args.json.json {
        println!("{value}");
    } else {
        print_score(
            &format!(
                "{} with {}, fine-tuned for {} steps",
                spec.name,
                policy_path.display(),
                record.spec.steps
            ),
            &score,
            &test,
        );
        if let Some(path) = &record.save {
            println!("fine-tuned model written to {}", path.display());
        }
    }
    Ok(())
}

type Opened = (PathBuf, RunLock, PathBuf, PathBuf, Record);

/// A new run folder, holding copies of the env and the policy and the settings.
fn start(args: &FinetuneArgs) -> Result<Opened> {
    let env = args.env.as_deref().context("--env is required")?;
    let policy = args.policy.as_deref().context("--policy is required")?;
    let spec = EnvSpec::load(env)?;
    let invalid = |key: &str, message: &str| autoprune::Error::Invalid {
        path: env.to_path_buf(),
        key: key.into(),
        message: message.into(),
    };
    if args.stages == 0 {
        return Err(invalid("--stages", "give at least 1 (1: one-shot)").into());
    }
    let distill = match args.kd[..] {
        [] => None,
        [temperature] => Some(Distill {
            temperature,
            weight: 0.5,
        }),
        [temperature, weight] => Some(Distill {
            temperature,
            weight,
        }),
        _ => return Err(invalid("--kd", "give T or T,W").into()),
    };
    if let Some(d) = distill {
        if !(d.temperature > 0.0 && d.temperature.is_finite()) {
            let message = format!("temperature {} must be a positive number", d.temperature);
            return Err(invalid("--kd", &message).into());
        }
        if !(0.0..=1.0).contains(&d.weight) {
            let message = format!("weight {} must lie in [0, 1]", d.weight);
            return Err(invalid("--kd", &message).into());
        }
    }
    let epochs = args.budget.epochs(env, spec.train.epochs as f64)?;
    if let Some(steps) = args.budget.steps.filter(|s| *s < args.stages) {
        let message = format!(
            "{} stages need at least as many steps ({steps})",
            args.stages
        );
        return Err(invalid("--stages", &message).into());
    }
    if args.stages > 1 && spec.prune.criterion.is_post_training() {
        let message = format!(
            "iterative pruning ranks weights as they are fine-tuned; prune.criterion = \"{}\" prunes once after training (use --stages 1)",
            spec.prune.criterion.name()
        );
        return Err(invalid("--stages", &message).into());
    }
    PolicyFile::load(policy)?;
    if let Some(save) = &args.save {
        autoprune::eval::check_save(&spec, save)?;
        autoprune::fsio::prepare_output(save)?;
    }
    let seed = args.seed.seed.unwrap_or(0);
    let train = args.budget.train(&spec);
    let record = Record {
        spec: FinetuneSpec {
            train,
            steps: args.budget.steps.unwrap_or(0),
            stages: args.stages,
            distill,
            checkpoint_every: args.checkpoint_every.max(1),
            seed,
        },
        epochs,
        threads: args.device.threads,
        save: args.save.clone(),
    };
    let dir = run_dir(
        args.logdir.clone(),
        &format!("finetune-{}", spec.name),
        seed,
    );
    let lock = new_run_dir(&dir, "choose another --logdir, or --resume it")?;
    if dir.join(RECORD_FILE).exists() {
        return Err(autoprune::Error::Invalid {
            path: dir.clone(),
            key: "--logdir".into(),
            message: "already holds a fine-tuning run; choose another --logdir, or --resume it"
                .into(),
        }
        .into());
    }
    copy(env, &dir.join(ENV_FILE))?;
    copy(policy, &dir.join(POLICY_FILE))?;
    let text = serde_json::to_string_pretty(&record)?;
    autoprune::fsio::write_atomic(&dir.join(RECORD_FILE), text.as_bytes())?;
    Ok((
        dir.clone(),
        lock,
        dir.join(ENV_FILE),
        dir.join(POLICY_FILE),
        record,
    ))
}

/// A run folder to resume.
fn open(dir: &Path, args: &FinetuneArgs) -> Result<Opened> {
    let lock = RunLock::acquire(dir)?;
    let path = dir.join(RECORD_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: not a fine-tuning run folder (no {RECORD_FILE})",
            dir.display()
        )
    })?;
    let mut record: Record = serde_json::from_str(&text).map_err(|e| autoprune::Error::Data {
        path: path.clone(),
        message: format!("cannot read the run's settings: {e}"),
    })?;
    if let Some(threads) = args.device.threads {
        record.threads = Some(threads);
    }
    Ok((
        dir.to_path_buf(),
        lock,
        dir.join(ENV_FILE),
        dir.join(POLICY_FILE),
        record,
    ))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("{}: cannot read", from.display()))?;
    autoprune::fsio::write_atomic(to, &bytes)?;
    Ok(())
}
