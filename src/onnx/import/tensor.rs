//! Decoding tensors: inline, raw or external data (a file beside the model, never outside
//! its folder), every size checked before anything is allocated.

use super::*;

pub(super) fn transpose(w: &WeightTensor) -> std::result::Result<WeightTensor, String> {
    let &[rows, cols] = w.dims.as_slice() else {
        return Err(format!(
            "weight has dims {:?}; a linear layer needs a matrix",
            w.dims
        ));
    };
    let (rows, cols) = (rows as usize, cols as usize);
    let mut values = vec![0.0; w.values.len()];
    for r in 0..rows {
        for c in 0..cols {
            values[c * rows + r] = w.values[r * cols + c];
        }
    }
    Ok(WeightTensor {
        dims: vec![cols as i64, rows as i64],
        values,
    })
}

/// Decodes a tensor's values as f32: float, double, int32 and int64 data, inline (typed
/// fields or raw bytes) or in an external data file in `dir`.
pub fn read_tensor(t: &TensorProto, dir: &Path) -> std::result::Result<WeightTensor, String> {
    let label = if t.name.is_empty() {
        "a constant"
    } else {
        &t.name
    };
    let mut count: usize = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("tensor `{label}` has a negative dimension {d}"));
        }
        count = count
            .checked_mul(d as usize)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(|| format!("tensor `{label}` is too large ({:?})", t.dims))?;
    }
    let (width, kind) = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => (4, "float"),
        Ok(DataType::Double) => (8, "double"),
        Ok(DataType::Int32) => (4, "int32"),
        Ok(DataType::Int64) => (8, "int64"),
        _ => {
            return Err(format!(
                "tensor `{label}` has data type {}; autoprune reads float, double, int32 and int64",
                t.data_type
            ))
        }
    };
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    let values: Vec<f32> = if external {
        let bytes = read_external(t, dir, count * width, label)?;
        decode_le(&bytes, kind)
    } else if !t.raw_data.is_empty() {
        if t.raw_data.len() != count * width {
            return Err(format!(
                "tensor `{label}` holds {} bytes for {count} values of {kind}; the file is corrupt",
                t.raw_data.len()
            ));
        }
        decode_le(&t.raw_data, kind)
    } else {
        let v: Vec<f32> = match kind {
            "float" => t.float_data.clone(),
            "double" => t.double_data.iter().map(|&v| v as f32).collect(),
            "int32" => t.int32_data.iter().map(|&v| v as f32).collect(),
            _ => t.int64_data.iter().map(|&v| v as f32).collect(),
        };
        if v.len() != count {
            return Err(format!(
                "tensor `{label}` holds {} values for dims {:?}; the file is corrupt",
                v.len(),
                t.dims
            ));
        }
        v
    };
    Ok(WeightTensor {
        dims: t.dims.clone(),
        values,
    })
}

pub(super) fn decode_le(bytes: &[u8], kind: &str) -> Vec<f32> {
    match kind {
        "float" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "int32" => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        "double" => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    }
}

/// The bytes of an externally stored tensor: `location` (relative to the model's folder,
/// never outside it), `offset` and `length`.
pub(super) fn read_external(
    t: &TensorProto,
    dir: &Path,
    expected: usize,
    label: &str,
) -> std::result::Result<Vec<u8>, String> {
    let key = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = key("location")
        .ok_or_else(|| format!("tensor `{label}` is stored externally but names no file"))?;
    let relative = Path::new(location);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "tensor `{label}`: external data file `{location}` must be inside the model's folder"
        ));
    }
    let number = |k: &str| -> std::result::Result<Option<u64>, String> {
        key(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!("tensor `{label}`: external data {k} `{v}` is not a number")
                })
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    if let Some(length) = number("length")? {
        if length != expected as u64 {
            return Err(format!(
                "tensor `{label}`: external data length {length} does not match its {expected} bytes"
            ));
        }
    }
    let path = dir.join(relative);
    // A symbolic link inside the folder may point outside it: resolve links first.
    let folder = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let inside = match (folder.canonicalize(), path.canonicalize()) {
        (Ok(folder), Ok(file)) => file.starts_with(folder),
        // Nothing to resolve: opening it fails below with its own message.
        (_, Err(_)) => true,
        (Err(_), Ok(_)) => false,
    };
    if !inside {
        return Err(format!(
            "tensor `{label}`: external data file `{location}` links outside the model's folder; copy the file into it"
        ));
    }
    let mut file = std::fs::File::open(&path).map_err(|e| {
        format!(
            "tensor `{label}`: cannot open its data file {}: {e}",
            path.display()
        )
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size < offset.saturating_add(expected as u64) {
        return Err(format!(
            "tensor `{label}`: {} holds {size} bytes, but the tensor ends at byte {}; the data file is truncated",
            path.display(),
            offset.saturating_add(expected as u64)
        ));
    }
    let mut bytes = vec![0u8; expected];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| {
            format!(
                "tensor `{label}`: {} ends before byte {} ({e}); the data file is truncated",
                path.display(),
                offset + expected as u64
            )
        })?;
    Ok(bytes)
}
