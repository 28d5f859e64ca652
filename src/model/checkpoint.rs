//! Safetensors checkpoints of a `VarStore` (models and agents): written atomically, read back
//! only when every tensor is there with its shape.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Tensor};

/// Writes every variable of `vs` (on the CPU, sorted by name) to a safetensors file, atomically
/// (see [`crate::fsio`]).
pub fn save_var_store(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    crate::fsio::write_with(path, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
}

/// Loads a safetensors file into `vs`. Every variable must be present with its shape and no
/// other tensor may be there; otherwise the error names the first tensor that differs, in the
/// order `rank` gives (ties by name). `remedy` is the command that writes a right file.
pub fn load_var_store(
    vs: &nn::VarStore,
    path: &Path,
    rank: impl Fn(&str) -> (usize, usize),
    remedy: &str,
) -> Result<()> {
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            tensor: "-".into(),
            message: format!("no such file; run `{remedy}` to create it"),
        });
    }
    let stored = Tensor::read_safetensors(path).map_err(|e| {
        let detail = e.to_string();
        let detail = detail.lines().next().unwrap_or_default();
        // tch names the file again; keep only what went wrong.
        let detail = detail.rsplit(": ").next().unwrap_or(detail);
        Error::data(
            path,
            format!(
                "not a readable safetensors file ({detail}: truncated or not a checkpoint); delete it and run `{remedy}` again"
            ),
        )
    })?;
    let stored: HashMap<String, Tensor> = stored.into_iter().collect();
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort_by_key(|n| (rank(n), n.to_string()));
    for name in &names {
        let expected = variables[*name].size();
        let message = match stored.get(*name) {
            None => format!(
                "missing (expected shape {expected:?}); the checkpoint is for another model"
            ),
            Some(t) if t.size() != expected => format!(
                "has shape {:?}, expected {expected:?}; the checkpoint is for another model",
                t.size()
            ),
            Some(_) => continue,
        };
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            tensor: (*name).clone(),
            message,
        });
    }
    if let Some(extra) = stored.keys().filter(|k| !variables.contains_key(*k)).min() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            tensor: extra.clone(),
            message: "is not a tensor of this model; the checkpoint is for another model".into(),
        });
    }
    let _guard = tch::no_grad_guard();
    for (name, mut var) in variables {
        var.copy_(&stored[&name].to_kind(var.kind()));
    }
    Ok(())
}
