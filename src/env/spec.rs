//! The env file: which model, which data, what to prune and how to reward it.

use crate::data::{DataOptions, DatasetKind, SplitName};
use crate::error::{Error, Result};
use crate::graph::ModelGraph;
use crate::model::zoo::{self, VggItem};
use crate::model::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Model architectures of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Mlp,
    Lenet5,
    Vgg,
    Resnet,
    Mobilenetv2,
    /// A model imported from an ONNX file (`model.path`), its weights included.
    Onnx,
}

/// `[model]`: the architecture, its size, and where its pretrained weights live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub arch: Arch,
    /// VGG: conv widths and `"M"` pools.
    pub cfg: Option<Vec<VggItem>>,
    /// ResNet: depth, 6n+2.
    pub depth: Option<usize>,
    /// MobileNetV2: width multiplier.
    pub width: Option<f64>,
    /// MLP: hidden layer widths.
    pub hidden: Option<Vec<usize>>,
    /// ONNX: the model file (weights inline or in `<file>.data` beside it).
    pub path: Option<PathBuf>,
    /// Pretrained weights (safetensors); `pretrain` writes them. Default:
    /// `checkpoints/<env name>.safetensors`.
    pub checkpoint: Option<PathBuf>,
}

/// `[data]`: which data set, where, and how to split it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub dataset: DatasetKind,
    /// Folder with the data files (not used by `synthetic`).
    pub dir: Option<PathBuf>,
    /// Split that searches score policies on; `val` (carved from train) or `test`.
    #[serde(default = "default_eval_split")]
    pub eval_split: SplitName,
    /// Training samples held out for validation.
    #[serde(default = "default_val_size")]
    pub val_size: usize,
    /// Seed of the validation split.
    #[serde(default)]
    pub split_seed: u64,
}

fn default_eval_split() -> SplitName {
    SplitName::Val
}

fn default_val_size() -> usize {
    5000
}

/// Which cost a budget is stated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Params,
    Flops,
}

/// Keep this fraction of the dense model's prunable params or FLOPs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub metric: Metric,
    pub keep: f64,
}

/// How weights are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Granularity {
    Unstructured,
    Channel,
    /// Keep `n` of every `m` consecutive weights along the input dimension.
    NOfM {
        n: usize,
        m: usize,
    },
}

impl Granularity {
    /// Whether policies of one granularity apply to the other: the same kind, and for N:M the
    /// same M (a policy's keep ratios choose each layer's N).
    pub fn compatible(self, other: Granularity) -> bool {
        match (self, other) {
            (Granularity::NOfM { m: a, .. }, Granularity::NOfM { m: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }
}

impl TryFrom<String> for Granularity {
    type Error = String;

    fn try_from(value: String) -> std::result::Result<Self, String> {
        match value.as_str() {
            "unstructured" => Ok(Granularity::Unstructured),
            "channel" => Ok(Granularity::Channel),
            other => {
                let parsed = other
                    .split_once(':')
                    .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
                match parsed {
                    Some((n, m)) if n >= 1 && n <= m => Ok(Granularity::NOfM { n, m }),
                    _ => Err(format!(
                        "granularity `{other}` is not one of unstructured, channel, or N:M with 1 <= N <= M (e.g. \"2:4\")"
                    )),
                }
            }
        }
    }
}

impl From<Granularity> for String {
    fn from(value: Granularity) -> String {
        match value {
            Granularity::Unstructured => "unstructured".into(),
            Granularity::Channel => "channel".into(),
            Granularity::NOfM { n, m } => format!("{n}:{m}"),
        }
    }
}

/// `[prune]`: granularity, criterion, budget and per-layer bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    pub granularity: Granularity,
    pub criterion: String,
    pub target: Target,
    pub keep_bounds: [f64; 2],
}

impl Default for PruneSpec {
    fn default() -> Self {
        Self {
            granularity: Granularity::Unstructured,
            criterion: "magnitude".into(),
            target: Target {
                metric: Metric::Params,
                keep: 0.5,
            },
            keep_bounds: [0.01, 1.0],
        }
    }
}

/// Reward functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    Accuracy,
    ErrLogFlops,
    ErrLogParams,
}

/// `[reward]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSpec {
    pub kind: RewardKind,
    /// Masked fine-tuning steps before each score (0: none).
    #[serde(default)]
    pub finetune_steps: usize,
    /// Training batches used to re-estimate BatchNorm statistics after pruning (0: none).
    #[serde(default = "default_recalibration_batches")]
    pub recalibration_batches: usize,
}

fn default_recalibration_batches() -> usize {
    20
}

impl Default for RewardSpec {
    fn default() -> Self {
        Self {
            kind: RewardKind::Accuracy,
            finetune_steps: 0,
            recalibration_batches: default_recalibration_batches(),
        }
    }
}

/// A parsed and validated env file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    pub name: String,
    pub model: ModelSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub prune: PruneSpec,
    #[serde(default)]
    pub reward: RewardSpec,
    #[serde(default)]
    pub train: TrainConfig,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// The criteria the `prune` module knows.
pub const CRITERIA: [&str; 6] = ["magnitude", "l1", "l2", "taylor", "snip", "random"];

impl EnvSpec {
    /// Reads, parses and validates an env file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates env TOML; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut spec: EnvSpec = parse_toml(text, path)?;
        spec.path = path.to_path_buf();
        spec.validate()?;
        Ok(spec)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks every value's range and the keys each architecture needs.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(self.invalid("name", "must not be empty"));
        }
        let m = &self.model;
        match m.arch {
            Arch::Vgg
                if m.cfg
                    .as_ref()
                    .is_none_or(|c| !c.iter().any(|i| matches!(i, VggItem::Conv(_)))) =>
            {
                return Err(self.invalid("model.cfg", "vgg needs a cfg list with at least one conv width, e.g. [32, \"M\", 64, \"M\"]"));
            }
            Arch::Resnet => match m.depth {
                Some(d) if d >= 8 && (d - 2).is_multiple_of(6) => {}
                Some(d) => {
                    return Err(self.invalid(
                        "model.depth",
                        format!("{d} is not 6n+2 with n >= 1; use 20, 32, 44, 56, 110"),
                    ))
                }
                None => {
                    return Err(self.invalid(
                        "model.depth",
                        "resnet needs a depth (20, 32, 44, 56, 110, ...)",
                    ))
                }
            },
            Arch::Mobilenetv2 => {
                if let Some(w) = m.width {
                    if !(w > 0.0 && w <= 4.0) {
                        return Err(self.invalid(
                            "model.width",
                            format!(
                                "{w} is out of range; use a multiplier in (0, 4], e.g. 1.0 or 0.5"
                            ),
                        ));
                    }
                }
            }
            arch if arch != Arch::Onnx && m.path.is_some() => {
                return Err(self.invalid(
                    "model.path",
                    "only an onnx model reads a file; remove `path` or set arch = \"onnx\"",
                ));
            }
            Arch::Onnx if m.path.is_none() => {
                return Err(self.invalid(
                    "model.path",
                    "onnx needs the model file, e.g. path = \"models/my_model.onnx\"",
                ));
            }
            Arch::Mlp if m.hidden.as_ref().is_some_and(|h| h.contains(&0)) => {
                return Err(self.invalid("model.hidden", "hidden widths must be at least 1"));
            }
            _ => {}
        }
        if m.cfg
            .as_ref()
            .is_some_and(|c| c.contains(&VggItem::Conv(0)))
        {
            return Err(self.invalid("model.cfg", "conv widths must be at least 1"));
        }
        let d = &self.data;
        if d.dataset != DatasetKind::Synthetic && d.dir.is_none() {
            return Err(self.invalid(
                "data.dir",
                format!(
                    "{} needs the folder holding its files, e.g. dir = \"data/{}\"",
                    d.dataset.name(),
                    d.dataset.name()
                ),
            ));
        }
        if d.val_size == 0 {
            return Err(self.invalid(
                "data.val_size",
                "must be at least 1: policies are selected on validation data",
            ));
        }
        if d.eval_split == SplitName::Train {
            return Err(self.invalid(
                "data.eval_split",
                "must be `val` or `test`; scoring on the training split says nothing",
            ));
        }
        let p = &self.prune;
        if !(p.target.keep > 0.0 && p.target.keep <= 1.0) {
            return Err(self.invalid(
                "prune.target.keep",
                format!(
                    "{} is out of range; use a fraction in (0, 1], e.g. 0.05",
                    p.target.keep
                ),
            ));
        }
        let [lo, hi] = p.keep_bounds;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(self.invalid(
                "prune.keep_bounds",
                format!("[{lo}, {hi}] must satisfy 0 < low <= high <= 1"),
            ));
        }
        if !CRITERIA.contains(&p.criterion.as_str()) {
            return Err(self.invalid(
                "prune.criterion",
                format!("`{}` is not one of {}", p.criterion, CRITERIA.join(", ")),
            ));
        }
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 {
            return Err(self.invalid("train", "epochs and batch_size must be at least 1"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(self.invalid("train.lr", format!("{} must be a positive number", t.lr)));
        }
        let momentum_ok = (0.0..1.0).contains(&t.momentum);
        let decay_ok = t.weight_decay >= 0.0 && t.weight_decay.is_finite();
        if !(momentum_ok && decay_ok) {
            return Err(self.invalid(
                "train",
                "momentum must be in [0, 1) and weight_decay non-negative",
            ));
        }
        Ok(())
    }

    /// Where the pretrained weights are (or will be) kept.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.model.checkpoint.clone().unwrap_or_else(|| {
            PathBuf::from("checkpoints").join(format!("{}.safetensors", self.name))
        })
    }

    /// The file holding the pretrained weights: the ONNX file for `arch = "onnx"`, else the
    /// checkpoint.
    pub fn weights_path(&self) -> PathBuf {
        match (self.model.arch, &self.model.path) {
            (Arch::Onnx, Some(path)) => path.clone(),
            _ => self.checkpoint_path(),
        }
    }

    /// Every file the weights are read from: [`Self::weights_path`], and for an ONNX model
    /// the `<file>.data` beside it when there is one (PyTorch's external weights), so that a
    /// run notices new weights behind an unchanged graph file.
    pub fn weights_files(&self) -> Vec<PathBuf> {
        let main = self.weights_path();
        let mut files = vec![main.clone()];
        if self.model.arch == Arch::Onnx {
            let mut data = main.into_os_string();
            data.push(".data");
            let data = PathBuf::from(data);
            if data.is_file() {
                files.push(data);
            }
        }
        files
    }

    /// How to load the data set.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            kind: self.data.dataset,
            dir: self.data.dir.clone().unwrap_or_default(),
            val_size: self.data.val_size,
            seed: self.data.split_seed,
        }
    }

    /// The model graph, sized for the data set's images and classes.
    pub fn build_graph(&self) -> Result<ModelGraph> {
        let shape = self.data.dataset.input_shape();
        let classes = self.data.dataset.classes();
        let m = &self.model;
        match m.arch {
            Arch::Mlp => zoo::mlp(&shape, classes, m.hidden.as_deref().unwrap_or(&[300, 100])),
            Arch::Lenet5 => zoo::lenet5(&shape, classes),
            Arch::Vgg => zoo::vgg(&shape, classes, m.cfg.as_deref().unwrap_or_default()),
            Arch::Resnet => zoo::resnet(&shape, classes, m.depth.unwrap_or(20)),
            Arch::Mobilenetv2 => zoo::mobilenetv2(&shape, classes, m.width.unwrap_or(1.0)),
            Arch::Onnx => Ok(self.import_onnx()?.graph),
        }
    }

    /// The ONNX model of an `arch = "onnx"` env, checked against the data set's input shape
    /// and number of classes.
    pub fn import_onnx(&self) -> Result<crate::onnx::Imported> {
        let path = self.model.path.clone().unwrap_or_default();
        let imported = crate::onnx::import(&path)?;
        let shape = self.data.dataset.input_shape();
        let classes = self.data.dataset.classes();
        let graph = &imported.graph;
        if graph.input_shape() != &shape || graph.output_shape() != &vec![classes] {
            return Err(self.invalid(
                "model.path",
                format!(
                    "{} takes {:?} and gives {:?}, but {} has inputs of shape {shape:?} and {classes} classes; export the model for this data set",
                    path.display(),
                    graph.input_shape(),
                    graph.output_shape(),
                    self.data.dataset.name()
                ),
            ));
        }
        Ok(imported)
    }
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
