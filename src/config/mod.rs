//! Every file a user writes: env files (`envs/*.toml`) and run configs (search, train-agent,
//! meta-train), parsed with errors that name the file, line and key, and checked once into
//! validated forms before anything runs.
//!
//! Must not know about tch, agents' internals or run folders.

mod checked;
mod env;
mod latency;
mod model;
mod prune_spec;
mod pruningnet;
mod search;
mod tasks;

pub use checked::{Checked, Validate};
pub use env::{
    Arch, CalibrationFrom, DataSpec, EnvOverrides, EnvSpec, ModelSpec, PruneSpec, RewardKind,
    RewardSpec, WandaCompare,
};
pub use latency::LatencySpec;
pub use pruningnet::PruningNetConfig;
pub use search::{default_heuristics, gnn_settings, SearchConfig};
pub use tasks::{Distribution, MetaTrainConfig, TrainAgentConfig};

use crate::error::{Error, Result};
use std::path::Path;

/// A config as TOML, for a run folder; `path` names the file in the error.
/// Seconds one evaluation may take on an MPI worker before the whole job is ended (a hung
/// worker): the default of `eval_deadline`.
pub(crate) fn default_eval_deadline() -> f64 {
    3600.0
}

/// What is wrong with an `eval_deadline`, if anything.
pub(crate) fn check_eval_deadline(seconds: f64) -> Option<(&'static str, String)> {
    if seconds > 0.0 && seconds <= 1e7 {
        return None;
    }
    Some((
        "eval_deadline",
        format!("{seconds} must be a number of seconds in (0, 1e7]"),
    ))
}

pub(crate) fn to_toml<T: serde::Serialize>(value: &T, path: &Path) -> Result<String> {
    toml::to_string(value).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        key: "-".into(),
        message: format!("cannot encode the config as TOML ({e})"),
    })
}

/// Parses TOML into `T`; errors are one line naming the file, line, column and key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| toml_error(path, text, &e))
}

/// One line for a TOML error: where, and what (toml's own message names the key or the
/// expected type).
fn toml_error(path: &Path, text: &str, error: &toml::de::Error) -> Error {
    let (line, column) = error
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            (line, column)
        })
        .unwrap_or((1, 1));
    let message = error.message().trim().replace('\n', " ");
    // A key that does not belong where it is written (a tagged table, such as `[model]` with
    // its `arch`, is read whole) may be reported at its table: point at the key itself.
    let (line, column) = match unknown_field_line(text, line, &message) {
        Some(found) => (found, 1),
        None => (line, column),
    };
    let message = match key_at(text, line) {
        Some(key) => format!("key `{key}`: {message}"),
        None => message,
    };
    Error::Toml {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// For an "unknown field `k`" error reported at line `from` (1-based), the line at or after
/// it, within the same table, where `k` is written.
fn unknown_field_line(text: &str, from: usize, message: &str) -> Option<usize> {
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    let lines: Vec<&str> = text.lines().collect();
    let start = from.checked_sub(1)?;
    for (i, line) in lines.iter().enumerate().skip(start) {
        let trimmed = line.trim();
        if i > start && trimmed.starts_with('[') {
            return None;
        }
        let key = trimmed
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"'));
        if key == Some(field) {
            return Some(i + 1);
        }
    }
    None
}

/// The dotted key written on line `line` (1-based), prefixed by the table it sits in.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let key = here.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_in_a_tagged_table_is_reported_where_it_is_written() {
        let text = "name = \"n\"\n[model]\narch = \"vgg\"\ncfg = [8]\ndepth = 20\n[data]\ndataset = \"synthetic\"\n";
        let error = parse_toml::<EnvSpec>(text, Path::new("env.toml")).unwrap_err();
        let line = error.to_string();
        assert!(
            line.starts_with("env.toml:5:1: key `model.depth`: unknown field `depth`"),
            "{line}"
        );
    }

    #[test]
    fn the_line_of_an_unknown_field_stays_inside_its_table() {
        let text = "[a]\nx = 1\n[b]\ny = 2\n";
        assert_eq!(
            unknown_field_line(text, 1, "unknown field `x`, expected"),
            Some(2)
        );
        assert_eq!(
            unknown_field_line(text, 1, "unknown field `y`, expected"),
            None
        );
        assert_eq!(unknown_field_line(text, 1, "invalid type"), None);
    }
}
