//! Fuzzing the parsers of everything a user hands autoprune: env and search-config TOML,
//! policy JSON, graph JSON, gzip and IDX data, and ONNX models. Inputs are valid files put
//! through random byte-level mutations (flips, inserts, deletions, truncations, splices, and
//! tokens such as `NaN`, `1e999` or a stray bracket), plus raw random bytes. Each must give
//! `Ok` or a typed error of one line: never a panic, never a hang.
//!
//! Cases per target: 4,000 by default; `AUTOPRUNE_FUZZ_CASES=N` for a longer run (the README
//! records one). Each test prints how many inputs it ran.

use autoprune::config::EnvSpec;
use autoprune::config::SearchConfig;
use autoprune::graph::GraphJson;
use autoprune::model::zoo;
use autoprune::policy::PolicyFile;
use autoprune::prune::CostModel;
use autoprune::prune::Granularity;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> u32 {
    std::env::var("AUTOPRUNE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

/// One mutation of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, usize, usize),
    Token(usize, usize),
}

const TOKENS: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "-1",
    "0",
    "-0.0",
    "18446744073709551616",
    "\"",
    "[",
    "]]",
    "{",
    "}",
    ",",
    "=",
    "\n[",
    "[[",
    "\\u0000",
    "\0",
    "\u{feff}",
    "true",
    "null",
    "'''",
    "\"\"\"",
    "#",
    "4294967295",
    "0x08",
    ":",
    "\"keep\": ",
    "conv",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Edit::Token(i, t)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Flip(i, b) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] ^= b | 1;
                }
            }
            Edit::Insert(i, b) => {
                let i = i % (bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = i % len;
                let end = (i + n).min(bytes.len());
                if i < end {
                    bytes.drain(i..end);
                }
            }
            Edit::Truncate(i) => bytes.truncate(i % len),
            Edit::Splice(a, b, n) => {
                let (a, b) = (a % len, b % len);
                let end = (a + n).min(bytes.len());
                if a < end {
                    let part: Vec<u8> = bytes[a..end].to_vec();
                    let b = b.min(bytes.len());
                    bytes.splice(b..b, part);
                }
            }
            Edit::Token(i, t) => {
                let i = i % (bytes.len() + 1);
                bytes.splice(i..i, TOKENS[t % TOKENS.len()].bytes());
            }
        }
    }
    bytes
}

/// Inputs: a seed file mutated by 1 to 6 edits, or (one case in eight) random bytes.
fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        7 => (0..n, proptest::collection::vec(edit(), 1..6))
            .prop_map(move |(s, edits)| apply(seeds[s].clone(), &edits)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Failing inputs are kept in `tests/it/fuzz.proptest-regressions` (commit it) and replayed
/// first by every later run.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/fuzz.proptest-regressions"
        )))),
        ..Config::default()
    })
}

/// Runs `check` on `cases()` mutated inputs; prints the count.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, check: impl Fn(&[u8]) -> Result<(), String>) {
    let n = cases();
    let mut runner = runner(n);
    runner
        .run(&inputs(seeds), |bytes| {
            check(&bytes).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: {n} inputs, no panic, every error one line");
}

fn one_line(result: Result<(), autoprune::error::Error>) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            if text.contains('\n') || text.is_empty() {
                Err(format!("error is not one line: {text:?}"))
            } else {
                Ok(())
            }
        }
    }
}

fn files(dir: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn env_toml_parser() {
    let path = Path::new("fuzz/env.toml");
    fuzz("env TOML", files("envs"), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        one_line(EnvSpec::parse(&text, path).and_then(|spec| {
            // What the engine does next with a parsed env: build its graph.
            spec.build_graph().map(|_| ())
        }))
    });
}

#[test]
fn search_config_parser() {
    let path = Path::new("fuzz/config.toml");
    fuzz("search config TOML", files("configs"), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        one_line(SearchConfig::parse(&text, path).map(|_| ()))
    });
}

const POLICY: &str = r#"{
  "schema": 1,
  "env": "synthetic-mlp",
  "model": "fnv1a64:50245332b4f9dac3",
  "granularity": "unstructured",
  "target": { "metric": "params", "keep": 0.2 },
  "layers": [
    { "name": "fc0", "keep": 0.31 },
    { "name": "fc1", "keep": 0.2 },
    { "name": "classifier", "keep": 0.5 }
  ],
  "metrics": {
    "accuracy": 0.9, "loss": 0.3, "params_kept": 0.2, "flops_kept": 0.2, "params": 216,
    "flops": 216, "reward": 0.9, "layers": [], "split": "val"
  },
  "agent": "ddpg",
  "episodes": 30,
  "seed": 0,
  "created": "2026-11-26T00:00:00Z"
}"#;

#[test]
fn policy_json_parser() {
    let path = Path::new("fuzz/policy.json");
    PolicyFile::parse(POLICY, path).expect("the seed policy parses");
    fuzz("policy JSON", vec![POLICY.as_bytes().to_vec()], |bytes| {
        let text = String::from_utf8_lossy(bytes);
        one_line(PolicyFile::parse(&text, path).map(|_| ()))
    });
}

#[test]
fn graph_json_parser() {
    let input = vec![1, 16, 16];
    let graphs = [
        zoo::lenet5(&vec![1, 28, 28], 10).unwrap(),
        zoo::resnet(&input, 10, 8).unwrap(),
        zoo::mobilenetv2(&vec![3, 16, 16], 10, 0.25).unwrap(),
    ];
    let seeds = graphs
        .iter()
        .map(|g| serde_json::to_vec(&g.to_json()).unwrap())
        .collect();
    fuzz("graph JSON", seeds, |bytes| {
        let Ok(json) = serde_json::from_slice::<GraphJson>(bytes) else {
            return Ok(());
        };
        one_line(check_graph(&json))
    });
}

/// Builds a graph from its JSON and computes what the engine computes from an accepted one.
fn check_graph(json: &GraphJson) -> Result<(), autoprune::error::Error> {
    let graph = autoprune::graph::ModelGraph::from_json(json)?;
    let _ = (graph.prunable_params(), graph.prunable_flops());
    for granularity in ["unstructured", "channel", "2:4"] {
        let granularity = Granularity::try_from(granularity.to_string()).expect("granularity");
        let costs = CostModel::new(&graph, granularity);
        let _ = costs.counts(&vec![0.5; costs.units().len()]);
    }
    Ok(())
}

/// The JSON pointer of every number and string in a value, in document order.
fn leaves(value: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                leaves(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => out.push(at),
    }
}

#[test]
fn graph_json_with_nonsense_values() {
    // Valid JSON, wrong model: sizes of 0 or 2^40, strides of 0, inputs that name other
    // nodes, loops. The graph builder must refuse (or accept) it without a panic.
    let seeds: Vec<serde_json::Value> = [
        zoo::lenet5(&vec![1, 28, 28], 10).unwrap(),
        zoo::resnet(&vec![1, 16, 16], 10, 8).unwrap(),
        zoo::mobilenetv2(&vec![3, 16, 16], 10, 0.25).unwrap(),
    ]
    .iter()
    .map(|g| serde_json::to_value(g.to_json()).unwrap())
    .collect();
    let names: Vec<serde_json::Value> = ["input", "conv0", "fc0", "add0", "output", ""]
        .iter()
        .map(|n| serde_json::json!(n))
        .collect();
    let n = cases();
    let mut runner = runner(n);
    let (parsed, built) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), 0usize..8, any::<u64>()), 1..6),
    );
    runner
        .run(&strategy, |(s, edits)| {
            let mut value = seeds[s].clone();
            let mut paths = Vec::new();
            leaves(&value, String::new(), &mut paths);
            for (at, kind, x) in &edits {
                let Some(leaf) = value.pointer_mut(&paths[at % paths.len()]) else {
                    continue;
                };
                *leaf = match kind {
                    0 => serde_json::json!(0),
                    1 => serde_json::json!(1u64 << 40),
                    2 => serde_json::json!(x % 7),
                    3 => serde_json::json!(usize::MAX),
                    4 => names[(*x as usize) % names.len()].clone(),
                    5 => serde_json::json!(-1),
                    6 => serde_json::json!(1.5),
                    _ => serde_json::json!(x % 70000),
                };
            }
            let Ok(json) = serde_json::from_value::<GraphJson>(value) else {
                return Ok(());
            };
            parsed.fetch_add(1, Ordering::Relaxed);
            let result = check_graph(&json);
            if result.is_ok() {
                built.fetch_add(1, Ordering::Relaxed);
            }
            one_line(result).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("graph JSON values: {e}"));
    let (parsed, built) = (parsed.into_inner(), built.into_inner());
    eprintln!(
        "graph JSON values: {n} inputs ({parsed} valid GraphJson, {built} accepted as graphs), no panic, every error one line"
    );
    assert!(
        parsed > 0 && built > 0,
        "the mutations never reach the graph builder"
    );
}

/// A small valid IDX file: 2 images of 3x3.
fn idx_seed() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    bytes.extend(0u8..18);
    bytes
}

#[test]
fn idx_reader() {
    assert!(autoprune::data::parse_idx(&idx_seed()).is_ok());
    fuzz(
        "IDX",
        vec![idx_seed(), vec![0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2, 3, 4]],
        |bytes| match autoprune::data::parse_idx(bytes) {
            Ok(array) => {
                let expected: usize = array.dims.iter().product();
                if array.values.len() != expected {
                    return Err(format!(
                        "{:?} holds {} values",
                        array.dims,
                        array.values.len()
                    ));
                }
                Ok(())
            }
            Err(message) if message.contains('\n') => Err(message),
            Err(_) => Ok(()),
        },
    );
}

#[test]
fn gzip_reader() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx_seed()).unwrap();
    let seed = gz.finish().unwrap();
    let path = Path::new("fuzz/data.gz");
    assert_eq!(
        autoprune::data::decode_maybe_gz(seed.clone(), path).unwrap(),
        idx_seed()
    );
    fuzz("gzip + IDX", vec![seed], |bytes| {
        one_line(
            autoprune::data::decode_maybe_gz(bytes.to_vec(), path).and_then(|raw| {
                autoprune::data::parse_idx(&raw).map(|_| ()).map_err(|m| {
                    autoprune::error::Error::Data {
                        path: path.to_path_buf(),
                        message: m,
                    }
                })
            }),
        )
    });
}

#[test]
fn onnx_importer() {
    // Seeds: zoo models as autoprune exports them (every op the importer maps), with
    // BatchNorm, residual Adds, depthwise convs, ReLU6 and a Concat-free VGG.
    let mut seeds = Vec::new();
    let shape = vec![1, 12, 12];
    let cfg = [
        zoo::VggItem::Conv(4),
        zoo::VggItem::Pool(zoo::PoolMarker::M),
        zoo::VggItem::Conv(6),
    ];
    for graph in [
        zoo::vgg(&shape, 3, &cfg).unwrap(),
        zoo::resnet(&shape, 3, 8).unwrap(),
        zoo::mobilenetv2(&shape, 3, 0.25).unwrap(),
        zoo::lenet5(&vec![1, 28, 28], 10).unwrap(),
    ] {
        let net = autoprune::model::GraphNet::new(graph, tch::Device::Cpu);
        seeds.push(prost_bytes(&net));
    }
    let path = Path::new("fuzz/model.onnx");
    for seed in &seeds {
        assert!(autoprune::onnx::import_bytes(seed, path).is_ok());
    }
    fuzz("ONNX importer", seeds, |bytes| {
        one_line(autoprune::onnx::import_bytes(bytes, path).map(|_| ()))
    });
}

fn prost_bytes(net: &autoprune::model::GraphNet) -> Vec<u8> {
    use prost::Message;
    autoprune::onnx::to_onnx(net).unwrap().encode_to_vec()
}

/// One structural edit of a decoded ONNX model (byte mutations mostly break the protobuf
/// framing; these reach the importer's op mapping).
#[derive(Debug, Clone)]
enum OnnxEdit {
    OpType(usize, usize),
    AttributeInts(usize, Vec<i64>),
    AttributeInt(usize, i64),
    Input(usize, usize, usize),
    Dims(usize, Vec<i64>),
    RawData(usize, usize),
    DropNode(usize),
    SwapNodes(usize, usize),
    External(usize, String),
}

const OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Relu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Add",
    "Concat",
    "Identity",
    "Constant",
    "Dropout",
    "LeakyRelu",
    "",
];

fn onnx_edit() -> impl Strategy<Value = OnnxEdit> {
    let ints = proptest::collection::vec(
        prop_oneof![-3i64..10, any::<i64>(), Just(i64::MAX), Just(1 << 40)],
        0..5,
    );
    prop_oneof![
        (any::<usize>(), 0..OPS.len()).prop_map(|(n, o)| OnnxEdit::OpType(n, o)),
        (any::<usize>(), ints.clone()).prop_map(|(n, v)| OnnxEdit::AttributeInts(n, v)),
        (any::<usize>(), prop_oneof![-2i64..40, any::<i64>()])
            .prop_map(|(n, v)| OnnxEdit::AttributeInt(n, v)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(n, s, v)| OnnxEdit::Input(n, s, v)),
        (any::<usize>(), ints).prop_map(|(t, d)| OnnxEdit::Dims(t, d)),
        (any::<usize>(), any::<usize>()).prop_map(|(t, n)| OnnxEdit::RawData(t, n)),
        any::<usize>().prop_map(OnnxEdit::DropNode),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| OnnxEdit::SwapNodes(a, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just("../x".to_string()),
                Just("/etc/passwd".to_string()),
                "[a-z.]{0,8}"
            ]
        )
            .prop_map(|(t, l)| OnnxEdit::External(t, l)),
    ]
}

fn apply_onnx(
    mut model: tract_onnx::pb::ModelProto,
    edits: &[OnnxEdit],
) -> tract_onnx::pb::ModelProto {
    let Some(graph) = model.graph.as_mut() else {
        return model;
    };
    let names: Vec<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.clone())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .chain(["".to_string(), "missing".to_string()])
        .collect();
    for e in edits {
        let nodes = graph.node.len().max(1);
        let inits = graph.initializer.len().max(1);
        match e {
            OnnxEdit::OpType(n, o) => {
                if let Some(node) = graph.node.get_mut(n % nodes) {
                    node.op_type = OPS[*o].to_string();
                }
            }
            OnnxEdit::AttributeInts(n, v) => {
                if let Some(a) = graph
                    .node
                    .get_mut(n % nodes)
                    .and_then(|n| n.attribute.first_mut())
                {
                    a.ints = v.clone();
                }
            }
            OnnxEdit::AttributeInt(n, v) => {
                if let Some(a) = graph
                    .node
                    .get_mut(n % nodes)
                    .and_then(|n| n.attribute.last_mut())
                {
                    a.i = *v;
                }
            }
            OnnxEdit::Input(n, s, v) => {
                if let Some(node) = graph.node.get_mut(n % nodes) {
                    let slot = s % (node.input.len() + 1);
                    let name = names[v % names.len()].clone();
                    if slot == node.input.len() {
                        node.input.push(name);
                    } else {
                        node.input[slot] = name;
                    }
                }
            }
            OnnxEdit::Dims(t, d) => {
                if let Some(t) = graph.initializer.get_mut(t % inits) {
                    t.dims = d.clone();
                }
            }
            OnnxEdit::RawData(t, n) => {
                if let Some(t) = graph.initializer.get_mut(t % inits) {
                    let keep = n % (t.raw_data.len() + 1);
                    t.raw_data.truncate(keep);
                }
            }
            OnnxEdit::DropNode(n) => {
                if !graph.node.is_empty() {
                    graph.node.remove(n % nodes);
                }
            }
            OnnxEdit::SwapNodes(a, b) => {
                if !graph.node.is_empty() {
                    graph.node.swap(a % nodes, b % nodes);
                }
            }
            OnnxEdit::External(t, location) => {
                if let Some(t) = graph.initializer.get_mut(t % inits) {
                    t.data_location = Some(1);
                    t.external_data = vec![tract_onnx::pb::StringStringEntryProto {
                        key: "location".into(),
                        value: location.clone(),
                    }];
                }
            }
        }
    }
    model
}

#[test]
fn onnx_graphs_with_nonsense_values() {
    let shape = vec![1, 12, 12];
    let seeds: Vec<tract_onnx::pb::ModelProto> = [
        zoo::resnet(&shape, 3, 8).unwrap(),
        zoo::mobilenetv2(&shape, 3, 0.25).unwrap(),
        zoo::mlp(&vec![16], 3, &[8]).unwrap(),
    ]
    .into_iter()
    .map(|g| {
        autoprune::onnx::to_onnx(&autoprune::model::GraphNet::new(g, tch::Device::Cpu)).unwrap()
    })
    .collect();
    let n = cases();
    let mut runner = runner(n);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let strategy = (0..seeds.len(), proptest::collection::vec(onnx_edit(), 1..5));
    runner
        .run(&strategy, |(s, edits)| {
            use prost::Message;
            let bytes = apply_onnx(seeds[s].clone(), &edits).encode_to_vec();
            one_line(autoprune::onnx::import_bytes(&bytes, &path).map(|_| ()))
                .map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("ONNX graphs: {e}"));
    eprintln!("ONNX graphs with nonsense values: {n} inputs, no panic, every error one line");
}

/// Integers a user might give a size, count or thread number: small ones, the bounds, just
/// past them, and far past them.
const SIZES: &[i64] = &[
    0,
    1,
    2,
    7,
    256,
    257,
    16_384,
    16_385,
    100_000,
    1_000_000,
    1_000_001,
    10_000_000,
    10_000_001,
    99_999_999,
    99_999_999_999,
    1_000_000_000_000,
    i64::MAX,
];

/// The dotted path of every integer in a TOML value (array items by index).
fn integer_leaves(value: &toml::Value, at: &[String], out: &mut Vec<Vec<String>>) {
    match value {
        toml::Value::Integer(_) => out.push(at.to_vec()),
        toml::Value::Table(table) => {
            for (key, item) in table {
                integer_leaves(item, &[at, std::slice::from_ref(key)].concat(), out);
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                integer_leaves(item, &[at, &[i.to_string()]].concat(), out);
            }
        }
        _ => {}
    }
}

fn leaf_mut<'a>(value: &'a mut toml::Value, at: &[String]) -> Option<&'a mut toml::Value> {
    at.iter().try_fold(value, |v, key| match v {
        toml::Value::Table(table) => table.get_mut(key),
        toml::Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The largest integer an accepted config holds, seeds aside (a seed is any number).
fn largest_size(value: &toml::Value) -> i64 {
    let mut leaves = Vec::new();
    integer_leaves(value, &[], &mut leaves);
    leaves
        .iter()
        .filter(|at| !at.last().is_some_and(|k| k.ends_with("seed")))
        .filter_map(|at| leaf_mut(&mut value.clone(), at).and_then(|v| v.as_integer()))
        .max()
        .unwrap_or(0)
}

/// Sets integers of valid env files and search configs to sizes at, past and far past their
/// bounds: every config accepted holds no size above the largest bound (so nothing unbounded
/// slips through), and every refusal is one line.
fn sizes_past_bounds(
    name: &str,
    dir: &str,
    check: impl Fn(&str) -> Result<Option<toml::Value>, autoprune::error::Error>,
) {
    let seeds: Vec<toml::Value> = files(dir)
        .iter()
        .map(|b| toml::from_str(&String::from_utf8_lossy(b)).unwrap())
        .collect();
    let n = cases();
    let mut runner = runner(n);
    let (accepted, bounded) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), 0..SIZES.len()), 1..4),
    );
    runner
        .run(&strategy, |(s, edits)| {
            let mut value = seeds[s].clone();
            let mut leaves = Vec::new();
            integer_leaves(&value, &[], &mut leaves);
            for (at, size) in &edits {
                if let Some(leaf) = leaf_mut(&mut value, &leaves[at % leaves.len()]) {
                    *leaf = toml::Value::Integer(SIZES[*size]);
                }
            }
            let text = toml::to_string(&value).unwrap();
            let fail = proptest::test_runner::TestCaseError::fail;
            match check(&text) {
                Ok(Some(parsed)) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let largest = largest_size(&parsed);
                    if largest > autoprune::check::MAX_SAMPLES as i64 {
                        return Err(fail(format!("accepted a size of {largest}:\n{text}")));
                    }
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => {
                    if e.to_string().contains("at most") {
                        bounded.fetch_add(1, Ordering::Relaxed);
                    }
                    one_line(Err(e)).map_err(fail)
                }
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let (accepted, bounded) = (accepted.into_inner(), bounded.into_inner());
    eprintln!(
        "{name}: {n} inputs ({accepted} accepted, {bounded} refused for a bound), no size past the bounds accepted, every error one line"
    );
    assert!(
        accepted > 0 && bounded > 0,
        "{name}: the edits never reach the bounds"
    );
}

#[test]
fn env_sizes_past_their_bounds() {
    let path = Path::new("fuzz/env.toml");
    sizes_past_bounds("env sizes", "envs", |text| {
        let spec = EnvSpec::parse(text, path)?;
        // What the engine does next with an accepted env: build its graph.
        if spec.model.onnx_path().is_none() {
            spec.build_graph()?;
        }
        Ok(Some(
            toml::Value::try_from(&spec).expect("an env serializes"),
        ))
    });
}

#[test]
fn search_config_sizes_past_their_bounds() {
    let path = Path::new("fuzz/config.toml");
    sizes_past_bounds("search config sizes", "configs", |text| {
        // train-agent and meta-train configs are in the folder too: only search configs
        // parse as one.
        if !text.contains("episodes") || text.contains("budgets") {
            return Ok(None);
        }
        let config = SearchConfig::parse(text, path)?;
        Ok(Some(
            toml::Value::try_from(&*config).expect("a config serializes"),
        ))
    });
}
