//! Seconds per search episode, and the share of search time spent outside the evaluator
//! (agent acting and learning, the environment and its wall, the JSONL log, TensorBoard
//! events, best.json), for each agent's shipped config, side by side in one run.
//!
//! `cargo bench --bench search [-- --episodes N --device cpu]`
//! Runs each config (configs/amc-ddpg.toml, ppo.toml, evolution.toml, random.toml, gnn.toml) for N
//! episodes (default 30; DDPG's warm-up is cut to a third of them so that most episodes
//! learn). Needs the env's data (`make setup`); uses its checkpoint when present, else random
//! weights (timing does not depend on the values).

mod common;

use autoprune::config::EnvSpec;
use autoprune::config::{SearchConfig, Validate};
use autoprune::device::{device_name, parse_device};
use autoprune::eval::{EvalConfig, Evaluator};
use autoprune::run::{RunFolder, Search};
use autoprune::runlog::{Progress, TensorBoardSink};
use common::{arg, data_and_model};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn main() {
    let episodes: usize = arg("--episodes").and_then(|r| r.parse().ok()).unwrap_or(30);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "auto".into())).expect("device");
    let stop = AtomicBool::new(false);
    let scratch = tempfile::tempdir().expect("temporary folder");
    let mut rows = Vec::new();
    let mut header = None;
    let mut loaded = None;
    for name in ["amc-ddpg", "ppo", "evolution", "random", "gnn"] {
        let path = PathBuf::from(format!("configs/{name}.toml"));
        let mut config = SearchConfig::load(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        config.episodes = episodes;
        config.ddpg.warmup = (episodes / 3).max(1);
        let config = config.check().unwrap_or_else(|e| panic!("{e}"));
        let env_text = std::fs::read_to_string(&config.env).expect("env file");
        let spec = EnvSpec::parse(&env_text, &config.env).unwrap_or_else(|e| panic!("{e}"));
        // The shipped configs share an env: load its data and model once.
        if loaded.as_ref().is_none_or(|(path, _)| path != &config.env) {
            loaded = Some((config.env.clone(), data_and_model(&spec, device)));
        }
        let (_, (data, net, weights)) = loaded.as_ref().expect("loaded above");
        let weights = *weights;
        let mut eval_config = EvalConfig::from_env(&spec, config.seed).expect("eval config");
        eval_config.eval_samples = config.eval_samples;
        let mut evaluator = Evaluator::new(net, data, eval_config).expect("evaluator");
        let dir = scratch.path().join(name);
        let folder =
            RunFolder::create(&dir, &config, &spec, &Default::default()).expect("run folder");
        let outcome = {
            let mut sink = TensorBoardSink::new(Path::new(&folder.dir)).expect("event file");
            Search {
                config: &config,
                spec: &spec,
                evaluator: &mut evaluator,
                folder: &folder,
                pretrained: net,
                recorded: Vec::new(),
                sink: &mut sink,
                progress: Progress::stderr(),
                stop: &stop,
                agent: None,
                remote: None,
            }
            .run()
            .unwrap_or_else(|e| panic!("{e}"))
        };
        header.get_or_insert_with(|| {
            format!(
                "{} ({weights} weights) on {}, {} episodes per agent (DDPG: {} warm-up), scored on {} validation samples",
                spec.name,
                device_name(device),
                episodes,
                config.ddpg.warmup,
                config
                    .eval_samples
                    .map_or("all".to_string(), |n| n.to_string())
            )
        });
        rows.push(format!(
            "| {} | {:.2} | {:.2} | {:.1}% |",
            config.agent.name(),
            outcome.seconds_per_episode(),
            outcome.eval_seconds / outcome.new_episodes.max(1) as f64,
            100.0 * outcome.outside_evaluator_share()
        ));
    }
    println!("{}", header.unwrap_or_default());
    println!("| agent | seconds per episode | of which evaluator | outside the evaluator |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
