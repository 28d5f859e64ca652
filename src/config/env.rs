//! The env file (`envs/*.toml`): which model, which data, what to prune and how to reward it.

use super::latency::{LatencySpec, MAX_LATENCY_BATCH, MAX_LATENCY_GRID, MAX_LATENCY_REPEATS};
use super::parse_toml;
use crate::check::{number, Checks, MAX_EPOCHS, MAX_LAYERS, MAX_SAMPLES, MAX_STEPS, MAX_WIDTH};
use crate::data::{DataOptions, DatasetKind, SplitName, SYNTHETIC_TRAIN};
use crate::error::{Error, Result};
use crate::graph::ModelGraph;
use crate::model::zoo::{self, VggItem};
use crate::model::TrainConfig;
use crate::prune::{Criterion, Granularity, Metric, Target};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Model architectures: the zoo's, and ONNX for a model a user brings.
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

/// `[model]`: the architecture (`arch`), the keys that size it, and where its pretrained
/// weights live. Each architecture takes its own keys only: a key of another one (`path`
/// on a vgg, `depth` on an mlp) fails to parse, naming the key.
///
/// `checkpoint` (zoo architectures) holds the pretrained weights (safetensors); `pretrain`
/// writes them. Default: `checkpoints/<env name>.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSpec {
    Mlp {
        /// Hidden layer widths.
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    Lenet5 {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    Vgg {
        /// Conv widths and `"M"` pools.
        cfg: Vec<VggItem>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    Resnet {
        /// 6n+2.
        depth: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    Mobilenetv2 {
        /// Width multiplier.
        #[serde(default = "default_width")]
        width: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    /// The model file (weights inline or in `<file>.data` beside it): its initializers are
    /// the pretrained weights, so it has no checkpoint.
    Onnx { path: PathBuf },
}

fn default_hidden() -> Vec<usize> {
    vec![300, 100]
}

fn default_width() -> f64 {
    1.0
}

impl ModelSpec {
    pub fn arch(&self) -> Arch {
        match self {
            ModelSpec::Mlp { .. } => Arch::Mlp,
            ModelSpec::Lenet5 { .. } => Arch::Lenet5,
            ModelSpec::Vgg { .. } => Arch::Vgg,
            ModelSpec::Resnet { .. } => Arch::Resnet,
            ModelSpec::Mobilenetv2 { .. } => Arch::Mobilenetv2,
            ModelSpec::Onnx { .. } => Arch::Onnx,
        }
    }

    /// The ONNX file of an `onnx` model.
    pub fn onnx_path(&self) -> Option<&Path> {
        match self {
            ModelSpec::Onnx { path } => Some(path),
            _ => None,
        }
    }

    /// The checkpoint a zoo model names (`None`: the default, or an onnx model).
    fn checkpoint(&self) -> Option<&PathBuf> {
        match self {
            ModelSpec::Mlp { checkpoint, .. }
            | ModelSpec::Lenet5 { checkpoint }
            | ModelSpec::Vgg { checkpoint, .. }
            | ModelSpec::Resnet { checkpoint, .. }
            | ModelSpec::Mobilenetv2 { checkpoint, .. } => checkpoint.as_ref(),
            ModelSpec::Onnx { .. } => None,
        }
    }
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

/// `[prune]`: granularity, criterion, budget and per-layer bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    pub granularity: Granularity,
    pub criterion: Criterion,
    pub target: Target,
    #[serde(deserialize_with = "low_and_high")]
    pub keep_bounds: [f64; 2],
}

/// `keep_bounds`: exactly `[low, high]`; a list of another length is an error, never cut.
fn low_and_high<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
    let values = Vec::<f64>::deserialize(d)?;
    <[f64; 2]>::try_from(values.as_slice()).map_err(|_| {
        serde::de::Error::invalid_length(values.len(), &"exactly two numbers, [low, high]")
    })
}

impl Default for PruneSpec {
    fn default() -> Self {
        Self {
            granularity: Granularity::Unstructured,
            criterion: Criterion::Magnitude,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySpec>,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Command-line values that replace an env's own.
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    pub keep: Option<f64>,
    pub metric: Option<Metric>,
    pub granularity: Option<Granularity>,
    pub finetune_steps: Option<usize>,
}

impl EnvSpec {
    /// The env with `overrides` applied, validated again.
    pub fn with_overrides(mut self, overrides: &EnvOverrides) -> Result<Self> {
        if let Some(keep) = overrides.keep {
            self.prune.target.keep = keep;
        }
        if let Some(metric) = overrides.metric {
            self.prune.target.metric = metric;
        }
        if let Some(granularity) = overrides.granularity {
            self.prune.granularity = granularity;
        }
        if let Some(steps) = overrides.finetune_steps {
            self.reward.finetune_steps = steps;
        }
        self.validate()
            .map_err(|e| e.noted("after command-line overrides"))?;
        Ok(self)
    }

    /// The latency settings when latency is measured: the `[latency]` table, or its defaults
    /// under a latency budget.
    pub fn latency_settings(&self) -> Option<LatencySpec> {
        match (&self.latency, self.prune.target.metric) {
            (Some(spec), _) => Some(spec.clone()),
            (None, Metric::Latency) => Some(LatencySpec::default()),
            (None, _) => None,
        }
    }

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
        if let Some((key, message)) = self.bounds() {
            return Err(self.invalid(key, message));
        }
        match &self.model {
            ModelSpec::Vgg { cfg, .. } if !cfg.iter().any(|i| matches!(i, VggItem::Conv(_))) => {
                return Err(self.invalid("model.cfg", "vgg needs a cfg list with at least one conv width, e.g. [32, \"M\", 64, \"M\"]"));
            }
            ModelSpec::Vgg { cfg, .. } if cfg.contains(&VggItem::Conv(0)) => {
                return Err(self.invalid("model.cfg", "conv widths must be at least 1"));
            }
            ModelSpec::Resnet { depth, .. } if !(*depth >= 8 && (depth - 2).is_multiple_of(6)) => {
                return Err(self.invalid(
                    "model.depth",
                    format!("{depth} is not 6n+2 with n >= 1; use 20, 32, 44, 56, 110"),
                ));
            }
            ModelSpec::Mobilenetv2 { width, .. } if !(*width > 0.0 && *width <= 4.0) => {
                return Err(self.invalid(
                    "model.width",
                    format!(
                        "{} is out of range; use a multiplier in (0, 4], e.g. 1.0 or 0.5",
                        number(*width)
                    ),
                ));
            }
            ModelSpec::Mlp { hidden, .. } if hidden.contains(&0) => {
                return Err(self.invalid("model.hidden", "hidden widths must be at least 1"));
            }
            _ => {}
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
        if d.dataset == DatasetKind::Synthetic && d.dir.is_some() {
            return Err(self.invalid("data.dir", "synthetic data reads no files; leave `dir` out"));
        }
        if d.dataset == DatasetKind::Synthetic && d.val_size >= SYNTHETIC_TRAIN {
            return Err(self.invalid(
                "data.val_size",
                format!(
                    "{} leaves no training data (the synthetic set has {SYNTHETIC_TRAIN} training samples); use a smaller value",
                    d.val_size
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
                    number(p.target.keep)
                ),
            ));
        }
        let [lo, hi] = p.keep_bounds;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(self.invalid(
                "prune.keep_bounds",
                format!(
                    "[{}, {}] must satisfy 0 < low <= high <= 1",
                    number(lo),
                    number(hi)
                ),
            ));
        }
        if p.target.metric == Metric::Latency && p.granularity != Granularity::Channel {
            return Err(self.invalid(
                "prune.target.metric",
                format!(
                    "a latency budget needs granularity = \"channel\": {} pruning keeps dense kernels, so its latency does not change",
                    String::from(p.granularity)
                ),
            ));
        }
        if let Some(l) = &self.latency {
            if l.grid < 2 {
                return Err(self.invalid("latency.grid", "use at least 2 points per axis"));
            }
            if l.batch == 0 || l.repeats == 0 || l.model_repeats == 0 {
                return Err(self.invalid(
                    "latency",
                    "batch, repeats and model_repeats must be at least 1",
                ));
            }
        }
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 {
            return Err(self.invalid("train", "epochs and batch_size must be at least 1"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(self.invalid(
                "train.lr",
                format!("{} must be a positive number", number(t.lr)),
            ));
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

    /// The first name, size or count past its bounds, if any: (key, message).
    fn bounds(&self) -> Option<(&'static str, String)> {
        let (widths, layers) = match &self.model {
            ModelSpec::Mlp { hidden, .. } => (hidden.clone(), hidden.len()),
            ModelSpec::Vgg { cfg, .. } => {
                let widths = cfg.iter().filter_map(|i| match i {
                    VggItem::Conv(width) => Some(*width),
                    _ => None,
                });
                (widths.collect(), cfg.len())
            }
            ModelSpec::Resnet { depth, .. } => (Vec::new(), *depth),
            _ => (Vec::new(), 0),
        };
        let width_key = match self.model {
            ModelSpec::Mlp { .. } => "model.hidden",
            _ => "model.cfg",
        };
        let layers_key = match self.model {
            ModelSpec::Resnet { .. } => "model.depth",
            _ => width_key,
        };
        let latency = self.latency.clone().unwrap_or_default();
        Checks::new()
            .name("name", &self.name)
            .at_most(width_key, widths.into_iter().max().unwrap_or(0), MAX_WIDTH)
            .rule(layers_key, layers <= MAX_LAYERS, || {
                format!("{layers} layers are too many; use at most {MAX_LAYERS}")
            })
            .at_most("data.val_size", self.data.val_size, MAX_SAMPLES)
            .at_most(
                "reward.finetune_steps",
                self.reward.finetune_steps,
                MAX_STEPS,
            )
            .at_most(
                "reward.recalibration_batches",
                self.reward.recalibration_batches,
                MAX_STEPS,
            )
            .at_most("train.epochs", self.train.epochs, MAX_EPOCHS)
            .at_most("train.batch_size", self.train.batch_size, MAX_SAMPLES)
            .at_most("latency.batch", latency.batch, MAX_LATENCY_BATCH)
            .at_most("latency.grid", latency.grid, MAX_LATENCY_GRID)
            .at_most("latency.repeats", latency.repeats, MAX_LATENCY_REPEATS)
            .at_most(
                "latency.model_repeats",
                latency.model_repeats,
                MAX_LATENCY_REPEATS,
            )
            .at_most(
                "latency.calibration",
                latency.calibration,
                MAX_LATENCY_REPEATS,
            )
            .first()
    }

    /// The env with every path it reads or writes made absolute against the working
    /// directory (the default checkpoint included), as a run folder records it.
    pub fn resolved(&self) -> Result<Self> {
        let absolute = |path: &Path| std::path::absolute(path).map_err(|e| Error::io(path, e));
        let mut spec = self.clone();
        let checkpoint = absolute(&self.checkpoint_path())?;
        match &mut spec.model {
            ModelSpec::Mlp { checkpoint: c, .. }
            | ModelSpec::Lenet5 { checkpoint: c }
            | ModelSpec::Vgg { checkpoint: c, .. }
            | ModelSpec::Resnet { checkpoint: c, .. }
            | ModelSpec::Mobilenetv2 { checkpoint: c, .. } => *c = Some(checkpoint),
            ModelSpec::Onnx { path } => *path = absolute(path)?,
        }
        if let Some(dir) = &self.data.dir {
            spec.data.dir = Some(absolute(dir)?);
        }
        if let Some(table) = self.latency.as_ref().and_then(|l| l.table.as_ref()) {
            let table = absolute(table)?;
            if let Some(latency) = spec.latency.as_mut() {
                latency.table = Some(table);
            }
        }
        Ok(spec)
    }

    /// The env as TOML (a run folder's `env.toml`).
    pub fn to_toml(&self) -> Result<String> {
        super::to_toml(self, &self.path)
    }

    /// Where the pretrained weights are (or will be) kept.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.model.checkpoint().cloned().unwrap_or_else(|| {
            PathBuf::from("checkpoints").join(format!("{}.safetensors", self.name))
        })
    }

    /// The file holding the pretrained weights: the ONNX file for `arch = "onnx"`, else the
    /// checkpoint.
    pub fn weights_path(&self) -> PathBuf {
        match self.model.onnx_path() {
            Some(path) => path.to_path_buf(),
            None => self.checkpoint_path(),
        }
    }

    /// Every file the weights are read from: [`Self::weights_path`], and for an ONNX model
    /// the `<file>.data` beside it when there is one (PyTorch's external weights), so that a
    /// run notices new weights behind an unchanged graph file.
    pub fn weights_files(&self) -> Vec<PathBuf> {
        let main = self.weights_path();
        let mut files = vec![main.clone()];
        if self.model.arch() == Arch::Onnx {
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
        match &self.model {
            ModelSpec::Mlp { hidden, .. } => zoo::mlp(&shape, classes, hidden),
            ModelSpec::Lenet5 { .. } => zoo::lenet5(&shape, classes),
            ModelSpec::Vgg { cfg, .. } => zoo::vgg(&shape, classes, cfg),
            ModelSpec::Resnet { depth, .. } => zoo::resnet(&shape, classes, *depth),
            ModelSpec::Mobilenetv2 { width, .. } => zoo::mobilenetv2(&shape, classes, *width),
            ModelSpec::Onnx { .. } => Ok(self.import_onnx()?.graph),
        }
    }

    /// The ONNX model of an `arch = "onnx"` env, checked against the data set's input shape
    /// and number of classes.
    pub fn import_onnx(&self) -> Result<crate::onnx::Imported> {
        let Some(path) = self.model.onnx_path() else {
            return Err(self.invalid("model.arch", "not an onnx model"));
        };
        let imported = crate::onnx::import(path)?;
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

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
