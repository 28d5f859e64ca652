//! `autoprune adapt-curve`: best-so-far validation reward against adaptation episodes, for
//! several starts, envs and seeds.

use super::{DeviceArgs, JsonArg};
use anyhow::{Context, Result};
use autoprune::agents::gnn::GraphAgent;
use autoprune::agents::Agent;
use autoprune::config::{gnn_settings, EnvSpec};
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::run::adapt::{adaptation_curve, curve_statistics};
use autoprune::run::agent_file::load_graph_agent;
use autoprune::run::heuristics::profile_env;
use autoprune::run::pool::{Recipe, Scorer};
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct AdaptCurveArgs {
    /// NAME=CHECKPOINT, repeatable; CHECKPOINT `random` is a freshly initialised agent.
    #[arg(long = "init", required = true)]
    inits: Vec<String>,
    /// Env file, repeatable: the held-out tasks.
    #[arg(long = "env", required = true)]
    envs: Vec<PathBuf>,
    /// PPO settings for adaptation: the `[gnn]` table of this config (e.g. the
    /// meta-train config whose inner loop the agent was trained for); default: `[gnn]`'s
    /// defaults.
    #[arg(long)]
    gnn_config: Option<PathBuf>,
    /// Episode counts to report, ascending.
    #[arg(long, value_delimiter = ',', default_value = "0,5,10,20,50")]
    points: Vec<usize>,
    /// Seeds of the adaptation runs.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Score adaptation episodes on only the first N validation samples.
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Write the curves (JSON) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw the mean curves to this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    json: JsonArg,
}

/// `NAME=CHECKPOINT` (or `NAME=random`) arguments, checked.
fn parse_inits(inits: &[String]) -> Result<Vec<(String, Option<PathBuf>)>> {
    let parsed: Vec<(String, Option<PathBuf>)> = inits
        .iter()
        .map(|spec| {
            let (name, path) = spec.split_once('=').with_context(|| {
                format!("--init {spec}: write NAME=CHECKPOINT (or NAME=random)")
            })?;
            anyhow::ensure!(!name.is_empty(), "--init {spec}: the name is empty");
            let path = (path != "random").then(|| PathBuf::from(path));
            if let Some(path) = &path {
                anyhow::ensure!(
                    path.is_file(),
                    "--init {spec}: {} is not a file (give an agent.safetensors, or random)",
                    path.display()
                );
            }
            Ok((name.to_string(), path))
        })
        .collect::<Result<_>>()?;
    for (i, (name, _)) in parsed.iter().enumerate() {
        anyhow::ensure!(
            parsed[..i].iter().all(|(other, _)| other != name),
            "--init {name}=...: the name is given twice; give each start its own name"
        );
    }
    Ok(parsed)
}

pub fn run(args: AdaptCurveArgs, scorer: Option<&mut dyn Scorer>) -> Result<()> {
    let inits = parse_inits(&args.inits)?;
    anyhow::ensure!(
        args.eval_samples != Some(0),
        "--eval-samples: give at least 1 (or leave it out to score on the whole validation split)"
    );
    let gnn = gnn_settings(args.gnn_config.as_deref())?;
    anyhow::ensure!(
        args.points.windows(2).all(|w| w[0] < w[1]),
        "--points: give episode counts in ascending order, e.g. 0,5,10,20,50"
    );
    anyhow::ensure!(!args.seeds.is_empty(), "--seeds: give at least one seed");
    for path in [&args.out, &args.png].into_iter().flatten() {
        autoprune::fsio::prepare_output(path)?;
    }
    let runs = adaptation_runs(&args, &inits, &gnn, scorer)?;
    // Mean and sample std over every env and seed, per initialisation and point.
    let names: Vec<String> = inits.iter().map(|(name, _)| name.clone()).collect();
    let starts: Vec<&str> = runs.iter().map(|r| r.init.as_str()).collect();
    let curves: Vec<Vec<f64>> = runs.iter().map(|r| r.rewards.clone()).collect();
    let stats = curve_statistics(&names, &starts, &curves);
    let mut summary = serde_json::Map::new();
    for (name, (mean, std)) in names.iter().zip(&stats) {
        summary.insert(name.clone(), json!({"mean": mean, "std": std}));
    }
    let result = json!({
        "points": args.points,
        "seeds": args.seeds,
        "envs": args.envs,
        "eval_samples": args.eval_samples,
        "gnn": gnn,
        "runs": runs,
        "summary": summary,
    });
    if let Some(out) = &args.out {
        autoprune::fsio::write_atomic(out, format!("{result:#}\n").as_bytes())?;
    }
    if let Some(png) = &args.png {
        let lines: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .zip(&stats)
            .map(|(name, (mean, _))| {
                let points = args.points.iter().zip(mean);
                (name.clone(), points.map(|(&p, &m)| (p as f64, m)).collect())
            })
            .collect();
        autoprune::report::render_lines(
            png,
            "best validation reward within N adaptation episodes (mean over envs and seeds)",
            "adaptation episodes",
            "validation reward",
            &lines,
        )?;
    }
    if args.json.json {
        println!("{result}");
    } else {
        print_table(&args.points, &names, &stats);
    }
    Ok(())
}

/// One adaptation run: a start on an env with a seed, and its best validation reward at
/// each point.
#[derive(serde::Serialize)]
struct CurveRun {
    init: String,
    env: String,
    seed: u64,
    rewards: Vec<f64>,
}

/// Every start adapting on every env with every seed.
fn adaptation_runs(
    args: &AdaptCurveArgs,
    inits: &[(String, Option<PathBuf>)],
    gnn: &autoprune::agents::gnn::GnnConfig,
    mut scorer: Option<&mut dyn Scorer>,
) -> Result<Vec<CurveRun>> {
    let (points, seeds, eval_samples) = (&args.points, &args.seeds, args.eval_samples);
    let device = args.device.setup(0)?;
    let mut runs = Vec::new();
    let progress = Progress::stderr();
    let bar = progress.bar(
        (inits.len() * args.envs.len() * seeds.len()) as u64,
        "adaptation runs",
    );
    for env in &args.envs {
        let spec = EnvSpec::load(env)?;
        let model = pretrained(&spec, device, 0, &progress)?;
        for &seed in seeds {
            let eval_config = EvalConfig::from_env(&spec, seed)?;
            let mut rescore = Evaluator::new(&model.net, &model.data, eval_config.clone())?;
            let search_config = EvalConfig {
                eval_samples,
                ..eval_config
            };
            let mut search = Evaluator::new(&model.net, &model.data, search_config)?;
            // MPI workers score the episodes with the same evaluator.
            let mut handle = 0;
            if let Some(scorer) = scorer.as_deref_mut() {
                handle = scorer.prepare(&Recipe {
                    spec: spec.clone(),
                    spec_path: spec.path.clone(),
                    seed,
                    eval_samples,
                    threads: args.device.threads,
                    device: args.device.device.clone(),
                    pruningnet: None,
                })?;
            }
            for (name, path) in inits {
                let budget = search.wall(&spec.path)?.budget().keep;
                let mut agent = match path {
                    Some(path) => {
                        load_graph_agent(path, search.costs(), budget, seed, gnn.clone())?
                    }
                    None => GraphAgent::new(
                        gnn.clone(),
                        search.costs(),
                        budget,
                        seed,
                        tch::Device::Cpu,
                    )?,
                };
                let relative = agent.acts_relative_to_reference();
                let (mut prune_env, _) =
                    profile_env(&mut search, &spec.path, relative, seed, true)?;
                let rewards = adaptation_curve(
                    &mut agent,
                    &mut prune_env,
                    &mut search,
                    &mut rescore,
                    points,
                    scorer.as_deref_mut().map(|s| (s, handle)),
                )?;
                let shown: Vec<String> = rewards.iter().map(|r| format!("{r:.4}")).collect();
                progress.println(&format!(
                    "{name} on {} (seed {seed}): {}",
                    spec.name,
                    shown.join(" ")
                ));
                runs.push(CurveRun {
                    init: name.clone(),
                    env: spec.name.clone(),
                    seed,
                    rewards,
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(runs)
}

/// The mean ± std table, a row per start and a column per point.
fn print_table(points: &[usize], names: &[String], stats: &[(Vec<f64>, Vec<f64>)]) {
    let header: Vec<String> = points.iter().map(|p| format!("{p:>15}")).collect();
    println!("{:<16}{}", "episodes", header.join(""));
    for (name, (mean, std)) in names.iter().zip(stats) {
        let cells: Vec<String> = mean
            .iter()
            .zip(std)
            .map(|(m, s)| format!("{:>15}", format!("{m:.4}±{s:.4}")))
            .collect();
        println!("{name:<16}{}", cells.join(""));
    }
}
