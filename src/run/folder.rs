//! Run folders: what a run writes (config, env, episode log, best policy, weights
//! fingerprint, what a resume must repeat), how a new one is named and created, how one is
//! opened to resume, and the lock that keeps a second process out of a folder in use.

use super::{CONFIG_FILE, ENV_FILE, EPISODES_FILE, LOCK_FILE, RUN_FILE, WEIGHTS_FILE};
use crate::config::{Checked, EnvSpec, RewardKind, SearchConfig};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The pruned model's measured and predicted latency, when the env measures latency
    /// (fields beside the others).
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::eval::Latency>,
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
    read_numbered(path, |r: &EpisodeRecord| r.episode)
}

/// [`read_records`] for any record type that numbers its episodes (`episode` reads the
/// number): complete lines in order, each numbered by its position.
pub(crate) fn read_numbered<T: serde::de::DeserializeOwned>(
    path: &Path,
    episode: impl Fn(&T) -> usize,
) -> Result<(Vec<T>, u64)> {
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
        let record: T = serde_json::from_slice(line).map_err(|e| {
            Error::data(
                path,
                format!(
                    "line {} is not an episode record ({e}); the log is damaged",
                    records.len() + 1
                ),
            )
        })?;
        if episode(&record) != records.len() {
            return Err(Error::data(
                path,
                format!(
                    "line {} records episode {}; the file is not a run's episode log",
                    records.len() + 1,
                    episode(&record)
                ),
            ));
        }
        records.push(record);
        valid += end as u64 + 1;
        rest = &rest[end + 1..];
    }
    Ok((records, valid))
}

/// What is wrong with a recorded episode, if anything, given the best whole-split reward
/// before it: every value in its range, and the rewards and best reward what the engine
/// computes from the rest. A log edited by hand (an accuracy of 5) is refused instead of
/// believed. `subset`: the run scored its episodes on a subset, so only rescored ones
/// (`whole_split`) can be the best.
fn record_problem(
    record: &EpisodeRecord,
    kind: RewardKind,
    best_before: f64,
    subset: bool,
) -> Option<String> {
    let fraction = |x: f64| (0.0..=1.0).contains(&x);
    let latency_ms = record.latency.map(|l| l.table_latency_ms);
    let reward = |accuracy, loss| {
        crate::eval::reward(
            kind,
            accuracy,
            loss,
            record.params,
            record.flops,
            latency_ms,
        )
    };
    let best = match best_candidate(record, subset) {
        Some(c) => best_before.max(c),
        None if best_before.is_finite() => best_before,
        None => record.reward,
    };
    if !fraction(record.accuracy) {
        Some(format!(
            "accuracy {} is not in [0, 1]",
            crate::check::number(record.accuracy)
        ))
    } else if !(fraction(record.params_kept) && fraction(record.flops_kept)) {
        Some("params_kept and flops_kept must be in [0, 1]".into())
    } else if !record.keeps.iter().all(|&k| fraction(k)) {
        Some("every keep ratio must be in [0, 1]".into())
    } else if !(record.loss >= 0.0 && record.loss.is_finite()) {
        Some("loss must be a finite, non-negative number".into())
    } else if record.reward != reward(record.accuracy, record.loss) {
        Some(format!(
            "reward {} is not what its accuracy, loss, params and FLOPs give ({})",
            crate::check::number(record.reward),
            crate::check::number(reward(record.accuracy, record.loss))
        ))
    } else if let Some(whole) = record.whole_split.filter(|w| {
        !fraction(w.accuracy)
            || w.reward != reward(w.accuracy, w.loss)
            || !(w.loss >= 0.0 && w.loss.is_finite())
    }) {
        Some(format!(
            "whole_split accuracy {} and reward {} do not agree with its params and FLOPs",
            crate::check::number(whole.accuracy),
            crate::check::number(whole.reward)
        ))
    } else if record.best_reward != best {
        Some("best_reward is not the best reward so far".into())
    } else {
        None
    }
}

/// The reward by which a recorded episode competes for the best: its whole-split reward (its
/// own when the run scores the whole split); none for an episode scored on a subset only.
fn best_candidate(record: &EpisodeRecord, subset: bool) -> Option<f64> {
    match (&record.whole_split, subset) {
        (Some(whole), _) => Some(whole.reward),
        (None, false) => Some(record.reward),
        (None, true) => None,
    }
}

/// Checks every recorded episode (see [`record_problem`]) before a resume replays them.
fn check_records(path: &Path, records: &[EpisodeRecord], kind: RewardKind) -> Result<()> {
    // A run that scores a subset rescores its first episode whole (nothing is better yet).
    let subset = records.first().is_some_and(|r| r.whole_split.is_some());
    let mut best = f64::NEG_INFINITY;
    for record in records {
        if let Some(problem) = record_problem(record, kind, best, subset) {
            return Err(Error::data(
                path,
                format!(
                    "line {}: {problem}; the log was changed after it was written, so the run cannot be resumed",
                    record.episode + 1
                ),
            ));
        }
        if let Some(candidate) = best_candidate(record, subset) {
            best = best.max(candidate);
        }
    }
    Ok(())
}

/// The lock a process holds on a run folder for its whole life: an exclusive `flock` on the
/// folder's lock file, which holds the holder's process id. The kernel releases it when the
/// process ends, however it ends (a kill included), so it never goes stale.
#[derive(Debug, Clone)]
pub struct RunLock {
    _file: Arc<File>,
}

impl RunLock {
    /// Takes the lock of the run folder `dir` (which must exist), or says which process
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(Error::io(&path, error));
            }
            return Err(Error::data(
                dir,
                format!(
                    "is in use by another autoprune process ({}); wait for it to end, or stop it",
                    holder(&mut file)
                ),
            ));
        }
        file.set_len(0)
            .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            _file: Arc::new(file),
        })
    }
}

/// The process id the holder of a lock wrote into the lock file. The holder writes it just
/// after taking the lock, so a moment's wait covers a race with a holder that just started.
fn holder(file: &mut File) -> String {
    for _ in 0..50 {
        let mut text = String::new();
        let read = std::io::Seek::rewind(file).and_then(|_| file.read_to_string(&mut text));
        if let (Ok(_), Ok(pid)) = (read, text.trim().parse::<u32>()) {
            return format!("pid {pid}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    "its pid is not recorded".into()
}

/// What a resume must repeat that the config does not hold: libtorch's CPU threads (another
/// count takes another path of float reductions, and the replayed choices would differ).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `--threads` of the run (`None`: libtorch's own choice).
    pub threads: Option<i32>,
}

/// A run folder: config and env as the run uses them (every path in them absolute), the
/// episode log, the best policy and the TensorBoard events. The process that holds one holds
/// its lock.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
    _lock: RunLock,
}

impl RunFolder {
    /// Creates a new run folder holding the config and env with their paths resolved, and
    /// `record`. Refuses a folder that already holds a run (use `--resume` for that) or that
    /// another process holds.
    pub fn create(
        dir: &Path,
        config: &SearchConfig,
        spec: &EnvSpec,
        record: &RunRecord,
    ) -> Result<Self> {
        let lock = new_run_dir(dir, "resume it with --resume, or choose another folder")?;
        // Paths as this working directory resolves them, so a resume from another one
        // reads the same files.
        let spec = spec.resolved()?;
        let mut config = config.clone();
        config.env = absolute(&config.env)?;
        config.meta.init = absolute(&config.meta.init)?;
        write_atomic(&dir.join(CONFIG_FILE), &config.to_toml()?)?;
        write_atomic(&dir.join(ENV_FILE), &spec.to_toml()?)?;
        let record = serde_json::to_string(record).map_err(|e| Error::data(dir, e.to_string()))?;
        write_atomic(&dir.join(RUN_FILE), &format!("{record}\n"))?;
        write_atomic(&dir.join(EPISODES_FILE), "")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Opens a run folder to resume it: its config, its env, what the run recorded for a
    /// resume, and the episodes it finished (each checked).
    #[allow(clippy::type_complexity)]
    pub fn open(
        dir: &Path,
    ) -> Result<(
        Self,
        Checked<SearchConfig>,
        EnvSpec,
        RunRecord,
        Vec<EpisodeRecord>,
    )> {
        if !dir.join(CONFIG_FILE).is_file() || !dir.join(EPISODES_FILE).is_file() {
            return Err(Error::Invalid {
                path: dir.to_path_buf(),
                key: "--resume".into(),
                message: format!(
                    "holds no run ({CONFIG_FILE} or {EPISODES_FILE} is missing); give the folder a search wrote, or start one with --config"
                ),
            });
        }
        // Nothing is read or changed before the lock is held.
        let lock = RunLock::acquire(dir)?;
        crate::fsio::remove_stale_temporaries(dir);
        let config = SearchConfig::load(&dir.join(CONFIG_FILE))?;
        let spec = EnvSpec::load(&dir.join(ENV_FILE))?;
        let record = read_run_record(&dir.join(RUN_FILE))?;
        let (records, valid) = read_records(&dir.join(EPISODES_FILE))?;
        check_records(&dir.join(EPISODES_FILE), &records, spec.reward.kind)?;
        keep_complete(&dir.join(EPISODES_FILE), valid)?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                _lock: lock,
            },
            config,
            spec,
            record,
            records,
        ))
    }
}

/// Cuts an episode log to the `valid` bytes its complete records span (a torn last line
/// goes), so appends continue a clean file.
pub(crate) fn keep_complete(path: &Path, valid: u64) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(valid))
        .map_err(|e| Error::io(path, e))
}

/// The run record of a folder (a folder written before there was one has the defaults).
pub(crate) fn read_run_record(path: &Path) -> Result<RunRecord> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Error::data(
                path,
                format!("is not a run record ({e}); the file is damaged"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunRecord::default()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `path` made absolute against the working directory.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
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

/// Creates a run folder and takes its lock, refusing one that already holds a run (`instead`
/// says what to do) or that another process holds. The check is made under the lock, so two
/// processes given one folder never both pass it.
pub fn new_run_dir(dir: &Path, instead: &str) -> Result<RunLock> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::data(
            dir,
            format!("cannot create the run folder ({e}); choose another --logdir"),
        )
    })?;
    let lock = RunLock::acquire(dir)?;
    if dir.join(EPISODES_FILE).exists() {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            key: "--logdir".into(),
            message: format!("already holds a run; {instead}"),
        });
    }
    Ok(lock)
}

/// Removes `dir` when it holds nothing but the lock file (a run that failed before writing
/// anything); leaves it alone otherwise.
pub fn remove_if_only_lock(dir: &Path) {
    let only_lock = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .all(|e| e.file_name() == LOCK_FILE)
    });
    if only_lock {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Writes a text file of the run folder atomically.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    crate::fsio::write_atomic(path, text.as_bytes())
}
