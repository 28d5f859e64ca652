//! Reliability of the run folder and of bad input: SIGKILL at random points never leaves a
//! file that does not parse, and resume ends with the uninterrupted run's result; the same
//! seed writes byte-identical policy files; a full disk stops a search with one line and
//! keeps what was written; every kind of bad input gets one clear line and a non-zero exit
//! (the table in docs/errors.md is rendered here); a 2,000-episode search has flat memory.

use crate::common::{
    bin, copy_folder, one_error_line, read_events, records, repo, resume_to, run, search_command,
    search_in, setup, strip_times, success_json,
};
use crate::hostile::hostile_inputs;
use autoprune::config::EnvSpec;
use autoprune::config::SearchConfig;
use autoprune::policy::PolicyFile;
use autoprune::run::{read_records, BEST_FILE, CONFIG_FILE, ENV_FILE};
use std::path::Path;
use std::process::{Output, Stdio};

/// Every file of a run folder parses: config, env, the episode log (a torn last line is
/// allowed: resume drops it), the best policy, the weights fingerprint. Returns the number
/// of finished episodes.
fn check_folder(dir: &Path) -> usize {
    SearchConfig::load(&dir.join(CONFIG_FILE)).unwrap();
    EnvSpec::load(&dir.join(ENV_FILE)).unwrap();
    let (records, _) = read_records(&dir.join("episodes.jsonl")).unwrap();
    if dir.join(BEST_FILE).exists() {
        let best = PolicyFile::load(&dir.join(BEST_FILE)).unwrap();
        let best_reward = records
            .iter()
            .take(best.episodes)
            .map(|r| r.reward)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(
            best.metrics.reward, best_reward,
            "best.json is the best so far"
        );
    }
    if let Ok(weights) = std::fs::read_to_string(dir.join("weights.txt")) {
        let weights = weights.trim();
        let hex = weights.strip_prefix("fnv1a64:").unwrap_or("");
        assert!(
            hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{weights:?}"
        );
    }
    records.len()
}

/// A small deterministic generator for kill points (so a failure can be rerun).
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[test]
fn random_sigkills_never_damage_the_run_folder_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let episodes = 300;
    let config = setup(dir.path(), "ddpg", episodes);
    let full = dir.path().join("full");
    let uninterrupted = success_json(&search_in(&config, &full, &["--json"]));

    for seed in 1..=3u64 {
        let mut state = seed;
        let logdir = dir.path().join(format!("killed{seed}"));
        let mut kills = 0;
        for attempt in 0..4 {
            let args: Vec<String> = if attempt == 0 {
                vec![
                    "search".into(),
                    "--config".into(),
                    config.to_str().unwrap().into(),
                    "--logdir".into(),
                    logdir.to_str().unwrap().into(),
                ]
            } else {
                vec![
                    "search".into(),
                    "--resume".into(),
                    logdir.to_str().unwrap().into(),
                ]
            };
            // Kill it (SIGKILL from inside, as a crash) at a drawn episode past the ones
            // already done, between its log line and its events or between best.json and
            // the events' flush.
            let before = if logdir.join("episodes.jsonl").exists() {
                read_records(&logdir.join("episodes.jsonl"))
                    .unwrap()
                    .0
                    .len()
            } else {
                0
            };
            let stage = if next(&mut state).is_multiple_of(2) {
                "logged"
            } else {
                "saved"
            };
            let at = before + (next(&mut state) % 60) as usize;
            let status = bin()
                .args(&args)
                .env("AUTOPRUNE_FAILPOINT", format!("{stage}:{at}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if !status.success() {
                kills += 1;
            }
            let done = check_folder(&logdir);
            assert!(done >= before, "seed {seed}: {done} < {before}");
        }
        let out = run(&["search", "--resume", logdir.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "seed {seed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            kills, 4,
            "seed {seed}: every drawn failpoint lies inside the run"
        );
        let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(resumed["episodes"], episodes);
        assert_eq!(resumed["layers"], uninterrupted["layers"], "seed {seed}");
        assert_eq!(resumed["test_accuracy"], uninterrupted["test_accuracy"]);
        assert_eq!(strip_times(records(&logdir)), strip_times(records(&full)));
        assert_eq!(check_folder(&logdir), episodes);
        PolicyFile::load(&logdir.join("policy.json")).unwrap();
        let leftovers: Vec<String> = std::fs::read_dir(&logdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // TensorBoard still reads every event file of the folder, torn last records included.
        let events = read_events(&logdir);
        let logged = records(&logdir);
        let rewards = events["scalars"]["reward"].as_array().unwrap();
        // An episode killed between its log line and its events has no events: at most one
        // per kill is missing, and every event present equals the log.
        assert!(
            rewards.len() + kills >= episodes,
            "{} events",
            rewards.len()
        );
        for point in rewards {
            let step = point[0].as_u64().unwrap() as usize;
            let value = point[1].as_f64().unwrap() as f32;
            assert_eq!(value, logged[step]["reward"].as_f64().unwrap() as f32);
        }
    }
}

#[test]
fn the_same_seed_writes_byte_identical_policy_files() {
    let dir = tempfile::tempdir().unwrap();
    for agent in ["ddpg", "ppo", "evolution", "random", "gnn"] {
        let config = setup(dir.path(), agent, 40);
        let mut files = Vec::new();
        for attempt in 0..2 {
            let logdir = dir.path().join(format!("{agent}{attempt}"));
            let out = search_command(&config, &logdir)
                .env("SOURCE_DATE_EPOCH", "1800000000")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            files.push((
                std::fs::read(logdir.join("policy.json")).unwrap(),
                std::fs::read(logdir.join(BEST_FILE)).unwrap(),
                strip_times(records(&logdir)),
            ));
        }
        assert!(files[0].0 == files[1].0, "{agent}: policy.json differs");
        assert!(files[0].1 == files[1].1, "{agent}: best.json differs");
        assert_eq!(files[0].2, files[1].2, "{agent}: episode logs differ");
        let text = String::from_utf8(files[0].0.clone()).unwrap();
        assert!(
            text.contains("\"created\": \"2027-01-15T08:00:00Z\""),
            "{text}"
        );
    }
}

#[test]
fn memory_stays_flat_over_a_2000_episode_search() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "ddpg", 2000);
    let logdir = dir.path().join("long");
    let out = search_in(&config, &logdir, &["--threads", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = records(&logdir);
    assert_eq!(logged.len(), 2000);
    let mib = |i: usize, field: &str| logged[i][field].as_u64().unwrap() as f64 / 1048576.0;
    let (rss100, rss2000) = (mib(99, "rss_bytes"), mib(1999, "rss_bytes"));
    let (peak100, peak2000) = (mib(99, "peak_rss_bytes"), mib(1999, "peak_rss_bytes"));
    eprintln!(
        "resident MiB at episode 100: {rss100:.1} (peak {peak100:.1}); at 2000: {rss2000:.1} (peak {peak2000:.1})"
    );
    assert!(rss100 > 0.0);
    assert!(
        peak2000 - peak100 < 16.0,
        "peak grew {peak100:.1} -> {peak2000:.1} MiB"
    );
    assert!(
        rss2000 - rss100 < 16.0,
        "resident grew {rss100:.1} -> {rss2000:.1} MiB"
    );
}

/// Runs `args` with a file-size limit (bash `ulimit -f`, SIGXFSZ ignored so writes fail with
/// EFBIG instead of killing the process): the full-disk fallback where tmpfs cannot be mounted.
fn run_with_file_limit(kib: u64, args: &[&str]) -> Output {
    std::process::Command::new("bash")
        .current_dir(repo())
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_autoprune"))
        .args(args)
        .output()
        .unwrap()
}

/// A full disk during a search: a small tmpfs where the machine allows mounting one (root),
/// otherwise a file-size limit. Returns the one error line and whether tmpfs was used.
fn full_disk_case(dir: &Path, config: &Path) -> (String, bool) {
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs"])
        .arg(&disk)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let logdir = disk.join("run");
    let args = [
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap(),
        "--episodes",
        "5000",
    ];
    let out = if mounted {
        run(&args)
    } else {
        run_with_file_limit(96, &args)
    };
    let line = one_error_line(&out);
    // Nothing written before the failure is lost: every file parses, and the run resumes
    // elsewhere once there is room.
    let done = check_folder(&logdir);
    assert!(
        done > 0 && done < 5000,
        "{done} episodes before the disk filled"
    );
    let moved = dir.join("moved");
    copy_folder(&logdir, &moved);
    if mounted {
        let _ = std::process::Command::new("umount").arg(&disk).status();
    }
    let out = resume_to(&moved, done + 5, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records(&moved).len(), done + 5);
    (line, mounted)
}

/// One bad-input case: what it is, the command (with paths relative to the case folder), the
/// substrings its error line must hold.
struct Case {
    name: &'static str,
    args: Vec<String>,
    expect: Vec<&'static str>,
}

#[test]
fn bad_input_gets_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = setup(d, "ddpg", 30);
    let env_path = d.join("env.toml");
    let env = std::fs::read_to_string(&env_path).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();

    write("malformed.toml", &env.replace("[prune]", "[prune"));
    write(
        "truncated.toml",
        &env[..env.find("keep_bounds").unwrap() + 16],
    );
    write(
        "unknown-key.toml",
        &env.replace("criterion =", "critrion ="),
    );
    write(
        "keep-above-one.toml",
        &env.replace("keep = 0.2", "keep = 1.5"),
    );
    write(
        "negative-budget.toml",
        &env.replace("keep = 0.2", "keep = -0.1"),
    );
    write(
        "infeasible.toml",
        &env.replace("keep_bounds = [0.05, 1.0]", "keep_bounds = [0.5, 1.0]"),
    );
    // Data: an IDX env whose folder lacks files, and one with a corrupt file.
    let idx_env = std::fs::read_to_string(repo().join("envs/mnist-lenet5.toml")).unwrap();
    std::fs::create_dir_all(d.join("nodata")).unwrap();
    write(
        "missing-data.toml",
        &idx_env.replace("data/mnist", &p("nodata")).replace(
            "checkpoints/mnist-lenet5.safetensors",
            &p("never.safetensors"),
        ),
    );
    std::fs::create_dir_all(d.join("corrupt")).unwrap();
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(
            repo().join("data/mnist").join(name),
            d.join("corrupt").join(name),
        )
        .unwrap();
    }
    let labels = d.join("corrupt/train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    write(
        "corrupt-data.toml",
        &idx_env.replace("data/mnist", &p("corrupt")).replace(
            "checkpoints/mnist-lenet5.safetensors",
            &p("never.safetensors"),
        ),
    );
    // A truncated checkpoint.
    let ckpt = std::fs::read(d.join("mlp.safetensors")).unwrap();
    std::fs::write(d.join("truncated.safetensors"), &ckpt[..ckpt.len() / 2]).unwrap();
    write(
        "truncated-checkpoint.toml",
        &env.replace(&p("mlp.safetensors"), &p("truncated.safetensors")),
    );
    // Policies: one for another model, one with NaN.
    let out = run(&[
        "baseline",
        "--env",
        &p("env.toml"),
        "--method",
        "lamp",
        "--out",
        &p("lamp.json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = std::fs::read_to_string(d.join("lamp.json")).unwrap();
    let mut other: serde_json::Value = serde_json::from_str(&policy).unwrap();
    other["model"] = serde_json::json!("0123456789abcdef");
    write(
        "other-model.json",
        &serde_json::to_string_pretty(&other).unwrap(),
    );
    let keep = other["layers"][0]["keep"].to_string();
    write(
        "nan.json",
        &policy.replacen(&format!("\"keep\": {keep}"), "\"keep\": NaN", 1),
    );
    write("a-file", "not a folder");
    write(
        "zero-episodes.toml",
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("episodes = 30", "episodes = 0"),
    );
    let config_text = std::fs::read_to_string(&config).unwrap();
    let diffsparse = config_text.replace("agent = \"ddpg\"", "agent = \"diffsparse\"");
    write(
        "diffsparse-cold.toml",
        &format!("{diffsparse}\n[diffsparse]\ntemperature = 0.0\n"),
    );
    write(
        "nm-env.toml",
        &env.replace("granularity = \"unstructured\"", "granularity = \"2:4\"")
            .replace("keep = 0.2", "keep = 0.5"),
    );
    write(
        "diffsparse-nm.toml",
        &diffsparse.replace(&p("env.toml"), &p("nm-env.toml")),
    );
    write(
        "wanda-env.toml",
        &env.replace("criterion = \"magnitude\"", "criterion = \"wanda\""),
    );
    write(
        "latency-reward.toml",
        &env.replace("kind = \"accuracy\"", "kind = \"err-log-latency\""),
    );
    let residual = env.replace("[prune]", "[prune]\nresidual_width = true");
    write("residual-unstructured.toml", &residual);
    write(
        "residual-mlp.toml",
        &residual.replace(
            "granularity = \"unstructured\"",
            "granularity = \"channel\"",
        ),
    );
    std::fs::create_dir_all(d.join("not-a-run")).unwrap();
    hostile_inputs(d, &env, &config);
    // A folder another process holds (`flock`, as a search holds it), its pid in the lock.
    let mut holder = std::process::Command::new("flock")
        .arg(d.join("held/lock"))
        .args(["-c", "echo locked; exec sleep 600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut locked = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut locked,
    )
    .unwrap();
    std::fs::write(d.join("held/lock"), format!("{}\n", holder.id())).unwrap();

    let evaluate = |env: &str| s(&["evaluate", "--env", &p(env)]);
    let cases = vec![
        Case {
            name: "malformed TOML",
            args: evaluate("malformed.toml"),
            expect: vec!["malformed.toml:"],
        },
        Case {
            name: "truncated TOML",
            args: evaluate("truncated.toml"),
            expect: vec!["truncated.toml:"],
        },
        Case {
            name: "unknown key",
            args: evaluate("unknown-key.toml"),
            expect: vec!["unknown-key.toml:", "critrion"],
        },
        Case {
            name: "keep above 1",
            args: evaluate("keep-above-one.toml"),
            expect: vec!["keep-above-one.toml", "keep", "1.5"],
        },
        Case {
            name: "negative budget",
            args: evaluate("negative-budget.toml"),
            expect: vec!["negative-budget.toml", "keep", "-0.1"],
        },
        Case {
            name: "bounds that make the budget infeasible",
            args: s(&[
                "baseline",
                "--env",
                &p("infeasible.toml"),
                "--method",
                "uniform",
            ]),
            expect: vec!["infeasible.toml", "keep_bounds", "at most"],
        },
        Case {
            name: "missing data files",
            args: s(&["pretrain", "--env", &p("missing-data.toml")]),
            expect: vec!["nodata", "make setup"],
        },
        Case {
            name: "corrupt data file",
            args: s(&["pretrain", "--env", &p("corrupt-data.toml")]),
            expect: vec!["train-labels-idx1-ubyte.gz"],
        },
        Case {
            name: "truncated checkpoint",
            args: evaluate("truncated-checkpoint.toml"),
            expect: vec!["truncated.safetensors"],
        },
        Case {
            name: "policy file for another model",
            args: s(&[
                "apply",
                "--env",
                &p("env.toml"),
                "--policy",
                &p("other-model.json"),
            ]),
            expect: vec!["other-model.json", "made for model"],
        },
        Case {
            name: "policy file with NaN",
            args: s(&["apply", "--env", &p("env.toml"), "--policy", &p("nan.json")]),
            expect: vec!["nan.json"],
        },
        Case {
            name: "unwritable log folder",
            args: s(&[
                "search",
                "--config",
                config.to_str().unwrap(),
                "--logdir",
                &p("a-file/run"),
            ]),
            expect: vec!["a-file/run"],
        },
        Case {
            name: "unwritable policy output",
            args: s(&[
                "baseline",
                "--env",
                &p("env.toml"),
                "--method",
                "lamp",
                "--out",
                &p("a-file/lamp.json"),
            ]),
            expect: vec!["a-file"],
        },
        Case {
            name: "zero episodes",
            args: s(&["search", "--config", &p("zero-episodes.toml")]),
            expect: vec!["zero-episodes.toml", "episodes"],
        },
        Case {
            name: "diffsparse with a zero temperature",
            args: s(&["search", "--config", &p("diffsparse-cold.toml")]),
            expect: vec!["diffsparse-cold.toml", "diffsparse.temperature"],
        },
        Case {
            name: "diffsparse on N:M sparsity",
            args: s(&[
                "search",
                "--config",
                &p("diffsparse-nm.toml"),
                "--logdir",
                &p("run-nm"),
            ]),
            expect: vec!["diffsparse-nm.toml", "N:M"],
        },
        Case {
            name: "fine-tuning in zero stages",
            args: s(&[
                "finetune",
                "--env",
                &p("env.toml"),
                "--policy",
                &p("lamp.json"),
                "--stages",
                "0",
            ]),
            expect: vec!["env.toml", "--stages"],
        },
        Case {
            name: "iterative fine-tuning with a post-training criterion",
            args: s(&[
                "finetune",
                "--env",
                &p("wanda-env.toml"),
                "--policy",
                &p("lamp.json"),
                "--stages",
                "3",
            ]),
            expect: vec!["wanda-env.toml", "--stages", "wanda"],
        },
        Case {
            name: "residual width with unstructured pruning",
            args: evaluate("residual-unstructured.toml"),
            expect: vec![
                "residual-unstructured.toml",
                "prune.residual_width",
                "granularity = \"channel\"",
            ],
        },
        Case {
            name: "latency reward without a latency table",
            args: evaluate("latency-reward.toml"),
            expect: vec!["latency-reward.toml", "reward.kind", "[latency]"],
        },
        Case {
            name: "residual width of a model without one",
            args: evaluate("residual-mlp.toml"),
            expect: vec![
                "residual-mlp.toml",
                "prune.residual_width",
                "only a transformer",
            ],
        },
        Case {
            name: "fine-tuning resume of a folder without a run",
            args: s(&["finetune", "--resume", &p("not-a-run")]),
            expect: vec!["not-a-run", "not a fine-tuning run folder"],
        },
        Case {
            name: "resume of a folder without a run",
            args: s(&["search", "--resume", &p("not-a-run")]),
            expect: vec!["not-a-run"],
        },
        Case {
            name: "a second process on a run folder in use",
            args: s(&["search", "--resume", &p("held")]),
            expect: vec!["held", "in use by another autoprune process (pid "],
        },
        Case {
            name: "resume with fewer episodes than the run finished",
            args: s(&["search", "--resume", &p("done"), "--episodes", "2"]),
            expect: vec!["done", "--episodes"],
        },
        Case {
            name: "episode log edited by hand",
            args: s(&["search", "--resume", &p("tampered")]),
            expect: vec!["episodes.jsonl", "line 4", "accuracy 5"],
        },
        Case {
            name: "output at a device node",
            args: s(&[
                "baseline",
                "--env",
                &p("env.toml"),
                "--method",
                "lamp",
                "--out",
                "/dev/null",
            ]),
            expect: vec!["/dev/null", "regular file"],
        },
        Case {
            name: "unwritable search output (checked before the search)",
            args: s(&[
                "search",
                "--config",
                config.to_str().unwrap(),
                "--logdir",
                &p("run-out"),
                "--out",
                "/proc/autoprune-policy.json",
            ]),
            expect: vec!["/proc", "cannot write here"],
        },
        Case {
            name: "checkpoint that is a folder",
            args: evaluate("folder-checkpoint.toml"),
            expect: vec!["not a regular file"],
        },
        Case {
            name: "model size past its bound",
            args: evaluate("huge-hidden.toml"),
            expect: vec!["huge-hidden.toml", "model.hidden", "at most"],
        },
        Case {
            name: "agent size past its bound",
            args: s(&["search", "--config", &p("huge-ddpg.toml")]),
            expect: vec!["huge-ddpg.toml", "ddpg.hidden", "at most"],
        },
        Case {
            name: "thread count past its bound",
            args: s(&["evaluate", "--env", &p("env.toml"), "--threads", "100000"]),
            expect: vec!["--threads", "1024"],
        },
        Case {
            name: "three keep bounds",
            args: evaluate("three-bounds.toml"),
            expect: vec!["three-bounds.toml", "keep_bounds", "exactly two"],
        },
        Case {
            name: "a data folder for synthetic data",
            args: evaluate("synthetic-dir.toml"),
            expect: vec!["synthetic-dir.toml", "data.dir"],
        },
        Case {
            name: "validation split larger than the data",
            args: evaluate("big-val.toml"),
            expect: vec!["big-val.toml", "data.val_size"],
        },
        Case {
            name: "an extreme number",
            args: evaluate("huge-keep.toml"),
            expect: vec!["huge-keep.toml", "1e300"],
        },
        Case {
            name: "a name that is a path",
            args: evaluate("path-name.toml"),
            expect: vec!["path-name.toml", "key `name`"],
        },
    ];
    // Command-line mistakes clap finds exit with 2, as clap's own errors do.
    let usage = [
        Case {
            name: "negative episodes",
            args: s(&[
                "search",
                "--config",
                config.to_str().unwrap(),
                "--episodes",
                "-1",
            ]),
            expect: vec!["-1", "(see autoprune search --help)"],
        },
        Case {
            name: "unknown agent",
            args: s(&[
                "search",
                "--config",
                config.to_str().unwrap(),
                "--agent",
                "foo",
            ]),
            expect: vec!["foo", "(see autoprune search --help)"],
        },
        Case {
            name: "a seed on resume",
            args: s(&["search", "--resume", &p("done"), "--seed", "5"]),
            expect: vec!["--seed", "(see autoprune search --help)"],
        },
    ];
    let tmp = d.to_str().unwrap();
    let mut rows = Vec::new();
    let codes = cases
        .iter()
        .map(|c| (c, 1))
        .chain(usage.iter().map(|c| (c, 2)));
    for (case, code) in codes {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let before = std::fs::read_to_string(d.join("a-file")).unwrap();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(code), "{}: exit code", case.name);
        let line = one_error_line(&out);
        for want in &case.expect {
            assert!(line.contains(want), "{}: {want:?} not in {line}", case.name);
        }
        assert_eq!(std::fs::read_to_string(d.join("a-file")).unwrap(), before);
        let pid = format!("pid {}", holder.id());
        rows.push((
            case.name,
            args.join(" ").replace(tmp, "<tmp>"),
            line.replace(tmp, "<tmp>").replace(&pid, "pid <pid>"),
        ));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The inputs that failed are still there, untouched (nothing written is lost).
    assert_eq!(
        std::fs::read_to_string(d.join("lamp.json")).unwrap(),
        policy
    );
    assert_eq!(
        std::fs::read(d.join("truncated.safetensors"))
            .unwrap()
            .len(),
        ckpt.len() / 2
    );
    assert!(!d.join("never.safetensors").exists());

    let (line, mounted) = full_disk_case(d, &config);
    assert!(
        line.contains(if mounted {
            "No space left on device"
        } else {
            "File too large"
        }),
        "{line}"
    );
    // Which file meets the full disk first (the episode log or the event file) depends on
    // buffering and timing, so the table names it generically and keeps the operating
    // system's words, which end the line.
    let line = line.replace(tmp, "<tmp>");
    let prefix = "error: <tmp>/disk/run/";
    assert!(line.starts_with(prefix), "{line}");
    let line = match line.rfind(": ") {
        Some(end) if end > prefix.len() => format!("{prefix}<file>{}", &line[end..]),
        _ => line,
    };
    let full_disk_row = (
        "full disk during a search",
        "search --config <tmp>/config.toml --logdir <tmp>/disk/run --episodes 5000 (on a 96 KiB tmpfs)".to_string(),
        line,
    );
    rows.push(full_disk_row);

    let mut table = String::from(
        "# Bad input and faults: what autoprune says\n\n\
         Rendered by `tests/it/reliability.rs` (`bad_input_gets_one_line_and_a_nonzero_exit`); \
         refresh with `AUTOPRUNE_BLESS=1 cargo test --release --test it reliability::bad_input`. \
         Each case exits with status 1 (2 for the command-line mistakes clap finds: the last \
         rows) and prints exactly this one line on stderr; the files it names, and \
         everything written before, are left as they were. `<tmp>` is the \
         test's temporary folder; the env is `envs/synthetic-mlp.toml` with its checkpoint \
         there.\n\n| case | command | error |\n|---|---|---|\n",
    );
    for (name, command, line) in &rows {
        let cell = |t: &str| t.replace('|', "\\|");
        table.push_str(&format!(
            "| {name} | `autoprune {}` | `{}` |\n",
            cell(command),
            cell(line)
        ));
    }
    let doc = repo().join("docs/errors.md");
    if std::env::var_os("AUTOPRUNE_BLESS").is_some() {
        std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
        std::fs::write(&doc, &table).unwrap();
    } else {
        let committed = std::fs::read_to_string(&doc).unwrap_or_default();
        for (i, row) in table.lines().enumerate() {
            // The full-disk row depends on how the disk was filled (tmpfs or a size limit).
            if !mounted && row.starts_with("| full disk") {
                continue;
            }
            assert!(
                committed.lines().any(|l| l == row),
                "docs/errors.md is out of date at line {i} (rerun with AUTOPRUNE_BLESS=1):\n{row}"
            );
        }
    }
}
