//! `autoprune search` end to end on the synthetic env: TensorBoard events read back by
//! TensorBoard's own reader equal the JSONL log; a run killed mid-way resumes to the same
//! result as an uninterrupted one; Ctrl-C stops cleanly; every agent runs.

use crate::common::{
    bin, read_events, records, records_len, resume_to, run, search_command, search_in, setup,
    strip_times,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn tensorboard_events_equal_the_jsonl_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "ddpg", 25);
    let logdir = dir.path().join("run");
    let out = search_in(&config, &logdir, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["episodes"], 25);
    assert!(result["test_accuracy"].as_f64().unwrap() > 0.0);
    assert!(result["params_kept"].as_f64().unwrap() <= 0.2 + 1e-9);

    let events = read_events(&logdir);
    let records = records(&logdir);
    assert_eq!(records.len(), 25);
    // Timing: the evaluator's share is part of each episode's time, and the totals agree.
    let mut eval_total = 0.0;
    for r in &records {
        let (seconds, eval) = (
            r["seconds"].as_f64().unwrap(),
            r["eval_seconds"].as_f64().unwrap(),
        );
        assert!(eval > 0.0 && eval <= seconds, "{r}");
        eval_total += eval;
    }
    let per_episode = result["seconds_per_episode"].as_f64().unwrap();
    let outside = result["outside_evaluator_share"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&outside), "{result}");
    let implied_eval = per_episode * 25.0 * (1.0 - outside);
    assert!(
        (implied_eval - eval_total).abs() <= 1e-6 * eval_total.max(1.0),
        "{result}"
    );
    let scalars = events["scalars"].as_object().unwrap();
    let mut expected_tags: Vec<&String> =
        records[0]["scalars"].as_object().unwrap().keys().collect();
    expected_tags.sort();
    let mut tags: Vec<&String> = scalars.keys().collect();
    tags.sort();
    assert_eq!(tags, expected_tags);
    for tag in [
        "reward",
        "accuracy",
        "params_kept",
        "flops_kept",
        "best/reward",
        "keep/fc1",
        "keep/classifier",
    ] {
        assert!(scalars.contains_key(tag), "missing {tag}");
    }
    let mut compared = 0;
    for (tag, points) in scalars {
        let points = points.as_array().unwrap();
        assert_eq!(points.len(), records.len(), "{tag}: one point per episode");
        for point in points {
            let step = point[0].as_u64().unwrap() as usize;
            let value = point[1].as_f64().unwrap();
            let logged = records[step]["scalars"][tag].as_f64().unwrap();
            assert_eq!(value as f32, logged as f32, "{tag} at step {step}");
            compared += 1;
        }
    }
    assert_eq!(compared, 25 * expected_tags.len());
    assert_eq!(events["histograms"]["keeps"].as_array().unwrap().len(), 25);
    let best = events["texts"]["best_policy"].as_array().unwrap();
    assert!(!best.is_empty() && best[0][1].as_str().unwrap().contains("| fc1 |"));
    assert!(events["texts"]["config"][0][1]
        .as_str()
        .unwrap()
        .contains("agent = \"ddpg\""));
    // The policy file is the best episode on validation.
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(logdir.join("policy.json")).unwrap())
            .unwrap();
    let best_reward = records
        .iter()
        .map(|r| r["reward"].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(policy["metrics"]["reward"].as_f64().unwrap(), best_reward);
    assert_eq!(policy["agent"], "ddpg");
}

#[test]
fn a_killed_search_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let whole = setup(dir.path(), "ddpg", 120);
    // The same search scoring a quarter of the validation split, the promising episodes
    // rescored whole.
    let subset = dir.path().join("subset.toml");
    let mut table: toml::Table = std::fs::read_to_string(&whole).unwrap().parse().unwrap();
    table.insert("eval_samples".into(), toml::Value::Integer(100));
    std::fs::write(&subset, table.to_string()).unwrap();
    for (name, config) in [("whole", whole), ("subset", subset)] {
        killed_searches_resume_to_the_uninterrupted_result(&dir.path().join(name), &config);
    }
}

fn killed_searches_resume_to_the_uninterrupted_result(dir: &Path, config: &Path) {
    let full = dir.join("full");
    let out = run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        full.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let uninterrupted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Killed right after an episode's log line (before its events and best.json), and
    // right after best.json (before the events are flushed).
    for (attempt, (stage, kill_after)) in
        [("logged", 7usize), ("saved", 40)].into_iter().enumerate()
    {
        let logdir = dir.join(format!("killed{attempt}"));
        let status = search_command(config, &logdir)
            .env("AUTOPRUNE_FAILPOINT", format!("{stage}:{}", kill_after - 1))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the failpoint killed the search");
        let done = records(&logdir).len();
        assert_eq!(done, kill_after, "killed after {done} episodes");

        let out = run(&["search", "--resume", logdir.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(resumed["episodes"], 120);
        assert_eq!(
            resumed["layers"], uninterrupted["layers"],
            "same best policy"
        );
        assert_eq!(resumed["test_accuracy"], uninterrupted["test_accuracy"]);
        assert_eq!(resumed["best_from"], uninterrupted["best_from"]);
        assert_eq!(
            strip_times(records(&logdir)),
            strip_times(records(&full)),
            "same episodes, in order, none twice"
        );
    }
}

#[test]
fn ctrl_c_stops_after_the_episode_in_flight_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "evolution", 3000);
    let logdir = dir.path().join("run");
    let child = search_command(&config, &logdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records_len(&logdir) < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--resume"), "{stderr}");
    let done = records_len(&logdir);
    assert!((5..3000).contains(&done));
    // The event file is complete up to the last finished episode.
    let events = read_events(&logdir);
    assert_eq!(events["scalars"]["reward"].as_array().unwrap().len(), done);
    let out = resume_to(&logdir, done + 3, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records_len(&logdir), done + 3);
}

#[test]
fn every_agent_finds_a_feasible_policy() {
    let dir = tempfile::tempdir().unwrap();
    for agent in ["ppo", "evolution", "random", "ddpg", "gnn"] {
        let config = setup(dir.path(), agent, 20);
        let logdir = dir.path().join(agent);
        let out = run(&[
            "search",
            "--config",
            config.to_str().unwrap(),
            "--logdir",
            logdir.to_str().unwrap(),
            "--out",
            dir.path().join(format!("{agent}.json")).to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{agent}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            result["params_kept"].as_f64().unwrap() <= 0.2 + 1e-9,
            "{agent}: {result}"
        );
        assert_eq!(result["agent"], agent);
        assert_eq!(records_len(&logdir), 20);
        // The written policy applies to the env and scores what the search said.
        let applied = run(&[
            "apply",
            "--env",
            dir.path().join("env.toml").to_str().unwrap(),
            "--policy",
            dir.path().join(format!("{agent}.json")).to_str().unwrap(),
            "--json",
        ]);
        let applied: serde_json::Value = serde_json::from_slice(&applied.stdout).unwrap();
        assert_eq!(applied["accuracy"], result["accuracy"], "{agent}");
    }
}

#[test]
fn a_used_run_folder_is_refused_and_bad_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "random", 3);
    let logdir = dir.path().join("run");
    assert!(run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap()
    ])
    .status
    .success());
    let out = run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"));
    let text = crate::common::edited(&config, &[("ddpg.warm_up", "3")]);
    std::fs::write(&config, text).unwrap();
    let out = run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        dir.path().join("other").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("key `ddpg.warm_up`")
            && stderr.contains("unknown field"),
        "{stderr}"
    );
}

#[test]
fn report_draws_reward_curves_and_keep_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "ddpg", 12);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    assert!(run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        a.to_str().unwrap()
    ])
    .status
    .success());
    assert!(run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        b.to_str().unwrap(),
        "--agent",
        "random"
    ])
    .status
    .success());
    let png = dir.path().join("report.png");
    let out = run(&[
        "report",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 560));
    assert!(
        bytes.len() > 20_000,
        "a drawn chart, not a blank image: {} bytes",
        bytes.len()
    );
}

#[test]
fn resume_drops_a_torn_last_line_and_refuses_a_damaged_log_or_other_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "random", 5);
    let logdir = dir.path().join("run");
    assert!(run(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap()
    ])
    .status
    .success());
    let log = logdir.join("episodes.jsonl");
    let complete = std::fs::read_to_string(&log).unwrap();
    // A crash mid-write leaves a line without its newline: dropped, then the run goes on.
    std::fs::write(&log, format!("{complete}{{\"episode\": 5, \"rew")).unwrap();
    let out = resume_to(&logdir, 7, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records_len(&logdir), 7);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .starts_with(&complete));

    // A damaged line in the middle is an error, and the log is left as it was.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "not json";
    let damaged = lines.join("\n") + "\n";
    std::fs::write(&log, &damaged).unwrap();
    let out = resume_to(&logdir, 9, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("line 3") && stderr.contains("damaged"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), damaged);

    // Other pretrained weights: refused, the run's scores would not mix.
    std::fs::write(&log, &text).unwrap();
    let env = dir.path().join("env.toml");
    assert!(bin()
        .args(["pretrain", "--env", env.to_str().unwrap(), "--seed", "9"])
        .output()
        .unwrap()
        .status
        .success());
    let out = resume_to(&logdir, 9, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("model.checkpoint")
            && stderr.contains("not the ones"),
        "{stderr}"
    );
}
