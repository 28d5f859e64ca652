//! How scores are shown: one JSON object, or a few lines of text.

use anyhow::Result;
use autoprune::eval::Score;
use serde_json::json;

/// The score, with the test split's accuracy and loss beside it, as one JSON object.
pub fn report(score: &Score, test: &Score, extra: serde_json::Value) -> Result<serde_json::Value> {
    let mut out = serde_json::to_value(score)?;
    out["test_accuracy"] = json!(test.accuracy);
    out["test_loss"] = json!(test.loss);
    if let Some(perplexity) = test.perplexity {
        out["test_perplexity"] = json!(perplexity);
    }
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    Ok(out)
}

pub fn print_score(title: &str, score: &Score, test: &Score) {
    if let (Some(ppl), Some(test_ppl)) = (score.perplexity, test.perplexity) {
        println!(
            "{title}: {:?} perplexity {ppl:.4}, test perplexity {test_ppl:.4} (per byte), params kept {:.4} ({}), FLOPs kept {:.4} ({} MACs), reward {:.4}",
            score.split,
            score.params_kept,
            score.params,
            score.flops_kept,
            score.flops,
            score.reward
        );
    } else {
        println!(
        "{title}: {:?} accuracy {:.2}%, test accuracy {:.2}%, params kept {:.4} ({}), FLOPs kept {:.4} ({} MACs), reward {:.4}",
        score.split,
        100.0 * score.accuracy,
        100.0 * test.accuracy,
        score.params_kept,
        score.params,
        score.flops_kept,
        score.flops,
        score.reward
    );
    }
    if let Some(l) = &score.latency {
        println!(
            "  latency {:.3} ms measured, {:.3} ms predicted, dense {:.3} ms: speedup {:.2}x",
            l.latency_ms, l.predicted_latency_ms, l.dense_latency_ms, l.speedup
        );
    }
    for layer in &score.layers {
        println!("  {:<32} keep {:.4}", layer.name, layer.keep);
    }
}

/// Best reward per task as a JSON object; tasks never drawn (no finite reward) are left out.
pub fn best_rewards_json(best: &[(String, f64)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = best
        .iter()
        .filter(|(_, reward)| reward.is_finite())
        .map(|(task, reward)| (task.clone(), json!(reward)))
        .collect();
    serde_json::Value::Object(map)
}
