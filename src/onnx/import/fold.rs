//! Shape arithmetic folded into constants. PyTorch's exporter, with `optimize=False`, writes
//! the sizes it needs as small computations (`Shape`, `Gather`, `Unsqueeze`, `Concat`,
//! `Expand`, `ConstantOfShape`, ...) on the weights' and activations' shapes. Every shape is
//! known at import, so each such node becomes a constant here and the ops that read it
//! (a Reshape's target, a Conv's zero bias) see plain values.

use super::attributes::Attributes;
use super::*;

/// Largest tensor folding may create (elements): shapes and small constants only.
const MAX_FOLDED: usize = 1 << 24;

/// The ops folded when all their inputs are constants (`Shape` also of an activation).
pub(super) const FOLDED_OPS: [&str; 18] = [
    "Transpose",
    "Shape",
    "Size",
    "Cast",
    "CastLike",
    "Expand",
    "Concat",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Gather",
    "Slice",
    "ConstantOfShape",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Identity",
];

impl<'a> Importer<'a> {
    /// Folds `node` into a constant when it computes on constants only (or on an activation's
    /// shape); false when it is data flow for [`Importer::convert`].
    pub(super) fn fold(&mut self, node: &'a NodeProto) -> Result<bool> {
        if !FOLDED_OPS.contains(&node.op_type.as_str()) {
            return Ok(false);
        }
        let attrs = Attributes { node };
        // Shape and Size of an activation: its per-sample shape after the batch.
        let shape_of_node = match node.input.first().and_then(|n| self.values.get(n)) {
            Some(Value::Node(i)) if matches!(node.op_type.as_str(), "Shape" | "Size") => {
                let mut dims = vec![self.batch as f32];
                dims.extend(self.shapes[*i].iter().map(|&d| d as f32));
                Some(dims)
            }
            _ => None,
        };
        let data_inputs = node
            .input
            .iter()
            .filter(|n| !n.is_empty())
            .filter(|n| !matches!(self.values.get(*n), Some(Value::Const(_)) | None))
            .count();
        // CastLike takes only the type of its second input.
        let data_allowed = usize::from(node.op_type == "CastLike" && node.input.len() == 2);
        if shape_of_node.is_none() && data_inputs > data_allowed {
            return Ok(false);
        }
        if node.op_type == "CastLike"
            && matches!(
                node.input.first().and_then(|n| self.values.get(n)),
                Some(
                    Value::Node(_)
                        | Value::Last(_)
                        | Value::Grouped { .. }
                        | Value::Swapped { .. }
                        | Value::Seq(_)
                )
            )
        {
            return Ok(false);
        }
        let mut inputs = Vec::new();
        for slot in 0..node.input.len() {
            inputs.push(self.const_value(node, slot)?);
        }
        let input = |slot: usize| -> Result<WeightTensor> {
            inputs.get(slot).cloned().flatten().ok_or_else(|| {
                self.node_error(node, format!("input {slot} must be a constant here"))
            })
        };
        let fail = |e: String| self.node_error(node, e);
        let out = match node.op_type.as_str() {
            "Shape" | "Size" => {
                let dims: Vec<f32> = match shape_of_node {
                    Some(dims) => dims,
                    None => input(0)?.dims.iter().map(|&d| d as f32).collect(),
                };
                if node.op_type == "Size" {
                    scalar(dims.iter().product())
                } else {
                    let rank = dims.len() as i64;
                    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                    let start = clamp(attrs.int("start").unwrap_or(0));
                    let end = clamp(attrs.int("end").unwrap_or(rank));
                    vector(dims[start..end.max(start)].to_vec())
                }
            }
            "Identity" | "CastLike" => input(0)?,
            "Transpose" => {
                let t = input(0)?;
                let perm = attrs
                    .ints("perm")
                    .unwrap_or_else(|| (0..t.dims.len() as i64).rev().collect());
                permute(&t, &perm).map_err(fail)?
            }
            "Cast" => {
                let mut t = input(0)?;
                let integer = [
                    DataType::Int8,
                    DataType::Int16,
                    DataType::Int32,
                    DataType::Int64,
                    DataType::Uint8,
                ]
                .iter()
                .any(|&d| attrs.int("to") == Some(d as i64));
                if integer {
                    t.values.iter_mut().for_each(|v| *v = v.trunc());
                }
                t
            }
            "Expand" => {
                let shape = dims_of(&input(1)?).map_err(fail)?;
                let t = input(0)?;
                let target = broadcast_dims(&t.dims, &shape).map_err(fail)?;
                broadcast_to(&t, &target).map_err(fail)?
            }
            "Concat" => {
                let parts = (0..node.input.len())
                    .map(input)
                    .collect::<Result<Vec<_>>>()?;
                concat(&parts, attrs.int("axis").unwrap_or(0)).map_err(fail)?
            }
            "Reshape" => {
                let t = input(0)?;
                let shape = dims_of(&input(1)?).map_err(fail)?;
                let dims = reshape_dims(&t.dims, &shape, attrs.int("allowzero").unwrap_or(0))
                    .map_err(fail)?;
                WeightTensor {
                    dims,
                    values: t.values,
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let mut t = input(0)?;
                let axes = match inputs.get(1).cloned().flatten() {
                    Some(a) => dims_of(&a).map_err(fail)?,
                    None => attrs.ints("axes").unwrap_or_default(),
                };
                t.dims = if node.op_type == "Unsqueeze" {
                    unsqueeze(&t.dims, &axes).map_err(fail)?
                } else {
                    squeeze(&t.dims, &axes).map_err(fail)?
                };
                t
            }
            "Gather" => {
                let indices = input(1)?;
                gather(&input(0)?, &indices, attrs.int("axis").unwrap_or(0)).map_err(fail)?
            }
            "Slice" => {
                let t = input(0)?;
                let get = |slot: usize| -> Result<Option<Vec<i64>>> {
                    match inputs.get(slot).cloned().flatten() {
                        Some(v) => dims_of(&v).map(Some).map_err(fail),
                        None => Ok(None),
                    }
                };
                let (starts, ends) = (get(1)?.unwrap_or_default(), get(2)?.unwrap_or_default());
                slice(&t, &starts, &ends, get(3)?, get(4)?).map_err(fail)?
            }
            "ConstantOfShape" => {
                let dims = dims_of(&input(0)?).map_err(fail)?;
                let value = match attrs.tensor("value") {
                    Some(t) => *self.read(node, t)?.values.first().unwrap_or(&0.0),
                    None => 0.0,
                };
                let count = checked_count(&dims).map_err(fail)?;
                WeightTensor {
                    dims,
                    values: vec![value; count],
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, b) = (input(0)?, input(1)?);
                let op: fn(f32, f32) -> f32 = match node.op_type.as_str() {
                    "Add" => |x, y| x + y,
                    "Sub" => |x, y| x - y,
                    "Mul" => |x, y| x * y,
                    _ => |x, y| x / y,
                };
                binary(&a, &b, op).map_err(fail)?
            }
            _ => return Ok(false),
        };
        let name = node.output.first().cloned().unwrap_or_default();
        self.folded.insert(name.clone(), out);
        self.values.insert(name.clone(), Value::Const(name));
        Ok(true)
    }
}

fn scalar(v: f32) -> WeightTensor {
    WeightTensor {
        dims: vec![],
        values: vec![v],
    }
}

fn vector(values: Vec<f32>) -> WeightTensor {
    WeightTensor {
        dims: vec![values.len() as i64],
        values,
    }
}

/// A constant's values as whole numbers (a shape, axes, indices).
pub(super) fn dims_of(t: &WeightTensor) -> std::result::Result<Vec<i64>, String> {
    t.values
        .iter()
        .map(|&v| {
            if v.fract() == 0.0 {
                Ok(v as i64)
            } else {
                Err(format!("expects whole numbers, got {v}"))
            }
        })
        .collect()
}

fn checked_count(dims: &[i64]) -> std::result::Result<usize, String> {
    dims.iter().try_fold(1usize, |acc, &d| {
        if d < 0 {
            return Err(format!("negative size {d} in {dims:?}"));
        }
        acc.checked_mul(d as usize)
            .filter(|&c| c <= MAX_FOLDED)
            .ok_or_else(|| format!("a folded constant of shape {dims:?} is too large"))
    })
}

fn strides(dims: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as usize;
    }
    s
}

/// Numpy's broadcast of two shapes.
fn broadcast_dims(a: &[i64], b: &[i64]) -> std::result::Result<Vec<i64>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let y = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y || y == 1 => Ok(x),
                (1, y) => Ok(y),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// `t` repeated to `target` (which `t`'s shape broadcasts to).
fn broadcast_to(t: &WeightTensor, target: &[i64]) -> std::result::Result<WeightTensor, String> {
    let count = checked_count(target)?;
    let rank = target.len();
    let pad = rank - t.dims.len();
    let dims: Vec<i64> = std::iter::repeat_n(1, pad)
        .chain(t.dims.iter().copied())
        .collect();
    let (src, dst) = (strides(&dims), strides(target));
    let values = (0..count)
        .map(|flat| {
            let mut at = 0;
            for axis in 0..rank {
                let coord = flat / dst[axis] % target[axis] as usize;
                if dims[axis] != 1 {
                    at += coord * src[axis];
                }
            }
            t.values[at]
        })
        .collect();
    Ok(WeightTensor {
        dims: target.to_vec(),
        values,
    })
}

fn binary(
    a: &WeightTensor,
    b: &WeightTensor,
    op: fn(f32, f32) -> f32,
) -> std::result::Result<WeightTensor, String> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let (a, b) = (broadcast_to(a, &dims)?, broadcast_to(b, &dims)?);
    Ok(WeightTensor {
        dims,
        values: a
            .values
            .iter()
            .zip(&b.values)
            .map(|(&x, &y)| op(x, y))
            .collect(),
    })
}

fn axis_of(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

fn concat(parts: &[WeightTensor], axis: i64) -> std::result::Result<WeightTensor, String> {
    let first = parts.first().ok_or("concatenates nothing")?;
    let axis = axis_of(axis, first.dims.len().max(1))?;
    let as_dims = |t: &WeightTensor| -> Vec<i64> {
        if t.dims.is_empty() {
            vec![1]
        } else {
            t.dims.clone()
        }
    };
    let base = as_dims(first);
    let mut dims = base.clone();
    dims[axis] = 0;
    for p in parts {
        let d = as_dims(p);
        let fits = d.len() == base.len()
            && d.iter()
                .zip(&base)
                .enumerate()
                .all(|(i, (x, y))| i == axis || x == y);
        if !fits {
            return Err(format!("concatenates shapes {:?} and {:?}", base, d));
        }
        dims[axis] += d[axis];
    }
    let outer: usize = dims[..axis].iter().product::<i64>() as usize;
    let mut values = Vec::with_capacity(checked_count(&dims)?);
    for o in 0..outer {
        for p in parts {
            let d = as_dims(p);
            let block: usize = d[axis..].iter().product::<i64>() as usize;
            values.extend_from_slice(&p.values[o * block..(o + 1) * block]);
        }
    }
    Ok(WeightTensor { dims, values })
}

fn reshape_dims(
    from: &[i64],
    shape: &[i64],
    allowzero: i64,
) -> std::result::Result<Vec<i64>, String> {
    let count: i64 = from.iter().product();
    let mut dims: Vec<i64> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d == 0 && allowzero == 0 {
                from.get(i).copied().unwrap_or(0)
            } else {
                d
            }
        })
        .collect();
    let known: i64 = dims.iter().filter(|&&d| d != -1).product();
    match dims.iter().filter(|&&d| d == -1).count() {
        0 => {}
        1 if known > 0 && count % known == 0 => {
            let free = dims.iter().position(|&d| d == -1).unwrap_or(0);
            dims[free] = count / known;
        }
        _ => return Err(format!("cannot reshape {from:?} to {shape:?}")),
    }
    if dims.iter().product::<i64>() != count || dims.iter().any(|&d| d < 0) {
        return Err(format!("cannot reshape {from:?} to {shape:?}"));
    }
    Ok(dims)
}

fn unsqueeze(dims: &[i64], axes: &[i64]) -> std::result::Result<Vec<i64>, String> {
    let rank = dims.len() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| axis_of(a, rank))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    let mut out = dims.to_vec();
    for a in axes {
        out.insert(a, 1);
    }
    Ok(out)
}

fn squeeze(dims: &[i64], axes: &[i64]) -> std::result::Result<Vec<i64>, String> {
    if axes.is_empty() {
        return Ok(dims.iter().copied().filter(|&d| d != 1).collect());
    }
    let axes = axes
        .iter()
        .map(|&a| axis_of(a, dims.len()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if axes.iter().any(|&a| dims[a] != 1) {
        return Err(format!(
            "squeezes axes {axes:?} of shape {dims:?}, not all of size 1"
        ));
    }
    Ok(dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

fn gather(
    t: &WeightTensor,
    indices: &WeightTensor,
    axis: i64,
) -> std::result::Result<WeightTensor, String> {
    let axis = axis_of(axis, t.dims.len())?;
    let size = t.dims[axis];
    let idx = dims_of(indices)?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + size } else { i };
            if (0..size).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!("index {i} is out of range for size {size}"))
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let outer: usize = t.dims[..axis].iter().product::<i64>() as usize;
    let inner: usize = t.dims[axis + 1..].iter().product::<i64>() as usize;
    let mut values = Vec::new();
    for o in 0..outer {
        for &i in &idx {
            let at = (o * size as usize + i) * inner;
            values.extend_from_slice(&t.values[at..at + inner]);
        }
    }
    let mut dims = t.dims[..axis].to_vec();
    dims.extend_from_slice(&indices.dims);
    dims.extend_from_slice(&t.dims[axis + 1..]);
    Ok(WeightTensor { dims, values })
}

/// ONNX's Slice on a vector (the shapes it is used on).
fn slice(
    t: &WeightTensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> std::result::Result<WeightTensor, String> {
    let one_axis = t.dims.len() == 1
        && starts.len() == 1
        && ends.len() == 1
        && axes
            .as_ref()
            .is_none_or(|a| a.len() == 1 && axis_of(a[0], 1).is_ok())
        && steps.as_ref().is_none_or(|s| s.as_slice() == [1]);
    if !one_axis {
        return Err(format!(
            "Slice of a constant of shape {:?} is supported only on a vector with step 1",
            t.dims
        ));
    }
    let n = t.dims[0];
    let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
    let (s, e) = (clamp(starts[0]), clamp(ends[0]));
    Ok(vector(t.values[s..e.max(s)].to_vec()))
}

/// `t` with its axes in the order `perm` (ONNX's Transpose).
fn permute(t: &WeightTensor, perm: &[i64]) -> std::result::Result<WeightTensor, String> {
    let rank = t.dims.len();
    let mut seen = vec![false; rank];
    let axes = perm
        .iter()
        .map(|&p| {
            let a = axis_of(p, rank)?;
            if std::mem::replace(&mut seen[a], true) {
                return Err(format!("perm {perm:?} repeats axis {p}"));
            }
            Ok(a)
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    if axes.len() != rank {
        return Err(format!("perm {perm:?} does not order the {rank} axes"));
    }
    let dims: Vec<i64> = axes.iter().map(|&a| t.dims[a]).collect();
    let (src, dst) = (strides(&t.dims), strides(&dims));
    let mut values = vec![0.0; t.values.len()];
    for (flat, v) in values.iter_mut().enumerate() {
        let at: usize = (0..rank)
            .map(|k| flat / dst[k] % dims[k] as usize * src[axes[k]])
            .sum();
        *v = t.values[at];
    }
    Ok(WeightTensor { dims, values })
}
