//! `autoprune proxy-study`: how well each cheap score of a pruned model (no recovery,
//! BatchNorm recalibration, k fine-tuning steps) ranks policies as full fine-tuning does.

use super::{BudgetArgs, DeviceArgs, JsonArg, SeedArg};
use anyhow::Result;
use autoprune::config::EnvSpec;
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::policy::PolicyFile;
use autoprune::prune::Method;
use autoprune::run::finetune::FinetuneSpec;
use autoprune::run::proxy::{correlations, proxy_names, run_study, StudySpec};
use autoprune::run::{interrupt, run_dir, RunLock};
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct ProxyStudyArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    /// Policies in all: uniform, global, LAMP and ERK, then the --policy files, then random
    /// profiles scaled to the budget.
    #[arg(long, default_value_t = 12)]
    policies: usize,
    /// A policy file to include (a searched policy); repeat for several.
    #[arg(long)]
    policy: Vec<PathBuf>,
    /// Masked fine-tuning steps of the `ft-k` proxies (the evaluator's short fine-tune).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    proxy_steps: Vec<usize>,
    /// Full fine-tuning of every policy (default: 1 epoch at the env's train.lr).
    #[command(flatten)]
    budget: BudgetArgs,
    /// Study folder (default: runs/proxy-study-<env>-s<seed>-<time>); a folder holding the
    /// same study continues it.
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// Draw each proxy against the fine-tuned score (PNG).
    #[arg(long)]
    png: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

const STUDY_FILE: &str = "study.json";

pub fn run(args: ProxyStudyArgs) -> Result<()> {
    let spec = EnvSpec::load(&args.env)?;
    let invalid = |key: &str, message: String| autoprune::Error::Invalid {
        path: args.env.clone(),
        key: key.into(),
        message,
    };
    let fixed = 4 + args.policy.len();
    if args.policies < fixed.max(3) {
        return Err(invalid(
            "--policies",
            format!(
                "{} is fewer than the 4 allocators and {} policy files (and a correlation needs 3)",
                args.policies,
                args.policy.len()
            ),
        )
        .into());
    }
    let epochs = args.budget.epochs(&args.env, 1.0)?;
    if let Some(png) = &args.png {
        autoprune::fsio::prepare_output(png)?;
    }
    let seed = args.seed.seed.unwrap_or(0);
    let dir = run_dir(
        args.logdir.clone(),
        &format!("proxy-study-{}", spec.name),
        seed,
    );
    std::fs::create_dir_all(&dir).map_err(|e| autoprune::Error::Invalid {
        path: dir.clone(),
        key: "--logdir".into(),
        message: format!("cannot create the study folder ({e})"),
    })?;
    let _lock = RunLock::acquire(&dir)?;
    let device = args.device.setup(seed)?;
    let progress = Progress::stderr();
    let model = pretrained(&spec, device, seed, &progress)?;
    let mut evaluator =
        Evaluator::new(&model.net, &model.data, EvalConfig::from_env(&spec, seed)?)?;
    let wall = evaluator.wall(&spec.path)?;
    let mut policies = Vec::new();
    for method in [Method::Uniform, Method::Global, Method::Lamp, Method::Erk] {
        policies.push((
            method.name().to_string(),
            evaluator.allocate(method, &wall, seed)?,
        ));
    }
    for path in &args.policy {
        let keeps = PolicyFile::load(path)?.keeps_for(evaluator.costs(), path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        policies.push((format!("file:{stem}"), keeps));
    }
    for i in 0..args.policies - fixed {
        let keeps = evaluator.allocate(Method::Random, &wall, seed + 1 + i as u64)?;
        policies.push((format!("random-{i}"), keeps));
    }
    let train = args.budget.train(&spec);
    let per_epoch = model.data.train.len().div_ceil(train.batch_size.max(1));
    let steps = args
        .budget
        .steps
        .unwrap_or(((epochs * per_epoch as f64).round() as usize).max(1));
    let study = StudySpec {
        proxy_steps: args.proxy_steps.clone(),
        recalibration_batches: spec.reward.recalibration_batches,
        finetune: FinetuneSpec {
            train,
            steps,
            stages: 1,
            distill: None,
            checkpoint_every: 200,
            seed,
        },
    };
    // The policies' keep ratios too: a policy file edited since gets a new study, never
    // another policy's fine-tuning checkpoint.
    let header = json!({"env": spec.name, "spec": study, "policies": policies.iter().map(|(l, k)| json!({"label": l, "keeps": k})).collect::<Vec<_>>()});
    let header_path = dir.join("settings.json");
    match std::fs::read_to_string(&header_path) {
        Ok(text)
            if serde_json::from_str::<serde_json::Value>(&text).ok() != Some(header.clone()) =>
        {
            return Err(autoprune::Error::Invalid {
                path: dir.clone(),
                key: "--logdir".into(),
                message: "holds a study with other settings; choose another folder".into(),
            }
            .into())
        }
        Ok(_) => progress.println(&format!("continuing the study in {}", dir.display())),
        Err(_) => autoprune::fsio::write_atomic(
            &header_path,
            serde_json::to_string_pretty(&header)?.as_bytes(),
        )?,
    }
    let stop = interrupt::arm();
    let rows = run_study(&mut evaluator, &policies, &study, &dir, &progress, stop)?;
    let names = proxy_names(&study);
    let table = correlations(&rows, &names);
    let result = json!({"env": spec.name, "study": dir, "steps": steps, "lr": study.finetune.train.lr, "policies": rows, "correlations": table});
    autoprune::fsio::write_atomic(
        &dir.join(STUDY_FILE),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    if let Some(png) = &args.png {
        let panels: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .zip(&table)
            .map(|(name, c)| {
                let points = rows
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.proxies.iter().find(|p| p.proxy == *name)?.reward,
                            r.tuned_reward,
                        ))
                    })
                    .collect();
                (
                    format!("{name}: rho {:.2}, tau {:.2}", c.spearman, c.kendall),
                    points,
                )
            })
            .collect();
        let title = format!(
            "{}: proxies against the reward after {steps} fine-tuning steps",
            spec.name
        );
        autoprune::report::render_scatter(png, &title, "fine-tuned reward", &panels)?;
    }
    if args.json.json {
        println!("{result}");
    } else {
        println!(
            "{}: {} policies, full fine-tuning {steps} steps (lr {})",
            spec.name,
            rows.len(),
            study.finetune.train.lr
        );
        println!(
            "{:<14} {:>9} {:>9} {:>12}",
            "proxy", "spearman", "kendall", "s/policy"
        );
        for c in &table {
            println!(
                "{:<14} {:>9.3} {:>9.3} {:>12.2}",
                c.proxy, c.spearman, c.kendall, c.seconds_per_policy
            );
        }
        println!("rows in {}", dir.join(STUDY_FILE).display());
    }
    Ok(())
}
