//! Run folders: what a run writes (config, env, episode log, best policy, weights
//! fingerprint), how a new one is named and created, and how one is opened to resume.

use super::{CONFIG_FILE, ENV_FILE, EPISODES_FILE, WEIGHTS_FILE};
use crate::config::{EnvSpec, SearchConfig};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One finished episode, as written to `episodes.jsonl` (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub episode: usize,
    pub reward: f64,
    pub accuracy: f64,
    pub loss: f64,
    pub params_kept: f64,
    pub flops_kept: f64,
    pub params: usize,
    pub flops: usize,
    pub best_reward: f64,
    /// The policy's keep ratios, one per unit.
    pub keeps: Vec<f64>,
    /// Exactly the scalars logged to TensorBoard for this episode (tag -> value).
    pub scalars: BTreeMap<String, f64>,
    /// Wall time of the episode (agent, environment, evaluator).
    pub seconds: f64,
    /// The part of `seconds` spent in the evaluator.
    #[serde(default)]
    pub eval_seconds: f64,
    /// Resident memory of the process after the episode, and its peak so far, in bytes
    /// (0 where the system does not say).
    #[serde(default)]
    pub rss_bytes: u64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// The allocator whose policy this episode scored (`uniform`, `lamp`, ...); absent for
    /// the agent's own episodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heuristic: Option<String>,
    /// The policy rescored on the whole evaluation split, when the episode's own score is on
    /// a subset (`eval_samples`) and it was promising enough to rescore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_split: Option<WholeSplit>,
}

/// A policy's score on the whole evaluation split (see [`EpisodeRecord::whole_split`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WholeSplit {
    pub reward: f64,
    pub accuracy: f64,
    pub loss: f64,
}

/// Reads the complete records of an episodes file. A torn last line (a crash mid-write, no
/// newline yet) is dropped; any other line that is not a record is an error. Returns the
/// records and the byte length they span.
pub fn read_records(path: &Path) -> Result<(Vec<EpisodeRecord>, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut records = Vec::new();
    let mut valid = 0u64;
    let mut rest = bytes.as_slice();
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let record: EpisodeRecord = serde_json::from_slice(line).map_err(|e| {
            Error::data(
                path,
                format!(
                    "line {} is not an episode record ({e}); the log is damaged",
                    records.len() + 1
                ),
            )
        })?;
        if record.episode != records.len() {
            return Err(Error::data(
                path,
                format!(
                    "line {} records episode {}; the file is not a run's episode log",
                    records.len() + 1,
                    record.episode
                ),
            ));
        }
        records.push(record);
        valid += end as u64 + 1;
        rest = &rest[end + 1..];
    }
    Ok((records, valid))
}

/// A run folder: config and env as the run uses them, the episode log, the best policy and
/// the TensorBoard events.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
}

impl RunFolder {
    /// Creates a new run folder holding the config and env text. Refuses a folder that already
    /// holds a run (use `--resume` for that).
    pub fn create(dir: &Path, config: &SearchConfig, env_text: &str) -> Result<Self> {
        new_run_dir(dir, "resume it with --resume, or choose another folder")?;
        write_atomic(&dir.join(CONFIG_FILE), &config.to_toml()?)?;
        write_atomic(&dir.join(ENV_FILE), env_text)?;
        write_atomic(&dir.join(EPISODES_FILE), "")?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens a run folder to resume it: its config, its env and the episodes it finished.
    pub fn open(dir: &Path) -> Result<(Self, SearchConfig, EnvSpec, Vec<EpisodeRecord>)> {
        if !dir.join(CONFIG_FILE).is_file() || !dir.join(EPISODES_FILE).is_file() {
            return Err(Error::Invalid {
                path: dir.to_path_buf(),
                key: "--resume".into(),
                message: format!(
                    "holds no run ({CONFIG_FILE} or {EPISODES_FILE} is missing); give the folder a search wrote, or start one with --config"
                ),
            });
        }
        crate::fsio::remove_stale_temporaries(dir);
        let config = SearchConfig::load(&dir.join(CONFIG_FILE))?;
        let spec = EnvSpec::load(&dir.join(ENV_FILE))?;
        let (records, valid) = read_records(&dir.join(EPISODES_FILE))?;
        // Drop a torn last line so appends continue a clean file.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(EPISODES_FILE))
            .map_err(|e| Error::io(dir.join(EPISODES_FILE), e))?;
        file.set_len(valid)
            .map_err(|e| Error::io(dir.join(EPISODES_FILE), e))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
            },
            config,
            spec,
            records,
        ))
    }
}

impl RunFolder {
    /// Ties the run to the pretrained weights it scores: the first call records their
    /// fingerprint, later calls (resume) refuse other weights, whose scores would not mix.
    pub fn check_weights(&self, fingerprint: &str, checkpoint: &Path) -> Result<()> {
        let path = self.dir.join(WEIGHTS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(recorded) if recorded.trim() == fingerprint => Ok(()),
            Ok(recorded) => Err(Error::Invalid {
                path: checkpoint.to_path_buf(),
                key: "model.checkpoint".into(),
                message: format!(
                    "these weights ({fingerprint}) are not the ones the run in {} was scored with ({}); restore them to resume",
                    self.dir.display(),
                    recorded.trim()
                ),
            }),
            Err(_) => write_atomic(&path, &format!("{fingerprint}\n")),
        }
    }
}

/// The run folder of a command: `logdir` when given, else `runs/<label>-s<seed>-<UTC time>`
/// (`YYYYMMDD-HHMMSS`).
pub fn run_dir(logdir: Option<PathBuf>, label: &str, seed: u64) -> PathBuf {
    logdir.unwrap_or_else(|| {
        let stamp = crate::policy::now_rfc3339()
            .replace([':', '-'], "")
            .replace('T', "-")
            .trim_end_matches('Z')
            .to_string();
        PathBuf::from("runs").join(format!("{label}-s{seed}-{stamp}"))
    })
}

/// Creates a run folder, refusing one that already holds a run (`instead` says what to do).
pub fn new_run_dir(dir: &Path, instead: &str) -> Result<()> {
    if dir.join(EPISODES_FILE).exists() {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            key: "--logdir".into(),
            message: format!("already holds a run; {instead}"),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::data(
            dir,
            format!("cannot create the run folder ({e}); choose another --logdir"),
        )
    })
}

/// Writes a text file of the run folder atomically.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    crate::fsio::write_atomic(path, text.as_bytes())
}
