//! The learning agents learn: on a toy reward with a known best policy, DDPG and PPO move
//! their greedy actions towards it, and so does the graph agent (a relative profile
//! scaled to the budget, PPO); evolution
//! improves on its first generation.

use autoprune::agents::ddpg::{Ddpg, DdpgConfig};
use autoprune::agents::evolution::{Evolution, EvolutionConfig, EvolutionMode};
use autoprune::agents::gnn::{GnnConfig, GraphAgent};
use autoprune::agents::ppo::{Ppo, PpoConfig};
use autoprune::agents::{Learner, SearchAgent};
use autoprune::env::{rollout, PruneEnv, STATE_DIM};
use autoprune::model::zoo;
use autoprune::prune::{ActionWall, Budget, CostModel};
use autoprune::prune::{Granularity, Metric};
use std::path::Path;

/// Three units and no binding budget: any keep ratios are feasible. (Also keeps libtorch to
/// one thread: these networks are tiny, and the tests run side by side.)
fn env() -> PruneEnv {
    env_at(1.0)
}

fn env_at(keep: f64) -> PruneEnv {
    tch::set_num_threads(1);
    let graph = zoo::mlp(&vec![1, 4, 4], 3, &[16, 16]).unwrap();
    let costs = CostModel::new(&graph, Granularity::Unstructured);
    let budget = Budget {
        metric: Metric::Params,
        keep,
        bounds: [0.0001, 1.0],
    };
    PruneEnv::new(ActionWall::new(&costs, budget, Path::new("toy")).unwrap())
}

/// The same units with the budget set to what [`TARGET`] costs: a relative profile (the graph
/// agent's actions) reaches the target once its shape is right.
fn profile_env() -> PruneEnv {
    let free = env();
    let keep = free.wall().cost(&TARGET) / free.wall().cost(&[1.0; 3]);
    env_at(keep)
}

const TARGET: [f64; 3] = [0.3, 0.8, 0.5];

fn reward(keeps: &[f64]) -> f64 {
    -keeps
        .iter()
        .zip(TARGET)
        .map(|(k, t)| (k - t).powi(2))
        .sum::<f64>()
}

/// Runs one episode through the rollout every loop uses; returns the reward.
fn episode(agent: &mut dyn SearchAgent, env: &mut PruneEnv, index: usize, explore: bool) -> f64 {
    let acted = rollout(agent, env, index, explore);
    let r = reward(&acted.policy);
    if explore {
        agent.learn(&acted.episode(index, r)).unwrap();
    }
    r
}

/// Trains for `episodes` exploring episodes; returns their rewards.
fn train(agent: &mut dyn SearchAgent, env: &mut PruneEnv, episodes: usize) -> Vec<f64> {
    (0..episodes)
        .map(|i| episode(agent, env, i, true))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The search keeps the best policy it explores: learning shows as exploring episodes that
/// score better on average than random ones, and a best one near the optimum (0).
fn assert_learned(name: &str, rewards: &[f64], random: usize) {
    let early = mean(&rewards[..random]);
    let late = mean(&rewards[rewards.len() - 50..]);
    let best = rewards[random..]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(late > early + 0.05, "{name}: mean reward {early:.4} over the first {random} episodes, {late:.4} over the last 50");
    assert!(
        best > -0.01,
        "{name}: best reward after the random episodes {best:.4}"
    );
}

#[test]
fn ddpg_learns_a_toy_policy() {
    tch::manual_seed(0);
    let mut env = env();
    let config = DdpgConfig {
        warmup: 30,
        noise: 0.3,
        ..DdpgConfig::default()
    };
    let mut agent = Ddpg::new(config, STATE_DIM, 0).unwrap();
    let rewards = train(&mut agent, &mut env, 300);
    assert_learned("ddpg", &rewards, 30);
}

/// With `warmup_sigma`, DDPG's warm-up explores around the best demonstration (a
/// heuristic's policy), not uniformly: every warm-up policy stays near the better of two
/// demonstrated policies, where AMC's uniform warm-up strays far from it.
#[test]
fn ddpg_warms_up_around_the_best_demonstration() {
    tch::manual_seed(0);
    let demonstrate = |agent: &mut Ddpg, env: &mut PruneEnv, policy: &[f64]| {
        let (transitions, actions) = env.demonstration(policy);
        agent.demonstrate(&autoprune::agents::Demonstration {
            transitions,
            actions,
            reward: reward(policy),
        });
    };
    let best = [0.35, 0.75, 0.5];
    let farthest = |sigma: f64| {
        let mut env = env();
        let config = DdpgConfig {
            warmup: 40,
            warmup_sigma: sigma,
            ..DdpgConfig::default()
        };
        let mut agent = Ddpg::new(config, STATE_DIM, 0).unwrap();
        demonstrate(&mut agent, &mut env, &[0.9, 0.1, 0.9]);
        demonstrate(&mut agent, &mut env, &best);
        (0..40)
            .map(|i| {
                let policy = rollout(&mut agent, &mut env, i, true).policy;
                policy
                    .iter()
                    .zip(best)
                    .map(|(k, b)| (k - b).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    };
    // Noise of 0.02 on normalised actions: six deviations are 0.12 of the keep range.
    let near = farthest(0.02);
    assert!(
        near < 0.15,
        "a warm-up policy strayed {near:.3} from the best demonstration"
    );
    let uniform = farthest(0.0);
    assert!(uniform > 0.3, "uniform warm-up stayed within {uniform:.3}");
}

#[test]
fn ppo_learns_a_toy_policy() {
    tch::manual_seed(0);
    let mut env = env();
    let config = PpoConfig {
        lr: 3e-3,
        episodes_per_update: 8,
        epochs: 8,
        minibatch: 24,
        std: 0.3,
        ..PpoConfig::default()
    };
    let mut agent = Ppo::new(config, STATE_DIM, 0).unwrap();
    let rewards = train(&mut agent, &mut env, 400);
    assert_learned("ppo", &rewards, 16);
    let greedy = episode(&mut agent, &mut env, 400, false);
    assert!(
        greedy > -0.05,
        "greedy policy {:?} far from {TARGET:?}",
        env.policy()
    );
}

#[test]
fn evolution_improves_on_its_first_generation() {
    let mut env = env();
    let wall = env.wall().clone();
    let config = EvolutionConfig {
        population: 10,
        top_k: 3,
        mutation_prob: 0.3,
        crossover: 0.5,
        max_tries: 10,
        ..EvolutionConfig::default()
    };
    let mut agent = Evolution::new(config, wall, 1);
    let rewards: Vec<f64> = (0..100)
        .map(|index| episode(&mut agent, &mut env, index, true))
        .collect();
    let first = rewards[..10]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let last = rewards[90..]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        last > first,
        "best of the first generation {first}, of the last {last}"
    );
}

#[test]
fn one_plus_lambda_moves_preserve_the_budget_and_reach_the_target() {
    let mut env = profile_env();
    let wall = env.wall().clone();
    let budget = wall.budget().keep;
    let config = EvolutionConfig {
        population: 8,
        mode: EvolutionMode::OnePlusLambda,
        shift: 0.1,
        ..EvolutionConfig::default()
    };
    let mut agent = Evolution::new(config, wall.clone(), 3);
    let mut rewards = Vec::new();
    for index in 0..200 {
        let acted = rollout(&mut agent, &mut env, index, true);
        let cost = wall.cost(&acted.policy);
        assert!(cost <= budget + 1e-9, "episode {index}: {cost} > {budget}");
        let r = reward(&acted.policy);
        agent.learn(&acted.episode(index, r)).unwrap();
        rewards.push((r, cost));
    }
    // Offspring of the best move budget between units: they spend what their parent spent,
    // up to the rounding of one weight per unit and the bounds.
    let best_after = |n: usize| {
        rewards[..n]
            .iter()
            .map(|p| p.0)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let late_costs: Vec<f64> = rewards[100..].iter().map(|p| p.1).collect();
    assert!(
        late_costs.iter().all(|&c| c > budget - 0.05),
        "{late_costs:?}"
    );
    assert!(
        best_after(200) > best_after(8),
        "{} vs {}",
        best_after(200),
        best_after(8)
    );
    assert!(best_after(200) > -0.02, "{}", best_after(200));
}

#[test]
fn the_graph_agent_learns_a_toy_policy() {
    let mut env = profile_env();
    let config = GnnConfig {
        hidden: 32,
        layers: 2,
        lr: 3e-3,
        std: 0.2,
        ..GnnConfig::default()
    };
    let budget = env.wall().budget().keep;
    let mut agent = GraphAgent::new(config, env.costs(), budget, 0, tch::Device::Cpu).unwrap();
    let rewards: Vec<f64> = (0..400)
        .map(|index| episode(&mut agent, &mut env, index, true))
        .collect();
    assert_learned("gnn", &rewards, 16);
    let greedy = episode(&mut agent, &mut env, 400, false);
    assert!(
        greedy > -0.05,
        "greedy policy {:?} far from {TARGET:?}",
        env.policy()
    );
}
