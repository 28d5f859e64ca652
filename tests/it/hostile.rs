//! A hostile user's second round: two processes on one run folder, outputs at device nodes,
//! resumes that would lower the best result or come from another folder, symlinks out of an
//! ONNX model's folder, sizes past every bound, tampered logs, silently dropped keys, names
//! that are paths, late checks, usage errors and transfers that write into the working
//! directory. Each test fails on a build without the guard it names.

use crate::common::{
    bin, copy_folder, one_error_line, records, repo, resume_to, run, search_command, search_in,
    setup, strip_times, success_json,
};
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// Every file of a folder (name -> bytes), to show a process changed nothing; the lock file
/// (which names the last process that held the folder) only `with_lock`.
fn snapshot(dir: &Path, with_lock: bool) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && (with_lock || !path.ends_with("lock")) {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// Waits until `child` holds the lock of `dir` (its pid is in the lock file), then stops it
/// (SIGSTOP) so that it keeps the lock while another process tries the folder.
fn stop_once_locked(child: &mut Child, dir: &Path) {
    let pid = child.id().to_string();
    loop {
        let holder = std::fs::read_to_string(dir.join("lock")).unwrap_or_default();
        if holder.trim() == pid {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the first process ended before it took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first process must still hold the lock"
    );
}

fn resume_command(dir: &Path) -> std::process::Command {
    let mut command = bin();
    command.args(["search", "--resume", dir.to_str().unwrap()]);
    command
}

/// Item 1: a second process on a folder in use gets one line naming the holder's pid and
/// changes nothing; the holder's run ends as a run alone would.
#[test]
fn a_second_process_on_a_run_folder_in_use_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "ddpg", 200);
    let alone = dir.path().join("alone");
    success_json(&search_in(&config, &alone, &["--json"]));
    let killed = dir.path().join("killed");
    let status = search_command(&config, &killed)
        .env("AUTOPRUNE_FAILPOINT", "logged:5")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    for trial in 0..3 {
        for fresh in [true, false] {
            let folder = dir.path().join(format!("t{trial}-{fresh}"));
            let mut first = if fresh {
                search_command(&config, &folder)
            } else {
                copy_folder(&killed, &folder);
                resume_command(&folder)
            };
            let mut first = first
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            stop_once_locked(&mut first, &folder);
            let before = snapshot(&folder, true);
            let second = if fresh {
                search_in(&config, &folder, &["--json"])
            } else {
                resume_command(&folder).output().unwrap()
            };
            let line = one_error_line(&second);
            assert!(
                line.contains(&format!(
                    "in use by another autoprune process (pid {})",
                    first.id()
                )),
                "trial {trial}: {line}"
            );
            assert!(second.stdout.is_empty());
            assert_eq!(
                snapshot(&folder, true),
                before,
                "trial {trial}: the second process wrote"
            );
            // SAFETY: signalling a child process this test started.
            unsafe { libc::kill(first.id() as i32, libc::SIGCONT) };
            let out = first.wait_with_output().unwrap();
            let report = success_json(&out);
            assert_eq!(strip_times(records(&folder)), strip_times(records(&alone)));
            let policy: serde_json::Value =
                serde_json::from_slice(&std::fs::read(folder.join("policy.json")).unwrap())
                    .unwrap();
            assert_eq!(policy["layers"], report["layers"]);
        }
    }
}

/// Item 1, unsynchronised: two fresh searches started together on one `--logdir`. Exactly
/// one runs; the other gets one line; the folder holds the run of one search alone.
#[test]
fn two_searches_started_together_on_one_logdir_leave_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "random", 60);
    let alone = dir.path().join("alone");
    success_json(&search_in(&config, &alone, &["--json"]));
    for trial in 0..4 {
        let folder = dir.path().join(format!("race{trial}"));
        let spawn = || {
            search_command(&config, &folder)
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let winners: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(winners.len(), 1, "trial {trial}: exactly one search runs");
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        let line = one_error_line(loser);
        assert!(
            line.contains("in use by another autoprune process (pid ")
                || line.contains("already holds a run"),
            "{line}"
        );
        assert!(loser.stdout.is_empty());
        assert_eq!(strip_times(records(&folder)), strip_times(records(&alone)));
        let report: serde_json::Value = serde_json::from_slice(&winners[0].stdout).unwrap();
        let policy: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("policy.json")).unwrap()).unwrap();
        assert_eq!(policy["layers"], report["layers"]);
    }
}

fn baseline_to(env: &Path, out: &Path) -> std::process::Output {
    run(&[
        "baseline",
        "--env",
        env.to_str().unwrap(),
        "--method",
        "uniform",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Item 2: an output at a device node, a pipe or a folder is refused and left as it was.
#[test]
fn outputs_never_replace_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "ddpg", 5);
    let env = dir.path().join("env.toml");
    let line = one_error_line(&baseline_to(&env, Path::new("/dev/null")));
    assert!(
        line.contains("/dev/null") && line.contains("regular file"),
        "{line}"
    );
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device());
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let line = one_error_line(&baseline_to(&env, &fifo));
    assert!(line.contains("regular file"), "{line}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let line = one_error_line(&baseline_to(&env, &folder));
    assert!(line.contains("a folder"), "{line}");
    assert!(folder.is_dir());
}

/// Item 3: resuming a finished run with fewer episodes is refused and changes nothing; a
/// resumed run's best.json is the one the uninterrupted run wrote.
#[test]
fn a_resume_never_lowers_the_best_result() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "random", 40);
    let full = dir.path().join("full");
    success_json(&search_in(&config, &full, &["--json"]));
    let before = snapshot(&full, false);
    let line = one_error_line(&resume_to(&full, 10, &[]));
    assert!(line.contains("--episodes") && line.contains("40"), "{line}");
    assert_eq!(snapshot(&full, false), before);
    // Killed after episode 38 was logged: the resume replays 39 episodes and runs one.
    let killed = dir.path().join("killed");
    let status = search_command(&config, &killed)
        .env("AUTOPRUNE_FAILPOINT", "logged:38")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    success_json(&resume_to(&killed, 40, &["--json"]));
    let best = |dir: &Path| {
        let mut best: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("best.json")).unwrap()).unwrap();
        best.as_object_mut().unwrap().remove("created");
        best["metrics"].as_object_mut().unwrap().remove("seconds");
        best
    };
    let (resumed, uninterrupted) = (best(&killed), best(&full));
    assert!(
        uninterrupted["episodes"].as_u64().unwrap() < 39,
        "the best was found before the resume point, so the test can tell"
    );
    assert_eq!(resumed, uninterrupted);
}

/// Item 4: an external data file that is a symlink out of the model's folder is refused.
#[test]
fn external_onnx_data_through_a_symlink_out_of_the_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // A model with external data, exported by PyTorch.
    let exported = dir.path().join("exported");
    let out = std::process::Command::new(crate::common::python())
        .arg(repo().join("tests/fixtures/export_onnx.py"))
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(exported.join("cnn_bn.onnx"), model_dir.join("cnn_bn.onnx")).unwrap();
    std::fs::copy(
        exported.join("cnn_bn.onnx.data"),
        outside.join("cnn_bn.onnx.data"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.join("cnn_bn.onnx.data"),
        model_dir.join("cnn_bn.onnx.data"),
    )
    .unwrap();
    let model = model_dir.join("cnn_bn.onnx");
    let line = autoprune::onnx::import(&model).err().unwrap().to_string();
    assert!(line.contains("links outside the model's folder"), "{line}");
    // A link that stays inside the folder is followed.
    std::fs::remove_file(model_dir.join("cnn_bn.onnx.data")).unwrap();
    std::fs::rename(
        outside.join("cnn_bn.onnx.data"),
        model_dir.join("weights.bin"),
    )
    .unwrap();
    std::os::unix::fs::symlink("weights.bin", model_dir.join("cnn_bn.onnx.data")).unwrap();
    assert!(autoprune::onnx::import(&model).is_ok());
}

/// The synthetic env's text with `from` replaced by `to`, parsed.
fn env_error(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(repo().join("envs/synthetic-mlp.toml")).unwrap();
    assert!(text.contains(from), "{from}");
    let text = text.replace(from, to);
    autoprune::config::EnvSpec::parse(&text, Path::new("env.toml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// The synthetic DDPG config with `extra` appended, parsed.
fn config_error(agent: &str, extra: &str) -> String {
    let text = std::fs::read_to_string(repo().join("configs/synthetic-ddpg.toml")).unwrap();
    let text = text
        .replace("[ddpg]", "[ddpg_]")
        .replace("agent = \"ddpg\"", &format!("agent = \"{agent}\""));
    let text = format!("{}\n{extra}\n", text.split("[ddpg_]").next().unwrap());
    autoprune::config::SearchConfig::parse(&text, Path::new("config.toml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// Item 5: every size, count and thread number has an upper bound, checked with the config;
/// the error names the file and the key.
#[test]
fn sizes_past_their_bounds_are_refused_with_the_file_and_key() {
    for (from, to, key) in [
        (
            "hidden = [32, 16]",
            "hidden = [100000000, 100000000]",
            "model.hidden",
        ),
        (
            "finetune_steps = 0",
            "finetune_steps = 99999999999",
            "reward.finetune_steps",
        ),
        ("val_size = 400", "val_size = 99999999", "data.val_size"),
        ("epochs = 3", "epochs = 100000000", "train.epochs"),
        (
            "batch_size = 64",
            "batch_size = 100000000",
            "train.batch_size",
        ),
    ] {
        let line = env_error(from, to);
        assert!(
            line.starts_with(&format!("env.toml: key `{key}`: ")) && line.contains("at most"),
            "{key}: {line}"
        );
    }
    for (agent, extra, key) in [
        ("ddpg", "[ddpg]\nhidden = 10000000", "ddpg.hidden"),
        ("ppo", "[ppo]\nhidden = 100000000", "ppo.hidden"),
        (
            "evolution",
            "[evolution]\npopulation = 1000000000000",
            "evolution.population",
        ),
        ("gnn", "[gnn]\nlayers = 100000", "gnn.layers"),
        ("random", "eval_samples = 99999999", "eval_samples"),
        (
            "pruningnet",
            "[pruningnet]\nsteps = 99999999999",
            "pruningnet.steps",
        ),
    ] {
        let line = config_error(agent, extra);
        assert!(
            line.starts_with(&format!("config.toml: key `{key}`: ")) && line.contains("at most"),
            "{key}: {line}"
        );
    }
    let out = run(&[
        "evaluate",
        "--env",
        "envs/synthetic-mlp.toml",
        "--threads",
        "100000",
    ]);
    let line = one_error_line(&out);
    assert!(
        line.contains("--threads") && line.contains("1024"),
        "{line}"
    );
    let out = run(&[
        "train-agent",
        "--config",
        "configs/gnn-train.toml",
        "--episodes",
        "99999999",
    ]);
    let line = one_error_line(&out);
    assert!(
        line.contains("key `episodes`: 99999999 is too large; use at most 1000000")
            && line.contains("after the command line's overrides"),
        "{line}"
    );
}

/// Writes a finished `agent` run of `episodes` into `dir/run` and returns its folder.
fn finished_run(dir: &Path, agent: &str, episodes: usize) -> PathBuf {
    let config = setup(dir, agent, episodes);
    let logdir = dir.join("run");
    success_json(&search_in(&config, &logdir, &["--json"]));
    logdir
}

/// Item 6: an episode log edited by hand is refused on resume, and nothing is changed.
#[test]
fn a_tampered_episode_log_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = finished_run(dir.path(), "random", 8);
    let log = logdir.join("episodes.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let edit = |line: usize, change: &dyn Fn(&mut serde_json::Value)| {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut record: serde_json::Value = serde_json::from_str(&lines[line]).unwrap();
        change(&mut record);
        lines[line] = serde_json::to_string(&record).unwrap();
        lines.join("\n") + "\n"
    };
    let tampered = [
        edit(3, &|r| {
            r["reward"] = 5.0.into();
            r["accuracy"] = 5.0.into();
        }),
        edit(3, &|r| r["reward"] = 0.999.into()),
        edit(2, &|r| r["keeps"][0] = 1.5.into()),
        edit(5, &|r| r["best_reward"] = 0.9999.into()),
    ];
    for (i, tampered) in tampered.iter().enumerate() {
        std::fs::write(&log, tampered).unwrap();
        let before = snapshot(&logdir, false);
        let line = one_error_line(&resume_to(&logdir, 12, &[]));
        assert!(line.contains("episodes.jsonl: line "), "case {i}: {line}");
        assert!(line.contains("cannot be resumed"), "case {i}: {line}");
        assert_eq!(snapshot(&logdir, false), before, "case {i}");
    }
    std::fs::write(&log, &text).unwrap();
    success_json(&resume_to(&logdir, 12, &["--json"]));
}

/// Item 7: extra bounds, keys of another arch and a `dir` synthetic data never reads are
/// errors, never dropped.
#[test]
fn input_is_never_silently_dropped() {
    let line = env_error(
        "keep_bounds = [0.05, 1.0]",
        "keep_bounds = [0.05, 0.1, 1.0]",
    );
    assert!(
        line.contains("key `prune.keep_bounds`") && line.contains("exactly two numbers"),
        "{line}"
    );
    let line = env_error("keep_bounds = [0.05, 1.0]", "keep_bounds = [0.05]");
    assert!(line.contains("exactly two numbers"), "{line}");
    let line = env_error("hidden = [32, 16]", "hidden = [32, 16]\ndepth = 20");
    assert!(line.contains("key `model.depth`: unknown field"), "{line}");
    let line = env_error(
        "arch = \"mlp\"\nhidden = [32, 16]",
        "arch = \"resnet\"\ndepth = 8\ncfg = [8]",
    );
    assert!(line.contains("key `model.cfg`: unknown field"), "{line}");
    let line = env_error(
        "dataset = \"synthetic\"",
        "dataset = \"synthetic\"\ndir = \"no/such/dir\"",
    );
    assert!(line.contains("key `data.dir`"), "{line}");
}

/// Item 8: names that would be paths are refused before anything is written.
#[test]
fn names_never_become_paths() {
    for name in ["../../../x/evil", "a/b", ".hidden", "with space"] {
        let line = env_error("name = \"synthetic-mlp\"", &format!("name = {name:?}"));
        assert!(line.starts_with("env.toml: key `name`: "), "{line}");
        let text = std::fs::read_to_string(repo().join("configs/synthetic-ddpg.toml")).unwrap();
        let text = text.replace("name = \"synthetic-ddpg\"", &format!("name = {name:?}"));
        let line = autoprune::config::SearchConfig::parse(&text, Path::new("config.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(line.starts_with("config.toml: key `name`: "), "{line}");
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("a/b/c");
    std::fs::create_dir_all(&work).unwrap();
    let text = std::fs::read_to_string(repo().join("envs/synthetic-mlp.toml")).unwrap();
    let text = text
        .replace("name = \"synthetic-mlp\"", "name = \"../../../evil\"")
        .replace(
            "checkpoint = \"checkpoints/synthetic-mlp.safetensors\"\n",
            "",
        );
    std::fs::write(work.join("env.toml"), text).unwrap();
    let out = bin()
        .current_dir(&work)
        .args(["pretrain", "--env", "env.toml"])
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("key `name`"), "{line}");
    assert!(!dir.path().join("evil.safetensors").exists());
    assert!(!dir.path().join("a/evil.safetensors").exists());
}

/// Item 9: a run records its thread count and resolved paths; a resume from another working
/// directory reads the same checkpoint and data, with the same threads, and ends as the
/// uninterrupted run.
#[test]
fn a_resume_from_another_directory_repeats_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "ddpg", 30);
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("ckpt")).unwrap();
    std::fs::copy(
        dir.path().join("mlp.safetensors"),
        work.join("ckpt/mlp.safetensors"),
    )
    .unwrap();
    let env = std::fs::read_to_string(dir.path().join("env.toml")).unwrap();
    let absolute = dir.path().join("mlp.safetensors");
    std::fs::write(
        work.join("env.toml"),
        env.replace(absolute.to_str().unwrap(), "ckpt/mlp.safetensors"),
    )
    .unwrap();
    let config_text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        work.join("config.toml"),
        config_text.replace(dir.path().join("env.toml").to_str().unwrap(), "env.toml"),
    )
    .unwrap();
    let search = |logdir: &str, failpoint: Option<&str>| {
        let mut command = bin();
        command.current_dir(&work).args([
            "search",
            "--config",
            "config.toml",
            "--logdir",
            logdir,
            "--threads",
            "1",
            "--json",
        ]);
        if let Some(point) = failpoint {
            command.env("AUTOPRUNE_FAILPOINT", point);
        }
        command.output().unwrap()
    };
    let full = success_json(&search("full", None));
    assert!(!search("killed", Some("logged:12")).status.success());
    let record = std::fs::read_to_string(work.join("killed/run.json")).unwrap();
    assert_eq!(record.trim(), r#"{"threads":1}"#);
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let killed = work.join("killed");
    let resumed = bin()
        .current_dir(&elsewhere)
        .args(["search", "--resume", killed.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let resumed = success_json(&resumed);
    assert_eq!(resumed["layers"], full["layers"]);
    assert_eq!(
        strip_times(records(&killed)),
        strip_times(records(&work.join("full")))
    );
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing pretrained or written in the other directory"
    );
    // Another thread count would change the results: refused, naming the recorded one.
    let out = bin()
        .current_dir(&elsewhere)
        .args([
            "search",
            "--resume",
            killed.to_str().unwrap(),
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("--threads 1"), "{line}");
}

/// Item 10: outputs are checked before the work starts.
#[test]
fn outputs_are_checked_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "ddpg", 30);
    let logdir = dir.path().join("run");
    let line = one_error_line(&search_in(
        &config,
        &logdir,
        &["--out", "/proc/autoprune-policy.json"],
    ));
    assert!(line.contains("cannot write here"), "{line}");
    assert_eq!(crate::common::records_len(&logdir), 0, "no episode ran");
    // A checkpoint path that is a folder: pretrain refuses before training, evaluate says
    // what is wrong.
    let env = std::fs::read_to_string(dir.path().join("env.toml")).unwrap();
    let folder = dir.path().join("ckpt-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let ckpt = dir.path().join("mlp.safetensors");
    std::fs::write(
        dir.path().join("folder.toml"),
        env.replace(ckpt.to_str().unwrap(), folder.to_str().unwrap()),
    )
    .unwrap();
    let env = dir.path().join("folder.toml");
    let out = run(&["pretrain", "--env", env.to_str().unwrap()]);
    let line = one_error_line(&out);
    assert!(
        line.contains("a folder") && line.contains("model.checkpoint"),
        "{line}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("epoch"),
        "nothing trained"
    );
    let line = one_error_line(&run(&["evaluate", "--env", env.to_str().unwrap()]));
    assert!(!line.contains("no such file"), "{line}");
    assert!(line.contains("not a regular file"), "{line}");
}

/// Item 11: usage errors are one line with a hint (exit code 2); extreme numbers print short.
#[test]
fn usage_errors_and_extreme_numbers_are_one_short_line() {
    for args in [
        &["search", "--config", "c.toml", "--episodes", "-1"][..],
        &["search", "--config", "c.toml", "--agent", "foo"],
        &["search", "--resume", "X", "--seed", "5"],
        &["no-such-command"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("--help)"),
            "{stderr}"
        );
        if args.contains(&"foo") {
            assert!(stderr.contains("[possible values: ddpg, ppo"), "{stderr}");
        }
        if args[0] == "search" {
            assert!(stderr.contains("(see autoprune search --help)"), "{stderr}");
        }
    }
    let help = run(&["search", "--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).lines().count() > 5);
    let line = env_error("keep = 0.2", "keep = 1e300");
    assert!(line.contains("1e300 is out of range"), "{line}");
    let line = env_error("lr = 0.01", "lr = -1e-300");
    assert!(line.contains("-1e-300 must be a positive number"), "{line}");
    let line = env_error("val_size = 400", "val_size = 100000");
    assert!(
        line.starts_with("env.toml: key `data.val_size`: "),
        "{line}"
    );
}

/// Item 12: a zero-shot transfer without `--out` writes into its own run folder, not the
/// working directory.
#[test]
fn a_zero_shot_transfer_writes_into_its_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "ddpg", 5);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = bin()
        .current_dir(&work)
        .args(["transfer", "--agent"])
        .arg(repo().join("policies/gnn-fmnist.safetensors"))
        .arg("--env")
        .arg(dir.path().join("env.toml"))
        .arg("--json")
        .output()
        .unwrap();
    let report = success_json(&out);
    let policy = work.join(report["policy"].as_str().unwrap());
    let logdir = work.join(report["logdir"].as_str().unwrap());
    assert_eq!(policy, logdir.join("policy.json"));
    assert!(policy.is_file());
    let top: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, vec!["runs".to_string()], "only the run folders");
}

/// The files of the second round's cases in the bad-input table (`reliability.rs`): env files past their bounds, a
/// finished run, the same run with an edited log, and a folder another process holds.
pub(crate) fn hostile_inputs(d: &Path, env: &str, config: &Path) {
    let write = |name: &str, text: String| std::fs::write(d.join(name), text).unwrap();
    let ckpt = d.join("mlp.safetensors");
    std::fs::create_dir_all(d.join("a-folder")).unwrap();
    for (name, from, to) in [
        (
            "folder-checkpoint.toml",
            ckpt.to_str().unwrap(),
            d.join("a-folder").to_str().unwrap(),
        ),
        (
            "huge-hidden.toml",
            "hidden = [32, 16]",
            "hidden = [100000000, 100000000]",
        ),
        (
            "three-bounds.toml",
            "keep_bounds = [0.05, 1.0]",
            "keep_bounds = [0.05, 0.1, 1.0]",
        ),
        (
            "synthetic-dir.toml",
            "dataset = \"synthetic\"",
            "dataset = \"synthetic\"\ndir = \"no/such/dir\"",
        ),
        ("big-val.toml", "val_size = 400", "val_size = 100000"),
        ("huge-keep.toml", "keep = 0.2", "keep = 1e300"),
        (
            "path-name.toml",
            "name = \"synthetic-mlp\"",
            "name = \"../../../x/evil\"",
        ),
    ] {
        assert!(env.contains(from), "{from}");
        write(name, env.replace(from, to));
    }
    let text = std::fs::read_to_string(config).unwrap();
    write(
        "huge-ddpg.toml",
        text.replace("hidden = 32", "hidden = 10000000"),
    );
    let done = d.join("done");
    let out = search_in(config, &done, &["--episodes", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for copy in ["tampered", "held"] {
        copy_folder(&done, &d.join(copy));
    }
    let log = d.join("tampered/episodes.jsonl");
    let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[3]["reward"] = 5.0.into();
    lines[3]["accuracy"] = 5.0.into();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, text).unwrap();
}
