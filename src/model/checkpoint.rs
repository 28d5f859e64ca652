//! Safetensors checkpoints of a `VarStore` (models and agents): written atomically, read back
//! only when every tensor is there with its shape.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Writes every variable of `vs` (on the CPU, sorted by name) to a safetensors file, atomically
/// (see [`crate::fsio`]).
pub fn save_var_store(vs: &nn::VarStore, path: &Path) -> Result<()> {
    save_named(&sorted_variables(vs), path)
}

/// Writes named tensors (contiguous, on the CPU) to a safetensors file, atomically.
pub fn save_named(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    crate::fsio::write_with(path, |tmp| Ok(Tensor::write_safetensors(named, tmp)?))
}

/// Every variable of `vs`, on the CPU and contiguous, sorted by name.
pub fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Like [`save_var_store`], with `metadata` (string pairs) in the file's `__metadata__`
/// header, which safetensors readers keep beside the tensors.
pub fn save_var_store_with(
    vs: &nn::VarStore,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_tensors_with(&sorted_variables(vs), path, metadata)
}

/// Named tensors (contiguous, on the CPU) to a safetensors file with `metadata`, atomically.
pub fn save_tensors_with(
    named: &[(String, Tensor)],
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut data: Vec<u8> = Vec::new();
    for (name, tensor) in named {
        let dtype = match tensor.kind() {
            Kind::Float => "F32",
            Kind::Double => "F64",
            Kind::Half => "F16",
            Kind::BFloat16 => "BF16",
            Kind::Int64 => "I64",
            Kind::Int => "I32",
            Kind::Int8 => "I8",
            Kind::Uint8 => "U8",
            Kind::Bool => "BOOL",
            other => {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    message: format!("cannot store tensors of kind {other:?}"),
                })
            }
        };
        let numel = tensor.numel();
        let start = data.len();
        data.resize(start + numel * tensor.kind().elt_size_in_bytes(), 0);
        tensor.copy_data_u8(&mut data[start..], numel);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": tensor.size(), "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    // The data starts on an 8-byte boundary, as the format recommends.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    crate::fsio::write_atomic(path, &bytes)
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let bad = |what: &str| Error::data(path, format!("not a readable safetensors file ({what})"));
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("no header"))?;
    let len = u64::from_le_bytes(len);
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(bad("the header is longer than the file"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| bad("truncated header"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| bad("the header is not JSON"))?;
    Ok(match header.get("__metadata__") {
        Some(metadata) => serde_json::from_value(metadata.clone())
            .map_err(|_| bad("__metadata__ is not a map of strings"))?,
        None => BTreeMap::new(),
    })
}

/// Loads a safetensors file into `vs`. Every variable must be present with its shape (except
/// those `optional` accepts, which keep their values when missing) and no other tensor may be
/// there; otherwise the error names the first tensor that differs, in the order `rank` gives
/// (ties by name). `remedy` is the command that writes a right file.
pub fn load_var_store(
    vs: &nn::VarStore,
    path: &Path,
    rank: impl Fn(&str) -> (usize, usize),
    optional: impl Fn(&str) -> bool,
    remedy: &str,
) -> Result<()> {
    if path.exists() && !path.is_file() {
        return Err(Error::data(
            path,
            "is not a regular file (a folder?); point the checkpoint at a .safetensors file",
        ));
    }
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
            None if optional(name) => continue,
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
        if let Some(value) = stored.get(&name) {
            var.copy_(&value.to_kind(var.kind()));
        }
    }
    Ok(())
}

/// Metadata keys of an agent checkpoint.
const KIND_KEY: &str = "autoprune.agent";
const CONFIG_KEY: &str = "autoprune.config";

/// Writes a network with what built it: its `kind` and `config` (JSON) in the metadata.
pub fn save_recorded(vs: &nn::VarStore, kind: &str, config: &str, path: &Path) -> Result<()> {
    let metadata = BTreeMap::from([
        (KIND_KEY.to_string(), kind.to_string()),
        (CONFIG_KEY.to_string(), config.to_string()),
    ]);
    save_var_store_with(vs, path, &metadata)
}

/// The config a checkpoint written by [`save_recorded`] records for `kind` (`None` for a file
/// that records none; an error for one of another kind).
pub fn recorded_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &str,
) -> Result<Option<T>> {
    let metadata = read_metadata(path)?;
    let Some(found) = metadata.get(KIND_KEY) else {
        return Ok(None);
    };
    if found != kind {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            tensor: "-".into(),
            message: format!("holds a `{found}` agent, not a `{kind}` one"),
        });
    }
    let text = metadata.get(CONFIG_KEY).map(String::as_str).unwrap_or("{}");
    serde_json::from_str(text).map(Some).map_err(|e| {
        Error::data(
            path,
            format!("the recorded `{kind}` config does not parse ({e})"),
        )
    })
}
