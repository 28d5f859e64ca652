//! Helpers shared by the integration tests that drive the `autoprune` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoprune"));
    c.current_dir(repo());
    c
}

/// The TOML file at `source` with each dotted key (`prune.target.keep`) set to a value
/// written as a TOML literal (`0.1`, `[32, 24]`, `"channel"`), tables created as needed; as
/// text, through the toml crate.
pub fn edited(source: &Path, edits: &[(&str, &str)]) -> String {
    let mut table: toml::Table = std::fs::read_to_string(source).unwrap().parse().unwrap();
    for (key, literal) in edits {
        let value: toml::Table = format!("v = {literal}").parse().unwrap();
        let mut path: Vec<&str> = key.split('.').collect();
        let last = path.pop().unwrap();
        let mut at = &mut table;
        for part in path {
            at = at
                .entry(part)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
        }
        at.insert(last.to_string(), value["v"].clone());
    }
    table.to_string()
}

/// A TOML string literal of a path.
pub fn literal(path: &Path) -> String {
    toml::Value::String(path.to_str().unwrap().to_string()).to_string()
}

/// A copy of the synthetic env whose checkpoint lives in `dir`, and a config pointing at it.
pub fn setup(dir: &Path, agent: &str, episodes: usize) -> PathBuf {
    let env = edited(
        &repo().join("envs/synthetic-mlp.toml"),
        &[("model.checkpoint", &literal(&dir.join("mlp.safetensors")))],
    );
    std::fs::write(dir.join("env.toml"), env).unwrap();
    let config = edited(
        &repo().join("configs/synthetic-ddpg.toml"),
        &[
            ("env", &literal(&dir.join("env.toml"))),
            ("agent", &format!("{agent:?}")),
            ("episodes", &episodes.to_string()),
        ],
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    // Pretrain once, so runs measure only the search.
    let out = bin()
        .args([
            "pretrain",
            "--env",
            dir.join("env.toml").to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("runs")
}

pub fn records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("episodes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

pub fn strip_times(mut records: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for r in &mut records {
        r.as_object_mut().unwrap().remove("seconds");
        for field in ["eval_seconds", "rss_bytes", "peak_rss_bytes"] {
            r.as_object_mut().unwrap().remove(field);
        }
    }
    records
}

pub fn records_len(run: &Path) -> usize {
    std::fs::read_to_string(run.join("episodes.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The error lines on stderr: exactly one, which is returned.
pub fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line, got: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}

/// The command `autoprune search --config CONFIG --logdir LOGDIR`, to spawn or to set up further.
pub fn search_command(config: &Path, logdir: &Path) -> std::process::Command {
    let mut command = bin();
    command.args([
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap(),
    ]);
    command
}

/// `autoprune search --config CONFIG --logdir LOGDIR EXTRA...`.
pub fn search_in(config: &Path, logdir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "search",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The one JSON object a successful command printed.
pub fn success_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A run folder's TensorBoard events as TensorBoard's own reader sees them
/// (`scripts/read_tensorboard.py`).
pub fn read_events(logdir: &Path) -> serde_json::Value {
    let read = Command::new(python())
        .arg(repo().join("scripts/read_tensorboard.py"))
        .arg(logdir)
        .output()
        .unwrap();
    success_json(&read)
}

/// `autoprune search --resume LOGDIR --episodes EPISODES EXTRA...`.
pub fn resume_to(logdir: &Path, episodes: usize, extra: &[&str]) -> Output {
    let episodes = episodes.to_string();
    let mut args = vec![
        "search",
        "--resume",
        logdir.to_str().unwrap(),
        "--episodes",
        &episodes,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The synthetic set (400 validation samples, seed 0) on the CPU.
pub fn synthetic_data() -> autoprune::data::Dataset {
    let options = autoprune::data::DataOptions {
        kind: autoprune::data::DatasetKind::Synthetic,
        dir: Default::default(),
        val_size: 400,
        seed: 0,
        context: 0,
    };
    autoprune::data::load(&options, tch::Device::Cpu).unwrap()
}

/// `cp -r FROM TO`: a copy of a run folder.
pub fn copy_folder(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs a fixture script (`tests/fixtures/<script>`) with a fresh folder for this test run
/// and `args`; returns the folder. Panics with the script's stderr if it fails.
pub fn export_fixtures(script: &str, tag: &str, args: &[String]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autoprune-{tag}-{}", std::process::id()));
    let out = Command::new(python())
        .arg(repo().join("tests/fixtures").join(script))
        .arg(&dir)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A file of raw little-endian float32 values (what the fixture scripts write).
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
