//! The latency model: what a channel-pruned model costs in time on one device, predicted from
//! a lookup table per node, as NetAdapt does.
//!
//! For each node whose input or output channel count a channel policy can change, the table
//! holds the node's latency on a grid of channel counts (inputs × outputs for a conv or linear
//! layer, one axis for everything else), made monotone and interpolated bilinearly. A whole
//! model's latency is `fixed_ms + scale · Σ node latency`, the two numbers fitted to whole
//! models timed end to end (the dense one and random policies), since nodes timed alone miss
//! what a whole model shares. A table belongs to one key (device, threads, batch size and the
//! model's fingerprint); it is never used for another.
//!
//! Measuring is the evaluator's job (it needs tch): [`LatencyTable::build`] takes the timing
//! as a closure over [`probe_graph`]s, so this module stays pure.

use crate::error::{Error, Result};
use crate::graph::{GraphBuilder, ModelGraph, Op};
use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a table was measured for. A table is used only for its own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyKey {
    /// `cpu (<processor>)` or `cuda:N`.
    pub device: String,
    /// libtorch's CPU threads.
    pub threads: usize,
    /// Samples per forward pass.
    pub batch: usize,
    /// [`fingerprint`] of the model graph.
    pub fingerprint: String,
    /// The executor's memory layout for feature maps (`channels-last`; tables measured
    /// before it had one ran `nchw`, which times differently).
    #[serde(default = "nchw")]
    pub layout: String,
}

fn nchw() -> String {
    "nchw".into()
}

/// The layout the executor runs feature maps in (see [`crate::model::channels_last`]).
pub const LAYOUT: &str = "channels-last";

impl std::fmt::Display for LatencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} thread(s), batch {}, model {}, layout {}",
            self.device, self.threads, self.batch, self.fingerprint, self.layout
        )
    }
}

/// One node's latency over a grid of its input and output sizes (channels, or features for a
/// linear layer). An axis the policy cannot change has one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTable {
    pub node: String,
    /// Input sizes, increasing.
    pub inputs: Vec<usize>,
    /// Output sizes, increasing.
    pub outputs: Vec<usize>,
    /// Milliseconds, `inputs.len()` rows of `outputs.len()`.
    pub ms: Vec<f64>,
}

impl NodeTable {
    fn at(&self, i: usize, o: usize) -> f64 {
        self.ms[i * self.outputs.len() + o]
    }

    /// Makes the table non-decreasing along both axes: along each axis, the mean of the
    /// running maximum from below and the running minimum from above (both monotone, and so
    /// is their mean). Applied to rows, then columns; the column pass keeps rows monotone.
    pub fn make_monotone(&mut self) {
        let (rows, cols) = (self.inputs.len(), self.outputs.len());
        for r in 0..rows {
            let line: Vec<f64> = (0..cols).map(|c| self.ms[r * cols + c]).collect();
            for (c, v) in monotone(&line).into_iter().enumerate() {
                self.ms[r * cols + c] = v;
            }
        }
        for c in 0..cols {
            let line: Vec<f64> = (0..rows).map(|r| self.ms[r * cols + c]).collect();
            for (r, v) in monotone(&line).into_iter().enumerate() {
                self.ms[r * cols + c] = v;
            }
        }
    }

    /// Bilinear interpolation; sizes outside the grid take the nearest edge.
    pub fn predict(&self, input: usize, output: usize) -> f64 {
        let (i0, i1, ti) = bracket(&self.inputs, input);
        let (o0, o1, to) = bracket(&self.outputs, output);
        let low = self.at(i0, o0) * (1.0 - to) + self.at(i0, o1) * to;
        let high = self.at(i1, o0) * (1.0 - to) + self.at(i1, o1) * to;
        low * (1.0 - ti) + high * ti
    }
}

/// The mean of the running maximum and the reversed running minimum.
fn monotone(line: &[f64]) -> Vec<f64> {
    let mut up = line.to_vec();
    for i in 1..up.len() {
        up[i] = up[i].max(up[i - 1]);
    }
    let mut down = line.to_vec();
    for i in (0..down.len().saturating_sub(1)).rev() {
        down[i] = down[i].min(down[i + 1]);
    }
    up.iter().zip(&down).map(|(a, b)| 0.5 * (a + b)).collect()
}

/// The grid points around `x` and the weight of the upper one.
fn bracket(grid: &[usize], x: usize) -> (usize, usize, f64) {
    let last = grid.len() - 1;
    if x <= grid[0] {
        return (0, 0, 0.0);
    }
    if x >= grid[last] {
        return (last, last, 0.0);
    }
    let upper = grid.partition_point(|&g| g < x);
    let (a, b) = (grid[upper - 1], grid[upper]);
    (upper - 1, upper, (x - a) as f64 / (b - a) as f64)
}

/// A model's latency table for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    pub key: LatencyKey,
    /// Measured latency of the dense model, end to end.
    pub dense_ms: f64,
    /// Latency no policy changes: the intercept of the calibration (see [`LatencyTable::calibrate`]).
    pub fixed_ms: f64,
    /// How much of the nodes' summed table latency a whole model shows: the calibration's
    /// slope (1 before calibrating).
    #[serde(default = "one")]
    pub scale: f64,
    pub nodes: Vec<NodeTable>,
}

fn one() -> f64 {
    1.0
}

/// A node's input and output size (first dimension of a sample's shape) under a policy.
pub type Sizes = (usize, usize);

impl LatencyTable {
    /// Measures a table: `measure(node, input, output)` times node `node` at those sizes
    /// (through [`probe_graph`]) and `dense_ms` is the dense model's measured latency.
    /// `varying` gives each node's sizes with every channel kept and with every group at its
    /// smallest, which tells which axes a policy can change; `grid` is the points per axis.
    pub fn build(
        graph: &ModelGraph,
        key: LatencyKey,
        varying: (&[Sizes], &[Sizes]),
        grid: usize,
        dense_ms: f64,
        mut measure: impl FnMut(NodeIndex, usize, usize) -> Result<f64>,
    ) -> Result<Self> {
        let (dense, smallest) = varying;
        let mut nodes = Vec::new();
        let mut predicted_dense = 0.0;
        for &i in graph.order() {
            let node = graph.node(i);
            let (input, output) = dense[i.index()];
            let (min_in, min_out) = smallest[i.index()];
            if matches!(node.op, Op::Input { .. } | Op::Output | Op::Flatten)
                || (min_in == input && min_out == output)
            {
                continue;
            }
            let two_sided =
                matches!(node.op, Op::Conv2d { .. } | Op::Linear { .. }) && !node.op.is_depthwise();
            let inputs = axis(min_in, input, grid);
            let outputs = if two_sided {
                axis(min_out, output, grid)
            } else {
                vec![output]
            };
            let mut ms = Vec::with_capacity(inputs.len() * outputs.len());
            for &a in &inputs {
                for &b in &outputs {
                    let b = if two_sided { b } else { a };
                    ms.push(measure(i, a, b)?);
                }
            }
            let mut table = NodeTable {
                node: node.name.clone(),
                inputs,
                outputs,
                ms,
            };
            table.make_monotone();
            predicted_dense += table.predict(input, output);
            nodes.push(table);
        }
        Ok(Self {
            key,
            dense_ms,
            fixed_ms: dense_ms - predicted_dense,
            scale: 1.0,
            nodes,
        })
    }

    /// The nodes' summed table latency (ms) for `sizes` (by node index), using the tables
    /// listed in `index` (see [`LatencyTable::index`]).
    pub fn node_sum(&self, index: &[Option<usize>], sizes: &[Sizes]) -> f64 {
        index
            .iter()
            .zip(sizes)
            .filter_map(|(t, &(i, o))| t.map(|t| self.nodes[t].predict(i, o)))
            .sum()
    }

    /// Predicted latency (ms) of a model whose nodes have `sizes`: `fixed_ms + scale ·
    /// node_sum`. Never below 0.
    pub fn predict(&self, index: &[Option<usize>], sizes: &[Sizes]) -> f64 {
        (self.fixed_ms + self.scale * self.node_sum(index, sizes)).max(0.0)
    }

    /// Fits `fixed_ms` and `scale` by least squares to whole models timed end to end:
    /// `samples` pairs each model's [`LatencyTable::node_sum`] with its measured latency.
    /// Nodes timed alone miss what a whole model shares (caches, the graph's own overhead
    /// per node), and this is where that is learned. The slope stays positive, so the
    /// prediction stays monotone; with fewer than two distinct sums nothing changes.
    pub fn calibrate(&mut self, samples: &[(f64, f64)]) {
        let n = samples.len() as f64;
        if samples.len() < 2 {
            return;
        }
        let mean_x = samples.iter().map(|s| s.0).sum::<f64>() / n;
        let mean_y = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let sxx: f64 = samples.iter().map(|s| (s.0 - mean_x).powi(2)).sum();
        let sxy: f64 = samples
            .iter()
            .map(|s| (s.0 - mean_x) * (s.1 - mean_y))
            .sum();
        if sxx <= 1e-12 * mean_x.abs().max(1.0) {
            return;
        }
        let slope = (sxy / sxx).max(1e-3);
        self.scale = slope;
        self.fixed_ms = mean_y - slope * mean_x;
    }

    /// For every node of `graph`, the position of its table (None: part of the fixed cost).
    /// Fails when the table names a node the graph lacks.
    pub fn index(&self, graph: &ModelGraph) -> Result<Vec<Option<usize>>> {
        let mut index = vec![None; graph.graph().node_count()];
        for (t, table) in self.nodes.iter().enumerate() {
            let node = graph.find(&table.node).ok_or_else(|| {
                Error::graph(
                    &table.node,
                    "the latency table names a node this model does not have",
                )
            })?;
            index[node.index()] = Some(t);
        }
        Ok(index)
    }

    /// Reads a cached table; `Ok(None)` when the file does not exist. A table measured for
    /// another key is refused, naming both keys.
    pub fn load(path: &Path, key: &LatencyKey) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let table: LatencyTable = serde_json::from_str(&text)
            .map_err(|e| Error::data(path, format!("not a latency table: {e}")))?;
        if table.key != *key {
            return Err(Error::data(
                path,
                format!(
                    "this latency table was measured for {}, not for this run's {key}; delete it or set latency.table to another file",
                    table.key
                ),
            ));
        }
        let shapes_ok = table.nodes.iter().all(|n| {
            !n.inputs.is_empty()
                && !n.outputs.is_empty()
                && n.ms.len() == n.inputs.len() * n.outputs.len()
                && n.inputs.windows(2).all(|w| w[0] < w[1])
                && n.outputs.windows(2).all(|w| w[0] < w[1])
                && n.ms.iter().all(|v| v.is_finite())
        });
        let numbers_ok = table.dense_ms.is_finite()
            && table.fixed_ms.is_finite()
            && table.scale.is_finite()
            && table.scale > 0.0;
        if !shapes_ok || !numbers_ok {
            return Err(Error::data(
                path,
                "the latency table is damaged (grids or values); delete it to measure again",
            ));
        }
        Ok(Some(table))
    }

    /// Writes the table (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::data(path, format!("cannot encode the latency table: {e}")))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        crate::fsio::write_atomic(path, text.as_bytes())
    }
}

/// `points` sizes from `low` to `high`, evenly spaced and distinct (at least the two ends).
fn axis(low: usize, high: usize, points: usize) -> Vec<usize> {
    let steps = points.max(2) - 1;
    let mut out: Vec<usize> = (0..=steps)
        .map(|k| low + ((high - low) as f64 * k as f64 / steps as f64).round() as usize)
        .collect();
    out.dedup();
    out
}

/// A stable fingerprint of a model graph (ops, shapes and edges): FNV-1a over its JSON form.
pub fn fingerprint(graph: &ModelGraph) -> String {
    // The graph's structure and costs; why layers are pinned is derived from them.
    let mut view = graph.to_json();
    view.pinned.clear();
    let json = serde_json::to_string(&view).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in json.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A graph holding node `node` alone, resized to `input` and `output` (the sizes of its
/// input's and its own first dimension), fed by an input of the matching shape: what the
/// evaluator times for one table point. An Add reads its input twice.
pub fn probe_graph(
    graph: &ModelGraph,
    node: NodeIndex,
    input: usize,
    output: usize,
) -> Result<ModelGraph> {
    let n = graph.node(node);
    let source = graph
        .inputs(node)
        .first()
        .copied()
        .ok_or_else(|| Error::graph(&n.name, "a node without inputs has no latency table"))?;
    let mut shape = graph.node(source).out_shape.clone();
    shape[0] = input;
    let op = match &n.op {
        Op::Conv2d { .. } | Op::Linear { .. } => super::units::resize(&n.op, input, output),
        Op::BatchNorm { .. } => Op::BatchNorm { features: input },
        other => other.clone(),
    };
    let mut builder = GraphBuilder::new();
    let x = builder.add("input", Op::Input { shape }, &[]);
    // A Concat is timed copying its whole input size from one input.
    let inputs = if matches!(n.op, Op::Add) {
        vec![x, x]
    } else {
        vec![x]
    };
    let y = builder.add("probe", op, &inputs);
    builder.add("output", Op::Output, &[y]);
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(inputs: Vec<usize>, outputs: Vec<usize>, ms: Vec<f64>) -> NodeTable {
        NodeTable {
            node: "n".into(),
            inputs,
            outputs,
            ms,
        }
    }

    #[test]
    fn noisy_tables_become_monotone_and_interpolate_monotonically() {
        // A noisy grid: the measurement at (8, 8) dips below its neighbours.
        let mut t = table(
            vec![1, 8, 16],
            vec![1, 8, 16],
            vec![1.0, 2.0, 3.0, 2.0, 1.5, 4.0, 3.0, 5.0, 4.5],
        );
        t.make_monotone();
        for a in 0..3 {
            for b in 0..2 {
                assert!(t.at(a, b) <= t.at(a, b + 1), "{t:?}");
                assert!(t.at(b, a) <= t.at(b + 1, a), "{t:?}");
            }
        }
        // Every size between the grid points, both axes: never decreasing.
        for input in 0..=18 {
            let mut last = f64::NEG_INFINITY;
            for output in 0..=18 {
                let v = t.predict(input, output);
                assert!(v >= last - 1e-12, "({input}, {output}): {v} < {last}");
                last = v;
            }
        }
        for output in 0..=18 {
            let mut last = f64::NEG_INFINITY;
            for input in 0..=18 {
                let v = t.predict(input, output);
                assert!(v >= last - 1e-12);
                last = v;
            }
        }
    }

    #[test]
    fn interpolation_hits_the_grid_and_the_middle() {
        let t = table(vec![2, 6], vec![10], vec![1.0, 3.0]);
        assert_eq!(t.predict(2, 10), 1.0);
        assert_eq!(t.predict(6, 10), 3.0);
        assert!((t.predict(4, 10) - 2.0).abs() < 1e-12);
        assert_eq!(t.predict(1, 10), 1.0);
        assert_eq!(t.predict(9, 10), 3.0);
    }

    #[test]
    fn calibration_recovers_a_line_and_keeps_the_slope_positive() {
        let mut t = LatencyTable {
            key: LatencyKey {
                device: "d".into(),
                threads: 1,
                batch: 1,
                fingerprint: "f".into(),
                layout: LAYOUT.into(),
            },
            dense_ms: 3.0,
            fixed_ms: 0.0,
            scale: 1.0,
            nodes: Vec::new(),
        };
        t.calibrate(&[(1.0, 0.7), (2.0, 1.2), (4.0, 2.2)]);
        assert!((t.scale - 0.5).abs() < 1e-12 && (t.fixed_ms - 0.2).abs() < 1e-12);
        // Latency that falls as the tables rise is noise: the slope stays positive.
        t.calibrate(&[(1.0, 2.0), (2.0, 1.0)]);
        assert!(t.scale > 0.0);
        // One point, or one sum, says nothing about a slope.
        let before = t.clone();
        t.calibrate(&[(1.0, 5.0)]);
        t.calibrate(&[(1.0, 5.0), (1.0, 6.0)]);
        assert_eq!(t, before);
    }

    #[test]
    fn axes_span_the_range_without_repeats() {
        assert_eq!(axis(1, 16, 4), vec![1, 6, 11, 16]);
        assert_eq!(axis(1, 3, 8), vec![1, 2, 3]);
        assert_eq!(axis(4, 4, 8), vec![4]);
    }
}
