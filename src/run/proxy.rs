//! The proxy study (`autoprune proxy-study`): does the reward a search optimises predict the
//! accuracy after full fine-tuning? Every policy is scored by every proxy (no recovery;
//! BatchNorm recalibration only; k masked fine-tuning steps for several k), then fully
//! fine-tuned ([`super::finetune`]); the study reports each proxy's rank correlations
//! (Spearman's ρ, Kendall's τ-b) with the fine-tuned score and its cost per policy.
//!
//! Both sides are validation scores (the fine-tuned model's test score is recorded beside
//! them, never used). The study folder keeps one line per finished policy and each policy's
//! fine-tuning checkpoint, so a stopped study continues where it was.

use super::finetune::{finetune, FinetuneSpec};
use crate::data::SplitName;
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::runlog::Progress;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// One finished policy per line.
pub const ROWS_FILE: &str = "rows.jsonl";

/// What the study measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// Masked fine-tuning steps of the `ft-k` proxies.
    pub proxy_steps: Vec<usize>,
    /// BatchNorm recalibration batches of every proxy but `none` (the env's).
    pub recalibration_batches: usize,
    /// The full fine-tuning every policy gets.
    pub finetune: FinetuneSpec,
}

/// One proxy's score of one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyScore {
    pub proxy: String,
    pub reward: f64,
    pub accuracy: f64,
    pub loss: f64,
    pub seconds: f64,
}

/// One policy: its proxies and its fully fine-tuned scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    pub label: String,
    pub keeps: Vec<f64>,
    pub proxies: Vec<ProxyScore>,
    pub tuned_reward: f64,
    pub tuned_accuracy: f64,
    pub tuned_loss: f64,
    pub tuned_test_accuracy: f64,
    pub tuned_test_loss: f64,
    pub tuned_seconds: f64,
}

/// How well one proxy ranks the policies as fine-tuning does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correlation {
    pub proxy: String,
    pub spearman: f64,
    pub kendall: f64,
    pub seconds_per_policy: f64,
}

/// The proxies' names, in order: `none`, `recalibrated`, `ft-<k>` for each k.
pub fn proxy_names(spec: &StudySpec) -> Vec<String> {
    let mut names = vec!["none".to_string(), "recalibrated".to_string()];
    names.extend(spec.proxy_steps.iter().map(|k| format!("ft-{k}")));
    names
}

/// Scores every policy (label, keep ratios) with every proxy and fine-tunes it, continuing
/// the study in `dir` (rows already there are kept). Returns every row, in `policies` order.
pub fn run_study(
    evaluator: &mut Evaluator,
    policies: &[(String, Vec<f64>)],
    spec: &StudySpec,
    dir: &Path,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<PolicyRow>> {
    let path = dir.join(ROWS_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut rows: Vec<PolicyRow> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(row) => rows.push(row),
            // A crash tears at most the last line: it goes, and that policy runs again.
            Err(_) if i + 1 == lines.len() => {
                let kept: String = lines[..i].iter().map(|l| format!("{l}\n")).collect();
                crate::fsio::write_atomic(&path, kept.as_bytes())?;
            }
            Err(e) => {
                return Err(Error::data(
                    &path,
                    format!("line {}: cannot read a finished policy: {e}", i + 1),
                ))
            }
        }
    }
    rows.retain(|r| {
        policies
            .iter()
            .any(|(label, keeps)| *label == r.label && *keeps == r.keeps)
    });
    let env_finetune = evaluator.config().finetune_steps;
    for (i, (label, keeps)) in policies.iter().enumerate() {
        if rows.iter().any(|r| r.label == *label) {
            continue;
        }
        progress.println(&format!("policy {}/{} ({label})", i + 1, policies.len()));
        let mut proxies = Vec::new();
        let mut steps = vec![(0, 0)];
        steps.extend(
            std::iter::once(0)
                .chain(spec.proxy_steps.iter().copied())
                .map(|k| (spec.recalibration_batches, k)),
        );
        for (name, (recalibration, k)) in proxy_names(spec).into_iter().zip(steps) {
            evaluator.set_recovery(recalibration, k);
            let started = Instant::now();
            let score = evaluator.evaluate(keeps)?;
            proxies.push(ProxyScore {
                proxy: name,
                reward: score.reward,
                accuracy: score.accuracy,
                loss: score.loss,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        evaluator.set_recovery(spec.recalibration_batches, 0);
        let started = Instant::now();
        let run = dir.join(format!("policy-{i}"));
        std::fs::create_dir_all(&run).map_err(|e| Error::io(&run, e))?;
        finetune(evaluator, keeps, &spec.finetune, None, &run, progress, stop)?;
        let tuned = evaluator.rescore_on(keeps, SplitName::Val)?;
        let test = evaluator.rescore_on(keeps, SplitName::Test)?;
        let row = PolicyRow {
            label: label.clone(),
            keeps: keeps.clone(),
            proxies,
            tuned_reward: tuned.reward,
            tuned_accuracy: tuned.accuracy,
            tuned_loss: tuned.loss,
            tuned_test_accuracy: test.accuracy,
            tuned_test_loss: test.loss,
            tuned_seconds: started.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&row)
            .map_err(|e| Error::data(&path, format!("cannot encode a row: {e}")))?;
        crate::fsio::append_line(&path, &line)?;
        rows.push(row);
    }
    evaluator.set_recovery(spec.recalibration_batches, env_finetune);
    let order = |r: &PolicyRow| policies.iter().position(|(l, _)| *l == r.label);
    rows.sort_by_key(order);
    Ok(rows)
}

/// Each proxy's rank correlations with the fine-tuned reward over `rows`.
pub fn correlations(rows: &[PolicyRow], names: &[String]) -> Vec<Correlation> {
    let tuned: Vec<f64> = rows.iter().map(|r| r.tuned_reward).collect();
    let mut out: Vec<Correlation> = names
        .iter()
        .map(|name| {
            let scores: Vec<&ProxyScore> = rows
                .iter()
                .filter_map(|r| r.proxies.iter().find(|p| p.proxy == *name))
                .collect();
            let x: Vec<f64> = scores.iter().map(|p| p.reward).collect();
            Correlation {
                proxy: name.clone(),
                spearman: spearman(&x, &tuned),
                kendall: kendall_tau_b(&x, &tuned),
                seconds_per_policy: mean(scores.iter().map(|p| p.seconds)),
            }
        })
        .collect();
    out.push(Correlation {
        proxy: "fine-tuned".into(),
        spearman: 1.0,
        kendall: 1.0,
        seconds_per_policy: mean(rows.iter().map(|r| r.tuned_seconds)),
    });
    out
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Ranks from 1, ties given the mean of the ranks they span.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's ρ: Pearson's correlation of the ranks (ties averaged). NaN with fewer than two
/// values or when either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let (mx, my) = (mean(x[..n].iter().copied()), mean(y[..n].iter().copied()));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    sxy / (sxx * syy).sqrt()
}

/// Kendall's τ-b: (concordant − discordant) pairs over the square root of the pairs not tied
/// in x times those not tied in y. NaN with fewer than two values or a constant side.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (mut concordant, mut discordant, mut tied_x, mut tied_y, mut pairs) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            pairs += 1;
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            if dx == 0.0 {
                tied_x += 1;
            }
            if dy == 0.0 {
                tied_y += 1;
            }
            if dx * dy > 0.0 {
                concordant += 1;
            } else if dx * dy < 0.0 {
                discordant += 1;
            }
        }
    }
    let denominator = (((pairs - tied_x) * (pairs - tied_y)) as f64).sqrt();
    if denominator == 0.0 {
        return f64::NAN;
    }
    (concordant - discordant) as f64 / denominator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 30.0, 20.0, 30.0]), [1.0, 3.5, 2.0, 3.5]);
    }

    #[test]
    fn correlations_of_hand_worked_rankings() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        // Same order, any scale: both 1; reversed: both −1.
        assert!((spearman(&x, &[2.0, 4.0, 8.0, 16.0, 32.0]) - 1.0).abs() < 1e-12);
        assert!((kendall_tau_b(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // One adjacent swap among 5: d² = 2, ρ = 1 − 6·2/(5·24) = 0.9; τ = (9 − 1)/10 = 0.8.
        let swapped = [1.0, 2.0, 4.0, 3.0, 5.0];
        assert!((spearman(&x, &swapped) - 0.9).abs() < 1e-12);
        assert!((kendall_tau_b(&x, &swapped) - 0.8).abs() < 1e-12);
        // Ties in y: y = [1, 1, 2, 3]; pairs 6, tied in y 1; concordant 5, discordant 0:
        // τ-b = 5 / √(6 · 5).
        let tau = kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 3.0]);
        assert!((tau - 5.0 / 30f64.sqrt()).abs() < 1e-12);
        // Ranks of y: 1.5, 1.5, 3, 4 against 1..4: Pearson of those.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 3.0]);
        assert!((rho - 4.5 / (5.0f64 * 4.5).sqrt()).abs() < 1e-12);
        assert!(spearman(&x, &[1.0; 5]).is_nan());
        assert!(kendall_tau_b(&[1.0], &[1.0]).is_nan());
    }
}
