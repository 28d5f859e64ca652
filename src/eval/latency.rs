//! Measuring latency on the evaluator's device: a model's median forward time, the latency
//! table of the cost model (one probe graph per table point), and where tables are cached.

use crate::config::LatencySpec;
use crate::device::device_name;
use crate::error::Result;
use crate::graph::ModelGraph;
use crate::model::GraphNet;
use crate::prune::{fingerprint, probe_graph, CostModel, Granularity, LatencyKey, LatencyTable};
use crate::runlog::Progress;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Warm-up runs before every timing.
const WARMUP: usize = 2;

/// Median wall time (ms) of `repeats` inference passes of `net` on `input`, after warm-up.
pub fn time_forward(net: &GraphNet, input: &Tensor, repeats: usize) -> f64 {
    let _guard = tch::no_grad_guard();
    let mut times = Vec::with_capacity(repeats);
    for run in 0..WARMUP + repeats.max(1) {
        let ms = timed_pass(net, input);
        if run >= WARMUP {
            times.push(ms);
        }
    }
    median(&mut times)
}

/// Median wall times (ms) of two models' inference passes on `input`, timed alternately
/// (a, b, a, b, ...) after warm-up, so that drift in the machine's speed (load, clock)
/// reaches both alike.
pub fn time_pair(a: &GraphNet, b: &GraphNet, input: &Tensor, repeats: usize) -> (f64, f64) {
    let _guard = tch::no_grad_guard();
    let (mut ta, mut tb) = (Vec::with_capacity(repeats), Vec::with_capacity(repeats));
    for run in 0..WARMUP + repeats.max(1) {
        let (ma, mb) = (timed_pass(a, input), timed_pass(b, input));
        if run >= WARMUP {
            ta.push(ma);
            tb.push(mb);
        }
    }
    (median(&mut ta), median(&mut tb))
}

/// One inference pass, waited for on a GPU, in milliseconds.
fn timed_pass(net: &GraphNet, input: &Tensor) -> f64 {
    let started = Instant::now();
    let out = net.forward_t(input, false);
    sync(net.device());
    drop(out);
    started.elapsed().as_secs_f64() * 1e3
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => 0.5 * (values[n / 2 - 1] + values[n / 2]),
    }
}

/// A fixed random input batch for timing a model with this input shape: images, or the
/// token ids a language model's embedding reads.
pub fn timing_input(graph: &ModelGraph, batch: usize, device: Device) -> Tensor {
    let mut shape = vec![batch as i64];
    shape.extend(graph.input_shape().iter().map(|&d| d as i64));
    let _guard = tch::no_grad_guard();
    let vocab = graph.order().iter().find_map(|&i| match graph.node(i).op {
        crate::graph::Op::Embedding { vocab, .. } => Some(vocab as i64),
        _ => None,
    });
    match vocab {
        Some(vocab) => Tensor::randint(vocab, shape.as_slice(), (Kind::Int64, device)),
        None => Tensor::randn(shape.as_slice(), (Kind::Float, device)),
    }
}

/// The device as a table key names it: `cpu (<processor>)`, or `cuda:N`.
pub fn device_label(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({})", cpu_model()),
        other => device_name(other),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The key of a table for `graph` measured now on `device` (with libtorch's current threads).
pub fn key_for(graph: &ModelGraph, device: Device, batch: usize) -> LatencyKey {
    LatencyKey {
        device: device_label(device),
        threads: tch::get_num_threads().max(1) as usize,
        batch,
        fingerprint: fingerprint(graph),
        layout: crate::prune::LAYOUT.into(),
    }
}

/// Where the table for `key` is cached: `latency.table`, or beside the model's weights
/// (`weights`), named by the env, the fingerprint, the device, the threads and the batch:
/// `<env>.latency-<fingerprint>-<device>-t<threads>-b<batch>.json`.
pub fn table_path(
    spec: &LatencySpec,
    env_name: &str,
    weights: &std::path::Path,
    key: &LatencyKey,
) -> PathBuf {
    if let Some(path) = &spec.table {
        return path.clone();
    }
    let device: String = key
        .device
        .split(" (")
        .next()
        .unwrap_or("cpu")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    weights.with_file_name(format!(
        "{env_name}.latency-{}-{device}-t{}-b{}.json",
        &key.fingerprint[..key.fingerprint.len().min(12)],
        key.threads,
        key.batch
    ))
}

/// The latency table of `graph` for `key`: the cached one at `path` when its key matches,
/// else measured on `device` and cached. Measuring times each node's probe graph at every
/// grid point, then calibrates the sum against whole models timed end to end: the dense one
/// and `spec.calibration` random channel policies (each timed alternately with the dense
/// model, so that drift in the machine's speed cancels). Tables are always for channel
/// pruning, whatever the env prunes. Returns the table and whether it was measured now.
pub fn load_or_measure(
    graph: &ModelGraph,
    spec: &LatencySpec,
    key: LatencyKey,
    path: &std::path::Path,
    device: Device,
    progress: &Progress,
) -> Result<(LatencyTable, bool)> {
    if let Some(table) = LatencyTable::load(path, &key)? {
        return Ok((table, false));
    }
    let costs = CostModel::new(graph, Granularity::Channel);
    let units = costs.units().len();
    let dense = costs.node_sizes(&vec![1.0; units]);
    let smallest = costs.node_sizes(&vec![0.0; units]);
    progress.println(&format!(
        "measuring the latency table on {} ({} thread(s), batch {}) into {}",
        key.device,
        key.threads,
        key.batch,
        path.display()
    ));
    let varying = graph
        .order()
        .iter()
        .filter(|i| dense[i.index()] != smallest[i.index()])
        .count();
    let bar = progress.bar((varying + spec.calibration) as u64, "latency table");
    let model = GraphNet::new(graph.clone(), device);
    let input = timing_input(graph, key.batch, device);
    let dense_ms = time_forward(&model, &input, spec.model_repeats);
    let mut last = None;
    let batch = key.batch;
    let mut table = LatencyTable::build(
        graph,
        key,
        (&dense, &smallest),
        spec.grid,
        dense_ms,
        |node, input, output| {
            if last != Some(node) {
                last = Some(node);
                bar.inc(1);
            }
            let probe = GraphNet::new(probe_graph(graph, node, input, output)?, device);
            let x = timing_input(probe.graph(), batch, device);
            Ok(time_forward(&probe, &x, spec.repeats))
        },
    )?;
    let index = table.index(graph)?;
    let mut samples = vec![(table.node_sum(&index, &dense), dense_ms)];
    let mut rng = StdRng::seed_from_u64(0);
    for _ in 0..spec.calibration {
        // A level for the whole model and a spread around it, so that the samples cover
        // small and large models.
        let level: f64 = rng.random_range(0.05..1.0);
        let keeps: Vec<f64> = (0..units)
            .map(|_| (level * rng.random_range(0.5..1.5)).clamp(0.01, 1.0))
            .collect();
        let pruned = GraphNet::new(costs.pruned_graph(&keeps)?, device);
        let (ms, dense_now) = time_pair(&pruned, &model, &input, spec.model_repeats);
        let sum = table.node_sum(&index, &costs.node_sizes(&keeps));
        samples.push((sum, ms * dense_ms / dense_now.max(1e-9)));
        bar.inc(1);
    }
    table.calibrate(&samples);
    bar.finish_and_clear();
    table.save(path)?;
    Ok((table, true))
}
