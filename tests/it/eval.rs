//! The evaluator: exact at keep 1, budget met, pretrained weights never touched, masks fixed
//! through fine-tuning, rewards, NaN refused, and slimmed export equal to the masked model.

use autoprune::config::RewardKind;
use autoprune::data::{Dataset, SplitName};
use autoprune::eval::{reward, EvalConfig, Evaluator};
use autoprune::model::{train, zoo, GraphNet, Optimizer, Schedule, TrainConfig};
use autoprune::prune::{allocate, slim, Budget, Criterion, Method, Signals};
use autoprune::prune::{Granularity, Metric};
use autoprune::runlog::Progress;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A small VGG with BatchNorm, trained briefly on the synthetic set.
fn pretrained_vgg(data: &Dataset) -> GraphNet {
    tch::manual_seed(0);
    let cfg = [
        zoo::VggItem::Conv(8),
        zoo::VggItem::Conv(12),
        zoo::VggItem::Pool(zoo::PoolMarker::M),
        zoo::VggItem::Conv(16),
    ];
    let mut net = GraphNet::new(
        zoo::vgg(&data.shape, data.classes, &cfg).unwrap(),
        Device::Cpu,
    );
    let config = TrainConfig {
        epochs: 2,
        batch_size: 64,
        optimizer: Optimizer::Adam,
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
        schedule: Schedule::Constant,
    };
    train(&mut net, data, &config, 0, &Progress::quiet()).unwrap();
    net
}

fn config(granularity: Granularity, criterion: Criterion, metric: Metric, keep: f64) -> EvalConfig {
    EvalConfig {
        granularity,
        criterion,
        budget: Budget {
            metric,
            keep,
            bounds: [0.01, 1.0],
        },
        reward: RewardKind::Accuracy,
        eval_split: SplitName::Val,
        finetune_steps: 0,
        finetune_lr: 0.01,
        finetune_adam: false,
        recalibration_batches: 10,
        batch_size: 64,
        eval_batch_size: 256,
        eval_samples: None,
        seed: 0,
        latency: None,
        calibration: 16,
        wanda_rows: true,
        calibration_from_dense: false,
        name: "test".into(),
        weights: "test.safetensors".into(),
        slim_scoring: true,
    }
}

fn snapshot(net: &GraphNet) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = net
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn keep_one_reproduces_the_dense_model_exactly() {
    let data = crate::common::synthetic_data();
    let net = pretrained_vgg(&data);
    let dense = net.evaluate(&data.val, 256).unwrap();
    for granularity in [
        Granularity::Unstructured,
        Granularity::Channel,
        Granularity::NOfM { n: 2, m: 4 },
    ] {
        let mut evaluator = Evaluator::new(
            &net,
            &data,
            config(granularity, Criterion::Magnitude, Metric::Params, 1.0),
        )
        .unwrap();
        let n = evaluator.costs().units().len();
        let score = evaluator.evaluate(&vec![1.0; n]).unwrap();
        assert_eq!(score.accuracy, dense.accuracy, "{granularity:?}");
        assert_eq!(score.loss, dense.loss, "{granularity:?}");
        assert_eq!((score.params_kept, score.flops_kept), (1.0, 1.0));
        assert_eq!(score.params, net.graph().total_params());
    }
}

#[test]
fn every_allocator_meets_its_budget_and_never_touches_the_pretrained_weights() {
    let data = crate::common::synthetic_data();
    let net = pretrained_vgg(&data);
    let before = snapshot(&net);
    for (granularity, metric, keep) in [
        (Granularity::Unstructured, Metric::Params, 0.1),
        (Granularity::Channel, Metric::Flops, 0.5),
        (Granularity::NOfM { n: 2, m: 4 }, Metric::Params, 0.6),
    ] {
        let mut cfg = config(granularity, Criterion::Magnitude, metric, keep);
        cfg.finetune_steps = 5;
        let mut evaluator = Evaluator::new(&net, &data, cfg).unwrap();
        for method in [
            Method::Uniform,
            Method::Global,
            Method::Lamp,
            Method::Erk,
            Method::Random,
        ] {
            let keeps = {
                let wall = evaluator.wall(Path::new("env")).unwrap();
                evaluator.allocate(method, &wall, 3).unwrap()
            };
            let score = evaluator.evaluate(&keeps).unwrap();
            let kept = if metric == Metric::Params {
                score.params_kept
            } else {
                score.flops_kept
            };
            assert!(
                kept <= keep + 1e-9,
                "{method:?} {granularity:?}: kept {kept} > {keep}"
            );
            assert!(
                kept > keep * 0.6,
                "{method:?} {granularity:?} uses its budget: {kept}"
            );
            assert!((0.0..=1.0).contains(&score.accuracy));
            assert_eq!(score.layers.len(), keeps.len());
        }
    }
    for ((name, a), (_, b)) in before.iter().zip(snapshot(&net)) {
        assert!(a.equal(&b), "{name} changed");
    }
}

#[test]
fn masks_stay_fixed_through_fine_tuning_and_fine_tuning_helps() {
    let data = crate::common::synthetic_data();
    let net = pretrained_vgg(&data);
    let mut cfg = config(
        Granularity::Unstructured,
        Criterion::Magnitude,
        Metric::Params,
        0.05,
    );
    let mut plain = Evaluator::new(&net, &data, cfg.clone()).unwrap();
    cfg.finetune_steps = 60;
    let mut tuned = Evaluator::new(&net, &data, cfg).unwrap();
    let n = plain.costs().units().len();
    let keeps = plain.wall(Path::new("env")).unwrap().fit(&vec![1.0; n]);
    let before = plain.evaluate(&keeps).unwrap();
    let after = tuned.evaluate(&keeps).unwrap();
    assert!(
        after.loss < before.loss,
        "fine-tuning lowers the loss: {} -> {}",
        before.loss,
        after.loss
    );
    let pruned = tuned.apply(&keeps).unwrap();
    let vars = pruned.var_store().variables();
    let kept: i64 = ["features.conv0", "features.conv1", "features.conv2", "fc"]
        .iter()
        .map(|n| i64::try_from(vars[&format!("{n}.weight")].ne(0.0).sum(Kind::Int64)).unwrap())
        .sum();
    let expected: usize = after
        .layers
        .iter()
        .zip(tuned.costs().units())
        .map(|(l, u)| (l.keep * u.size as f64).round() as usize)
        .sum();
    assert_eq!(
        kept as usize, expected,
        "exactly the kept weights are non-zero after fine-tuning"
    );
}

#[test]
fn evaluate_batch_equals_one_by_one() {
    let data = crate::common::synthetic_data();
    let net = pretrained_vgg(&data);
    let mut evaluator = Evaluator::new(
        &net,
        &data,
        config(Granularity::Channel, Criterion::L2, Metric::Flops, 0.6),
    )
    .unwrap();
    let n = evaluator.costs().units().len();
    let policies = vec![vec![0.5; n], vec![0.9; n], vec![0.3; n]];
    let batch = evaluator.evaluate_batch(&policies).unwrap();
    for (policy, score) in policies.iter().zip(&batch) {
        let single = evaluator.evaluate(policy).unwrap();
        assert_eq!((single.accuracy, single.loss), (score.accuracy, score.loss));
    }
    assert!(batch[0].accuracy != batch[2].accuracy || batch[0].loss != batch[2].loss);
}

#[test]
fn rewards_follow_their_formulas() {
    assert_eq!(reward(RewardKind::Accuracy, 0.9, 0.3, 100, 1000, None), 0.9);
    assert!(
        (reward(RewardKind::ErrLogFlops, 0.9, 0.3, 100, 1000, None) - (-0.1 * 1000f64.ln())).abs()
            < 1e-12
    );
    assert!(
        (reward(RewardKind::ErrLogParams, 0.75, 0.3, 100, 1000, None) - (-0.25 * 100f64.ln()))
            .abs()
            < 1e-12
    );
    // The latency table's prediction, read in microseconds; without one there is no reward.
    assert!(
        (reward(RewardKind::ErrLogLatency, 0.8, 0.3, 100, 1000, Some(2.5)) - (-0.2 * 2500f64.ln()))
            .abs()
            < 1e-12
    );
    assert!(reward(RewardKind::ErrLogLatency, 0.8, 0.3, 100, 1000, None).is_nan());
    assert!(
        reward(RewardKind::ErrLogLatency, 0.8, 0.3, 100, 1000, Some(1.0))
            > reward(RewardKind::ErrLogLatency, 0.8, 0.3, 100, 1000, Some(2.0))
    );
    // Fewer FLOPs at the same error is a better reward.
    assert!(
        reward(RewardKind::ErrLogFlops, 0.9, 0.3, 100, 500, None)
            > reward(RewardKind::ErrLogFlops, 0.9, 0.3, 100, 1000, None)
    );
    // A language model's reward is 1 / perplexity: exp(-loss), whatever the accuracy.
    let ln4 = 4f64.ln();
    assert!((reward(RewardKind::Perplexity, 0.1, ln4, 100, 1000, None) - 0.25).abs() < 1e-12);
    assert!(
        reward(RewardKind::Perplexity, 0.1, 1.0, 100, 1000, None)
            > reward(RewardKind::Perplexity, 0.9, 1.5, 100, 1000, None)
    );
}

#[test]
fn a_nan_loss_is_an_error_not_a_reward() {
    let data = crate::common::synthetic_data();
    let net = pretrained_vgg(&data);
    tch::no_grad(|| {
        let _ = net.var_store().variables()["fc.bias"]
            .shallow_clone()
            .fill_(f64::NAN);
    });
    let mut evaluator = Evaluator::new(
        &net,
        &data,
        config(
            Granularity::Unstructured,
            Criterion::Magnitude,
            Metric::Params,
            0.5,
        ),
    )
    .unwrap();
    let n = evaluator.costs().units().len();
    let error = evaluator.evaluate(&vec![0.5; n]).unwrap_err().to_string();
    assert!(error.contains("not finite"), "{error}");
    let error = evaluator
        .evaluate(&vec![f64::NAN; n])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("keep ratio") && error.contains("not finite"),
        "{error}"
    );
}

#[test]
fn slimmed_model_computes_what_the_masked_model_computes() {
    let data = crate::common::synthetic_data();
    let graph_net = {
        // A residual net: channels coupled through Add must be sliced together.
        tch::manual_seed(1);
        let mut net = GraphNet::new(
            zoo::resnet(&data.shape, data.classes, 8).unwrap(),
            Device::Cpu,
        );
        let config = TrainConfig {
            epochs: 1,
            batch_size: 64,
            optimizer: Optimizer::Adam,
            lr: 0.01,
            momentum: 0.0,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
        };
        train(&mut net, &data, &config, 0, &Progress::quiet()).unwrap();
        net
    };
    for net in [pretrained_vgg(&data), graph_net] {
        let mut evaluator = Evaluator::new(
            &net,
            &data,
            config(Granularity::Channel, Criterion::L1, Metric::Flops, 0.5),
        )
        .unwrap();
        let n = evaluator.costs().units().len();
        let keeps = allocate(
            Method::Random,
            &evaluator.wall(Path::new("env")).unwrap(),
            evaluator.costs(),
            Signals::default(),
            11,
        );
        assert!(keeps.iter().any(|&k| k < 1.0));
        let score = evaluator.evaluate(&keeps).unwrap();
        // Scoring runs on the slimmed model and gives the masked model's score, on the
        // evaluation split and on test.
        assert!(evaluator.scored_slimmed());
        let test = evaluator.rescore_on(&keeps, SplitName::Test).unwrap();
        let mut masked_scoring = Evaluator::new(
            &net,
            &data,
            EvalConfig {
                slim_scoring: false,
                ..config(Granularity::Channel, Criterion::L1, Metric::Flops, 0.5)
            },
        )
        .unwrap();
        let reference = masked_scoring.evaluate(&keeps).unwrap();
        assert!(!masked_scoring.scored_slimmed());
        let reference_test = masked_scoring.rescore_on(&keeps, SplitName::Test).unwrap();
        for (slim_score, masked_score, samples) in [
            (&score, &reference, data.val.len()),
            (&test, &reference_test, data.test.len()),
        ] {
            assert!(
                (slim_score.loss - masked_score.loss).abs() <= 1e-4,
                "{} against {}",
                slim_score.loss,
                masked_score.loss
            );
            assert!(
                (slim_score.accuracy - masked_score.accuracy).abs() <= 1.0 / samples as f64 + 1e-12
            );
        }
        assert!(score.accuracy != 0.0 && test.split == SplitName::Test);
        let masked = evaluator.apply(&keeps).unwrap().duplicate();
        assert!(!evaluator.scored_slimmed(), "apply leaves the masked model");
        let slimmed = slim(&masked, evaluator.masker(), &keeps).unwrap();
        assert_eq!(
            slimmed.graph().total_params(),
            score.params,
            "the slimmed graph has the counted params"
        );
        assert_eq!(slimmed.graph().total_flops(), score.flops);
        assert!(slimmed.graph().total_params() < net.graph().total_params());
        let input = data.test.images.narrow(0, 0, 64);
        let diff = f64::try_from(
            (masked.forward_t(&input, false) - slimmed.forward_t(&input, false))
                .abs()
                .max(),
        )
        .unwrap();
        assert!(diff <= 1e-4, "max abs difference {diff}");
        assert_eq!(n, keeps.len());
    }
}
