//! Searches start from the heuristics: a search never returns less than the best of them,
//! however badly its agent acts; a graph agent's profile is relative to the best heuristic,
//! so zero actions reproduce it; demonstrations reproduce the policies they stand for; and a
//! search that scores a subset rescores the promising candidates on the whole split.

use crate::common::{records, setup};
use autoprune::agents::gnn::{GnnConfig, GraphAgent};
use autoprune::agents::{Actor, Agent, Episode, Learner, OneShotActor};
use autoprune::config::{default_heuristics, EnvSpec, SearchConfig, Validate};
use autoprune::env::{rollout, PruneEnv};
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::model::zoo;
use autoprune::prune::{
    allocate, ActionWall, Budget, CostModel, Granularity, Method, Metric, Signals,
};
use autoprune::run::heuristics::best_heuristic;
use autoprune::run::{RunFolder, RunRecord, Search};
use autoprune::runlog::{NoSink, Progress};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// An agent that proposes nonsense: NaN, infinities and values far outside [0, 1].
struct Nonsense;

impl Agent for Nonsense {
    fn actor(&mut self) -> Actor<'_> {
        Actor::OneShot(self)
    }

    fn begin_episode(&mut self, _index: usize) {}
}

impl OneShotActor for Nonsense {
    fn act(&mut self, features: &[Vec<f32>], _explore: bool) -> Vec<f64> {
        let junk = [f64::NAN, -5.0, f64::INFINITY, 7.0, f64::NEG_INFINITY];
        (0..features.len()).map(|u| junk[u % junk.len()]).collect()
    }
}

impl Learner for Nonsense {
    fn learn(&mut self, _episode: &Episode) -> autoprune::Result<()> {
        Ok(())
    }
}

#[test]
fn a_search_whose_agent_proposes_nonsense_returns_the_best_heuristic() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let config_path = setup(dir.path(), "random", 10);
    let mut config = SearchConfig::load(&config_path).unwrap().into_inner();
    // Episodes on a quarter of the validation split: promising ones are rescored whole.
    config.eval_samples = Some(100);
    let config = config.check().unwrap();
    let env_path = dir.path().join("env.toml");
    let spec = EnvSpec::load(&env_path).unwrap();
    let model = pretrained(&spec, tch::Device::Cpu, 0, &Progress::quiet()).unwrap();
    let mut eval_config = EvalConfig::from_env(&spec, 0).unwrap();
    let mut whole = Evaluator::new(&model.net, &model.data, eval_config.clone()).unwrap();
    eval_config.eval_samples = config.eval_samples;
    let mut evaluator = Evaluator::new(&model.net, &model.data, eval_config).unwrap();
    let run = dir.path().join("run");
    let folder = RunFolder::create(&run, &config, &spec, &RunRecord { threads: None }).unwrap();
    let stop = AtomicBool::new(false);
    let outcome = Search {
        config: &config,
        spec: &spec,
        evaluator: &mut evaluator,
        folder: &folder,
        pretrained: &model.net,
        recorded: Vec::new(),
        sink: &mut NoSink,
        progress: Progress::quiet(),
        stop: &stop,
        agent: Some(Box::new(Nonsense)),
        remote: None,
    }
    .run()
    .unwrap();
    assert_eq!(outcome.episodes, 10);

    // The best heuristic, scored on its own over the whole validation split.
    let wall = whole.wall(&env_path).unwrap();
    let (heuristic, score) = best_heuristic(&default_heuristics(), &mut whole, &wall, 0)
        .unwrap()
        .unwrap();
    let best = outcome.best.unwrap();
    let keeps: Vec<f64> = best.layers.iter().map(|l| l.keep).collect();
    assert_eq!(keeps, heuristic.keeps);
    assert_eq!(outcome.best_from.as_deref(), Some(heuristic.method.name()));
    assert!((best.metrics.reward - score.reward).abs() < 1e-12);
    assert!((best.metrics.accuracy - score.accuracy).abs() < 1e-12);

    // The first episodes are the heuristics', in order, each rescored on the whole split;
    // the subset's noise was measured over the split's four windows.
    let records = records(&run);
    let names: Vec<&str> = records
        .iter()
        .take(4)
        .map(|r| r["heuristic"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["uniform", "global", "lamp", "erk"]);
    assert!(records[4..].iter().all(|r| r.get("heuristic").is_none()));
    for r in &records[..4] {
        assert!(r["whole_split"]["reward"].as_f64().is_some(), "{r}");
    }
    assert!(outcome.subset_std.unwrap() >= 0.0);
    let best_whole = records
        .iter()
        .filter_map(|r| r["whole_split"]["reward"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best_whole, best.metrics.reward);
}

fn vgg_wall(granularity: Granularity, keep: f64) -> ActionWall {
    let cfg: Vec<zoo::VggItem> = serde_json::from_str(r#"[16, "M", 32, "M", 64]"#).unwrap();
    let graph = zoo::vgg(&vec![1, 28, 28], 10, &cfg).unwrap();
    let costs = CostModel::new(&graph, granularity);
    let budget = Budget {
        metric: Metric::Params,
        keep,
        bounds: [0.02, 1.0],
    };
    ActionWall::new(&costs, budget, Path::new("toy")).unwrap()
}

#[test]
fn zero_actions_reproduce_the_reference_allocation() {
    tch::set_num_threads(1);
    for granularity in [Granularity::Unstructured, Granularity::Channel] {
        for keep in [0.1, 0.5] {
            let wall = vgg_wall(granularity, keep);
            let n = wall.costs().units().len();
            for method in [Method::Erk, Method::Random, Method::Uniform] {
                let reference = allocate(method, &wall, wall.costs(), Signals::default(), 3);
                let mut env = PruneEnv::new(wall.clone());
                env.set_reference(Some(reference.clone()));
                assert_eq!(env.step_profile(&vec![0.5; n]), reference, "{method:?}");
                assert_eq!(env.step_profile(&vec![0.9; n]), reference, "{method:?}");
                // A deviation moves away from it, and the policy stays feasible.
                let mut tilted = vec![0.5; n];
                tilted[0] = 0.0;
                let moved = env.step_profile(&tilted);
                assert!(wall.cost(&moved) <= keep + 1e-9);
                assert!(moved[0] <= reference[0] + 1e-12);
            }
        }
    }
}

#[test]
fn a_fresh_graph_agent_starts_at_the_reference() {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let wall = vgg_wall(Granularity::Channel, 0.3);
    let reference = allocate(Method::Erk, &wall, wall.costs(), Signals::default(), 0);
    let uniform = wall.fit(&vec![1.0; reference.len()]);
    let mut env = PruneEnv::new(wall.clone());
    env.set_reference(Some(reference.clone()));
    let mut agent =
        GraphAgent::new(GnnConfig::default(), wall.costs(), 0.3, 0, tch::Device::Cpu).unwrap();
    assert!(agent.acts_relative_to_reference());
    let greedy = rollout(&mut agent, &mut env, 0, false).policy;
    let distance = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    // Nearer the reference than uniform allocation is, by a wide margin.
    assert!(distance(&reference, &uniform) > 0.05);
    assert!(
        distance(&greedy, &reference) < 0.2 * distance(&reference, &uniform),
        "{greedy:?} {reference:?}"
    );
}

#[test]
fn demonstrations_reproduce_the_policies_they_stand_for() {
    for granularity in [Granularity::Unstructured, Granularity::Channel] {
        let wall = vgg_wall(granularity, 0.2);
        for seed in 0..4 {
            let policy = allocate(
                Method::Random,
                &wall,
                wall.costs(),
                Signals::default(),
                seed,
            );
            let mut env = PruneEnv::new(wall.clone());
            let (transitions, one_shot) = env.demonstration(&policy);
            assert_eq!(transitions.len(), policy.len());
            assert!(transitions.last().unwrap().next_state.is_none());
            // Replayed step by step, the sequential actions give the policy back.
            env.reset();
            for t in &transitions {
                env.step(t.action);
            }
            let replayed = env.policy();
            for (a, b) in replayed.iter().zip(&policy) {
                assert!((a - b).abs() < 1e-9, "{replayed:?} {policy:?}");
            }
            assert_eq!(env.step_actions(&one_shot), policy);
        }
    }
}
