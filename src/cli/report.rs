//! `autoprune report`: a PNG of runs of one env: reward curves and the best policies'
//! per-layer keep profiles beside uniform and LAMP at the same budget.

use super::{DeviceArgs, JsonArg};
use anyhow::Result;
use autoprune::config::EnvSpec;
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::policy::{fingerprint, PolicyFile};
use autoprune::prune::Method;
use autoprune::report::{render, Profile, RunCurve};
use autoprune::run::{read_records, BEST_FILE, ENV_FILE, EPISODES_FILE};
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (from `search`).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// PNG to write (default: <first run folder>/report.png).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let runs = &args.runs;
    let mut curves = Vec::new();
    for dir in runs {
        let (records, _) = read_records(&dir.join(EPISODES_FILE))?;
        anyhow::ensure!(
            !records.is_empty(),
            "{}: no finished episode to report",
            dir.join(EPISODES_FILE).display()
        );
        let best = PolicyFile::load(&dir.join(BEST_FILE))?;
        let label = format!(
            "{} ({})",
            best.agent,
            dir.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        curves.push(RunCurve {
            label,
            rewards: records.iter().map(|r| r.reward).collect(),
            best_rewards: records.iter().map(|r| r.best_reward).collect(),
            best_keeps: best.layers.iter().map(|l| l.keep).collect(),
        });
    }
    let spec = EnvSpec::load(&runs[0].join(ENV_FILE))?;
    let device = args.device.setup(0)?;
    let model = pretrained(&spec, device, 0, &Progress::stderr())?;
    let evaluator = Evaluator::new(&model.net, &model.data, EvalConfig::from_env(&spec, 0)?)?;
    let wall = evaluator.wall(&spec.path)?;
    let units: Vec<String> = evaluator
        .costs()
        .units()
        .iter()
        .map(|u| u.name.clone())
        .collect();
    let references = [Method::Uniform, Method::Lamp]
        .into_iter()
        .map(|m| {
            Ok(Profile {
                label: m.name().to_string(),
                keeps: evaluator.allocate(m, &wall, 0)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let model = fingerprint(evaluator.costs().graph());
    for (dir, curve) in runs.iter().zip(&curves) {
        let best = PolicyFile::load(&dir.join(BEST_FILE))?;
        anyhow::ensure!(
            best.model == model && best.env == spec.name,
            "{}: a run of another env or model than {}; report runs of one env together",
            dir.display(),
            spec.name
        );
        anyhow::ensure!(
            curve.best_keeps.len() == units.len(),
            "{}: the runs are for different models; report runs of one env together",
            curve.label
        );
    }
    let path = args.out.unwrap_or_else(|| runs[0].join("report.png"));
    autoprune::fsio::prepare_output(&path)?;
    let title = format!(
        "{}: keep {} of {:?} ({})",
        spec.name,
        spec.prune.target.keep,
        spec.prune.target.metric,
        String::from(spec.prune.granularity)
    );
    render(&path, &title, &curves, &references, &units)?;
    if args.json.json {
        println!("{}", json!({"report": path, "runs": runs}));
    } else {
        println!("report written to {}", path.display());
    }
    Ok(())
}
