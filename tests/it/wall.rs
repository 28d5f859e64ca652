//! The ActionWall, property-tested over random graphs and random raw actions: whatever an
//! agent proposes, the policy meets the budget and the keep bounds, within the rounding of
//! one channel, one weight or one N:M step.

use autoprune::env::PruneEnv;
use autoprune::graph::ModelGraph;
use autoprune::model::zoo::{self, PoolMarker, VggItem};
use autoprune::prune::{ActionWall, Budget, CostModel};
use autoprune::prune::{Granularity, Metric};
use proptest::prelude::*;
use std::path::Path;

fn graph_strategy() -> impl Strategy<Value = ModelGraph> {
    let mlp = proptest::collection::vec(1usize..48, 1..4)
        .prop_map(|hidden| zoo::mlp(&vec![1, 4, 4], 3, &hidden).unwrap());
    let vgg = proptest::collection::vec(prop_oneof![4 => (1usize..24).prop_map(VggItem::Conv), 1 => Just(VggItem::Pool(PoolMarker::M))], 1..6)
        .prop_filter("at least one conv", |cfg| cfg.iter().any(|i| matches!(i, VggItem::Conv(_))))
        // A 12x12 input halves to 6, 3 and 1: a fourth pool has nothing left to pool.
        .prop_filter("at most three pools", |cfg| cfg.iter().filter(|i| matches!(i, VggItem::Pool(_))).count() <= 3)
        .prop_map(|cfg| zoo::vgg(&vec![2, 12, 12], 5, &cfg).unwrap());
    let resnet = prop_oneof![Just(8usize), Just(14)]
        .prop_map(|d| zoo::resnet(&vec![1, 8, 8], 4, d).unwrap());
    let mobilenet = prop_oneof![Just(0.25f64), Just(0.5)]
        .prop_map(|w| zoo::mobilenetv2(&vec![3, 16, 16], 4, w).unwrap());
    prop_oneof![3 => mlp, 3 => vgg, 1 => resnet, 1 => mobilenet]
}

fn granularity_strategy() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::Unstructured),
        Just(Granularity::Channel),
        Just(Granularity::NOfM { n: 2, m: 4 }),
        Just(Granularity::NOfM { n: 1, m: 8 }),
    ]
}

fn raw_action() -> impl Strategy<Value = f64> {
    prop_oneof![10 => -0.5f64..1.5, 1 => Just(f64::NAN), 1 => Just(0.0), 1 => Just(1.0)]
}

/// How far below or above a bound rounding may put a unit's effective keep ratio.
fn slack(costs: &CostModel, unit: usize) -> f64 {
    match costs.granularity() {
        Granularity::NOfM { m, .. } => 1.0 / m as f64,
        _ => 1.0 / costs.units()[unit].size as f64,
    }
}

fn check(
    costs: &CostModel,
    wall: &ActionWall,
    budget: Budget,
    keeps: &[f64],
) -> Result<(), TestCaseError> {
    let kept = wall.cost(keeps);
    prop_assert!(
        kept <= budget.keep + 1e-9,
        "keeps {kept} of {:?}, target {}",
        budget.metric,
        budget.keep
    );
    let effective = costs.effective_keeps(keeps);
    prop_assert_eq!(
        &effective,
        &keeps.to_vec(),
        "the wall returns effective keep ratios"
    );
    for (u, &k) in effective.iter().enumerate() {
        let s = slack(costs, u);
        prop_assert!(
            k >= budget.bounds[0] - s - 1e-12,
            "unit {u}: {k} below {}",
            budget.bounds[0]
        );
        prop_assert!(
            k <= budget.bounds[1] + s + 1e-12,
            "unit {u}: {k} above {}",
            budget.bounds[1]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_raw_action_becomes_a_feasible_policy(
        graph in graph_strategy(),
        granularity in granularity_strategy(),
        flops in any::<bool>(),
        keep in 0.02f64..1.0,
        lo in 0.01f64..0.4,
        span in 0.0f64..1.0,
        raw in proptest::collection::vec(raw_action(), 200),
    ) {
        let costs = CostModel::new(&graph, granularity);
        prop_assume!(!costs.units().is_empty());
        let hi = lo + (1.0 - lo) * span;
        let budget = Budget { metric: if flops { Metric::Flops } else { Metric::Params }, keep, bounds: [lo, hi] };
        match ActionWall::new(&costs, budget, Path::new("env.toml")) {
            Err(error) => {
                // Refused only when even the lower bound everywhere is over budget.
                let floor = costs.counts(&vec![lo; costs.units().len()]).kept(budget.metric);
                prop_assert!(floor > keep, "refused a feasible budget: {error}");
                prop_assert!(error.to_string().contains("keep_bounds"));
            }
            Ok(wall) => {
                let n = costs.units().len();
                let raw: Vec<f64> = raw.iter().cycle().take(n).copied().collect();
                check(&costs, &wall, budget, &wall.apply(&raw))?;
                let base: Vec<f64> = raw.iter().map(|r| if r.is_finite() { r.abs() + 0.01 } else { 0.5 }).collect();
                check(&costs, &wall, budget, &wall.fit(&base))?;
                // Filled: feasible, never below the plain fit, and no unit can take one more
                // rounding step within its bound and the budget.
                let filled = wall.fit_filled(&base);
                check(&costs, &wall, budget, &filled)?;
                for (u, (f, p)) in filled.iter().zip(wall.fit(&base)).enumerate() {
                    prop_assert!(*f >= p - 1e-12, "unit {u}: filled {f} below fit {p}");
                    if let Some(next) = costs.next_keep(u, *f).filter(|&k| k <= hi + 1e-12) {
                        let mut more = filled.clone();
                        more[u] = next;
                        prop_assert!(wall.cost(&more) > keep + 1e-12, "unit {u} could still take {next}");
                    }
                }
                // A profile step (the graph agent's) is feasible for any actions, and equal
                // actions are uniform allocation.
                let mut env = PruneEnv::new(wall.clone());
                check(&costs, &wall, budget, &env.step_profile(&raw))?;
                let equal = env.step_profile(&vec![0.3; n]);
                prop_assert_eq!(&equal, &wall.fit(&vec![(-0.8f64).exp(); n]));
                // The same as fit(ones), up to where the bisection stops: one rounding step.
                for (u, (a, b)) in equal.iter().zip(wall.fit(&vec![1.0; n])).enumerate() {
                    prop_assert!((a - b).abs() <= 2.0 * slack(&costs, u) + 1e-6, "unit {u}: {a} against uniform {b}");
                }
            }
        }
    }
}

#[test]
fn feasible_actions_pass_unchanged_and_the_budget_squeezes_later_layers_first() {
    let graph = zoo::mlp(&vec![1, 4, 4], 3, &[32, 32]).unwrap();
    let costs = CostModel::new(&graph, Granularity::Unstructured);
    let budget = Budget {
        metric: Metric::Params,
        keep: 0.5,
        bounds: [0.1, 1.0],
    };
    let wall = ActionWall::new(&costs, budget, Path::new("env.toml")).unwrap();
    // fc1 16x32=512, fc2 32x32=1024, classifier 32x3=96 weights.
    assert_eq!(wall.apply(&[0.25, 0.25, 0.5]), vec![0.25, 0.25, 0.5]);
    // Asking for everything: fc1 gets it all (512), fc2 what still leaves the classifier its
    // minimum (816 - 512 - 10 = 294 of 1024), the classifier its lower bound.
    let keeps = wall.apply(&[1.0, 1.0, 1.0]);
    assert_eq!(keeps[0], 1.0);
    assert!(
        (keeps[1] - 294.0 / 1024.0).abs() < 1.5 / 1024.0,
        "{keeps:?}"
    );
    assert!((keeps[2] - 0.1).abs() < 1.0 / 96.0, "{keeps:?}");
}

#[test]
fn infeasible_bounds_are_refused_with_the_key_and_the_fix() {
    let graph = zoo::mlp(&vec![1, 4, 4], 3, &[32]).unwrap();
    let costs = CostModel::new(&graph, Granularity::Unstructured);
    let budget = Budget {
        metric: Metric::Params,
        keep: 0.1,
        bounds: [0.3, 1.0],
    };
    let error = ActionWall::new(&costs, budget, Path::new("envs/x.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("envs/x.toml")
            && error.contains("keep_bounds")
            && error.contains("lower keep_bounds[0]"),
        "{error}"
    );
}
