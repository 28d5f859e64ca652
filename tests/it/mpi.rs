//! Scale-out over MPI (`--features mpi`): runs under `mpirun` with several ranks give the
//! same logs and results as one process; resume works with another number of ranks; a fault
//! on any rank ends the whole job promptly with one line naming the rank.

use super::common::{bin, edited, literal, records, repo, setup, strip_times, success_json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long any MPI job of these tests may take before it counts as hung.
const HANG: Duration = Duration::from_secs(120);

/// How soon after a fault the whole job must have ended.
const PROMPT: Duration = Duration::from_secs(10);

/// A fixed clock for policy files (`created`), so runs can be compared byte for byte.
const EPOCH: &str = "1700000000";

/// `autoprune ARGS...` as one process, with the fixed clock.
fn serial(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap()
}

/// The command `mpirun -np N autoprune ARGS...` (as root, with more ranks than cores, the
/// fixed clock), killed after `HANG`.
fn mpirun_command(ranks: usize, args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command
        .arg("--kill-after=5")
        .arg(HANG.as_secs().to_string())
        .args(["mpirun", "--oversubscribe", "-np", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_autoprune"))
        .args(args)
        .current_dir(repo())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // No network interfaces needed between ranks of one machine.
        .env("OMPI_MCA_btl", "self,vader")
        .env("SOURCE_DATE_EPOCH", EPOCH);
    command
}

/// `mpirun -np N autoprune ARGS...` with extra environment: the output and how long it took.
fn mpirun(ranks: usize, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut command = mpirun_command(ranks, args);
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let out = command.output().expect("mpirun runs");
    (out, started.elapsed())
}

/// A search config on the synthetic env: `agent` with a few episodes, its settings small
/// enough that the batches are short.
fn config(dir: &Path, agent: &str, episodes: usize) -> PathBuf {
    let base = setup(dir, agent, episodes);
    // The PruningNet generates weights for channel counts: a channel-pruned copy of the env.
    let channel = dir.join("env-channel.toml");
    std::fs::write(
        &channel,
        edited(
            &dir.join("env.toml"),
            &[
                ("prune.granularity", "\"channel\""),
                ("name", "\"channel\""),
            ],
        ),
    )
    .unwrap();
    let env = if agent == "pruningnet" {
        channel
    } else {
        dir.join("env.toml")
    };
    let text = edited(
        &base,
        &[
            ("env", &literal(&env)),
            ("pruningnet.steps", "20"),
            ("evolution.population", "6"),
            ("evolution.top_k", "3"),
            ("ppo.episodes_per_update", "4"),
            ("gnn.episodes_per_update", "4"),
            ("ddpg.warmup", "8"),
            // Scored on a subset, the promising ones rescored: the rule must not depend on
            // who scored what.
            ("eval_samples", "100"),
        ],
    );
    let path = dir.join(format!("{agent}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn search_args<'a>(config: &'a Path, logdir: &'a Path) -> Vec<&'a str> {
    vec![
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ]
}

/// A run folder's records without times, and its policy files byte for byte.
fn run_result(logdir: &Path) -> (Vec<serde_json::Value>, Vec<u8>, Vec<u8>) {
    let read = |name: &str| std::fs::read(logdir.join(name)).unwrap();
    (
        strip_times(records(logdir)),
        read("best.json"),
        read("policy.json"),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn searches_do_not_depend_on_the_number_of_ranks() {
    let dir = tempfile::tempdir().unwrap();
    for (agent, episodes) in [
        ("evolution", 22),
        ("random", 12),
        ("ppo", 14),
        ("ddpg", 14),
        ("gnn", 14),
        ("meta", 14),
        ("pruningnet", 16),
    ] {
        let config = config(dir.path(), agent, episodes);
        let alone = dir.path().join(format!("{agent}-1"));
        let one = success_json(&serial(&search_args(&config, &alone)));
        let spread = dir.path().join(format!("{agent}-3"));
        let (out, _) = mpirun(3, &search_args(&config, &spread), &[]);
        let three = success_json(&out);
        assert_eq!(
            run_result(&alone),
            run_result(&spread),
            "{agent}: the log or policy files of 3 ranks differ from one process's"
        );
        assert_eq!(records(&spread).len(), episodes, "{agent}");
        for key in ["reward", "accuracy", "test_accuracy", "best_from"] {
            assert_eq!(one[key], three[key], "{agent}: {key}");
        }
        // The subset rule was exercised: some episodes were rescored on the whole split.
        assert!(
            records(&spread)
                .iter()
                .any(|r| r.get("whole_split").is_some()),
            "{agent}"
        );
    }
}

#[test]
fn a_run_resumes_with_another_number_of_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "evolution", 20);
    let whole = dir.path().join("whole");
    success_json(&serial(&search_args(&config, &whole)));
    // Crashed on rank 0 after 9 episodes were logged, with 3 ranks...
    let run = dir.path().join("run");
    let (out, _) = mpirun(
        3,
        &search_args(&config, &run),
        &[("AUTOPRUNE_FAILPOINT", "logged:8")],
    );
    assert!(!out.status.success(), "the crash point was not reached");
    assert_eq!(records(&run).len(), 9);
    // ...and finished with 2.
    let (out, _) = mpirun(
        2,
        &["search", "--resume", run.to_str().unwrap(), "--json"],
        &[],
    );
    success_json(&out);
    assert_eq!(run_result(&whole), run_result(&run));
}

/// `autoprune ARGS...` as one process (`ranks` 1) or under `mpirun -np ranks`; its JSON.
fn ranked(ranks: usize, args: &[&str]) -> serde_json::Value {
    let out = if ranks == 1 {
        serial(args)
    } else {
        mpirun(ranks, args, &[]).0
    };
    success_json(&out)
}

/// A multi-task command (`train-agent`, `meta-train`) with `config` on `ranks` ranks: its
/// 12 episode records without times, and the agent it wrote.
fn task_run(
    command: &str,
    config: &Path,
    ranks: usize,
    dir: &Path,
) -> (Vec<serde_json::Value>, Vec<u8>) {
    let logdir = dir.join(format!("{command}-{ranks}"));
    ranked(
        ranks,
        &[
            command,
            "--config",
            config.to_str().unwrap(),
            "--logdir",
            logdir.to_str().unwrap(),
            "--threads",
            "1",
            "--json",
        ],
    );
    let records: Vec<serde_json::Value> = records(&logdir)
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("seconds");
            r
        })
        .collect();
    assert_eq!(records.len(), 12, "{command}");
    let agent = std::fs::read(logdir.join("agent.safetensors")).unwrap();
    (records, agent)
}

#[test]
fn train_agent_meta_train_and_adapt_curve_do_not_depend_on_the_number_of_ranks() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "gnn", 1);
    let env = dir.path().join("env.toml");
    let tasks = format!(
        "envs = [{}]\nbudgets = [0.2, 0.4]\neval_samples = 100\n[gnn]\nepisodes_per_update = 4\n",
        literal(&env)
    );
    let train = dir.path().join("train.toml");
    std::fs::write(&train, format!("name = \"t\"\nepisodes = 12\n{tasks}")).unwrap();
    assert!(
        task_run("train-agent", &train, 1, dir.path())
            == task_run("train-agent", &train, 3, dir.path()),
        "train-agent: 3 ranks differ from one"
    );
    let meta = dir.path().join("meta.toml");
    std::fs::write(
        &meta,
        format!("name = \"m\"\n{tasks}[reptile]\niterations = 3\ninner_episodes = 4\n"),
    )
    .unwrap();
    assert!(
        task_run("meta-train", &meta, 1, dir.path())
            == task_run("meta-train", &meta, 2, dir.path()),
        "meta-train: 2 ranks differ from one"
    );

    let curve = |ranks| {
        ranked(
            ranks,
            &[
                "adapt-curve",
                "--init",
                "fresh=random",
                "--env",
                env.to_str().unwrap(),
                "--points",
                "0,4,8",
                "--seeds",
                "0",
                "--eval-samples",
                "100",
                "--threads",
                "1",
                "--json",
            ],
        )["runs"]
            .clone()
    };
    let curves = [curve(1), curve(2)];
    assert_eq!(curves[0], curves[1], "adapt-curve: 2 ranks differ from one");
}

/// A fault ended the whole job with one line naming the rank and `needle`, no later than
/// `PROMPT` after a clean run of the same job would have ended (the fault comes before that).
fn assert_job_ended(out: &Output, took: Duration, clean: Duration, needle: &str) {
    assert!(!out.status.success());
    assert!(
        took < clean + PROMPT,
        "the job took {took:?} after a fault; a clean run takes {clean:?}"
    );
    let text = stderr(out);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].starts_with("error: rank "), "{text}");
    assert!(errors[0].contains(needle), "{text}");
}

#[test]
fn a_fault_on_any_rank_ends_the_job_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "evolution", 30);
    let run = |name: &str, config: &Path, failpoint: &str, extra: &[&str]| {
        let logdir = dir.path().join(name);
        let mut args = search_args(config, &logdir);
        args.extend_from_slice(extra);
        let (out, took) = mpirun(3, &args, &[("AUTOPRUNE_FAILPOINT", failpoint)]);
        (out, took, logdir)
    };
    let (out, clean, _) = run("clean", &config, "", &[]);
    success_json(&out);
    // An evaluation that fails on a worker.
    let (out, took, logdir) = run("error", &config, "worker-error:12", &[]);
    assert_job_ended(
        &out,
        took,
        clean,
        "scoring episode 12: failpoint worker-error",
    );
    // What was logged before stays, and is a prefix of the run.
    assert!(records(&logdir).len() <= 12);
    // A worker that panics.
    let (out, took, _) = run("panic", &config, "worker-panic:9", &[]);
    assert_job_ended(&out, took, clean, "failpoint worker-panic at episode 9");
    // A worker that hangs: the deadline (3 s) catches it.
    let hung = dir.path().join("hung.toml");
    std::fs::write(&hung, edited(&config, &[("eval_deadline", "3")])).unwrap();
    let (out, took, _) = run("hang", &hung, "worker-hang:7", &[]);
    assert_job_ended(
        &out,
        took.saturating_sub(Duration::from_secs(3)),
        clean,
        "for longer than the deadline of 3 s",
    );
    // An error on rank 0 while the workers wait: an output it cannot write.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let out_path = blocked.join("policy.json");
    let (out, took, _) = run("rank0", &config, "", &["--out", out_path.to_str().unwrap()]);
    assert_job_ended(&out, took, clean, "a file is in the way");
}

/// The processes of `mpirun` jobs whose command line names `logdir`, with their rank.
fn ranks_of(logdir: &Path) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let names_run = String::from_utf8_lossy(&cmdline).contains(logdir.to_str().unwrap());
        let rank = environ
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .map(str::to_string);
        if let (true, Some(rank)) = (names_run, rank) {
            found.push((pid, rank));
        }
    }
    found
}

#[test]
fn a_killed_worker_ends_the_job_and_the_run_resumes_with_fewer_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "random", 600);
    let whole = dir.path().join("whole");
    success_json(&serial(&search_args(&config, &whole)));
    let run = dir.path().join("run");
    let mut child = mpirun_command(3, &search_args(&config, &run))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Mid-run: some episodes logged, the job still going.
    let started = Instant::now();
    while super::common::records_len(&run) < 20 {
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        assert!(started.elapsed() < HANG, "no episodes were logged");
        std::thread::sleep(Duration::from_millis(10));
    }
    let worker = ranks_of(&run)
        .into_iter()
        .find(|(_, rank)| rank == "1")
        .expect("rank 1 runs")
        .0;
    // SAFETY: sending a signal to a process has no memory-safety conditions.
    unsafe {
        libc::kill(worker, libc::SIGKILL);
    }
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < HANG, "the job hung after a worker died");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = killed.elapsed();
    assert!(!status.success());
    assert!(
        took < PROMPT,
        "the job ended {took:?} after its worker was killed"
    );
    assert!(ranks_of(&run).is_empty(), "processes of the job are left");
    // The run folder is intact: it resumes with 2 ranks to what one process wrote.
    let logged = super::common::records_len(&run);
    assert!((20..600).contains(&logged), "{logged} episodes logged");
    let (out, _) = mpirun(
        2,
        &["search", "--resume", run.to_str().unwrap(), "--json"],
        &[],
    );
    success_json(&out);
    assert_eq!(run_result(&whole), run_result(&run));
}
