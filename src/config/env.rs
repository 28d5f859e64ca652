//! The env file (`envs/*.toml`): which model, which data, what to prune and how to reward it.

use super::latency::{LatencySpec, MAX_LATENCY_BATCH, MAX_LATENCY_GRID, MAX_LATENCY_REPEATS};
pub use super::model::{Arch, ModelSpec};
use super::parse_toml;
pub use super::prune_spec::{CalibrationFrom, PruneSpec, WandaCompare};
use crate::check::{number, Checks, MAX_EPOCHS, MAX_LAYERS, MAX_SAMPLES, MAX_STEPS, MAX_WIDTH};
use crate::data::{DataOptions, DatasetKind, SplitName, SYNTHETIC_TRAIN};
use crate::error::{Error, Result};
use crate::graph::ModelGraph;
use crate::model::zoo::{self, VggItem};
use crate::model::TrainConfig;
use crate::prune::{Criterion, Granularity, Metric};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// Bytes per window of a `text` data set (the model's context); text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

fn default_eval_split() -> SplitName {
    SplitName::Val
}

fn default_val_size() -> usize {
    5000
}

/// Reward functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    Accuracy,
    /// A language model's `exp(-loss) = 1 / perplexity` (text data sets).
    Perplexity,
    ErrLogFlops,
    ErrLogParams,
    /// AMC's resource-constrained form with the latency table's prediction in microseconds:
    /// `-error · ln(latency_us)` (channel pruning with a latency table).
    ErrLogLatency,
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
    pub criterion: Option<Criterion>,
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
        if let Some(criterion) = overrides.criterion {
            self.prune.criterion = criterion;
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
        if let Some((key, message)) = self.model.problem() {
            return Err(self.invalid(key, message));
        }
        self.validate_text()?;
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
        if p.criterion.is_post_training() && p.granularity == Granularity::Channel {
            return Err(self.invalid(
                "prune.criterion",
                format!(
                    "{} prunes single weights; use granularity = \"unstructured\" or an N:M pattern such as \"2:4\"",
                    p.criterion.name()
                ),
            ));
        }
        if p.calibration == 0 {
            return Err(self.invalid("prune.calibration", "must be at least 1 sample"));
        }
        if p.residual_width && p.granularity != Granularity::Channel {
            return Err(self.invalid(
                "prune.residual_width",
                format!(
                    "prunes channels of the residual stream; it needs granularity = \"channel\", not \"{}\"",
                    String::from(p.granularity)
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
        if self.reward.kind == RewardKind::ErrLogLatency
            && (p.granularity != Granularity::Channel || self.latency_settings().is_none())
        {
            return Err(self.invalid(
                "reward.kind",
                "err-log-latency reads the latency table's prediction: use granularity = \"channel\" with a [latency] table or a latency budget",
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
            .at_most("prune.calibration", self.prune.calibration, MAX_SAMPLES)
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
            | ModelSpec::Mobilenetv2 { checkpoint: c, .. }
            | ModelSpec::Gpt { checkpoint: c, .. }
            | ModelSpec::Vit { checkpoint: c, .. } => *c = Some(checkpoint),
            ModelSpec::Onnx { path } | ModelSpec::HfGpt2 { path } => *path = absolute(path)?,
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
        match (self.model.onnx_path(), self.model.hf_path()) {
            (Some(path), _) => path.to_path_buf(),
            (_, Some(dir)) => dir.join("model.safetensors"),
            _ => self.checkpoint_path(),
        }
    }

    /// Every file the weights are read from: [`Self::weights_path`], and for an ONNX model
    /// the `<file>.data` beside it when there is one (PyTorch's external weights), so that a
    /// run notices new weights behind an unchanged graph file.
    pub fn weights_files(&self) -> Vec<PathBuf> {
        let main = self.weights_path();
        let mut files = vec![main.clone()];
        if let Some(dir) = self.model.hf_path() {
            files.push(dir.join("config.json"));
        }
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

    /// A text data set goes with a language model, a context and a perplexity reward, and
    /// those with nothing else.
    fn validate_text(&self) -> Result<()> {
        let text = self.data.dataset.is_text();
        let gpt = self.model.is_language_model();
        match self.data.context {
            None if text => {
                return Err(self.invalid(
                    "data.context",
                    "a text data set needs the bytes per window, e.g. context = 128",
                ))
            }
            Some(c) if !text => {
                return Err(self.invalid(
                    "data.context",
                    format!("{c}: only a text data set has a context; leave it out"),
                ))
            }
            Some(c) if !(2..=4096).contains(&c) => {
                return Err(self.invalid(
                    "data.context",
                    format!("{c} is out of range; use 2 to 4096"),
                ))
            }
            _ => {}
        }
        if gpt != text {
            return Err(self.invalid(
                "model.arch",
                if gpt {
                    "a gpt reads text: use dataset = \"text\" with a context"
                } else {
                    "a text data set needs a language model: use arch = \"gpt\""
                },
            ));
        }
        if text != (self.reward.kind == RewardKind::Perplexity) {
            return Err(self.invalid(
                "reward.kind",
                if text {
                    "a language model is rewarded by its perplexity: use kind = \"perplexity\""
                } else {
                    "perplexity is for text data sets; use accuracy, err-log-flops, err-log-params or err-log-latency"
                },
            ));
        }
        Ok(())
    }

    /// How to load the data set.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            kind: self.data.dataset,
            dir: self.data.dir.clone().unwrap_or_default(),
            val_size: self.data.val_size,
            seed: self.data.split_seed,
            context: self.data.context.unwrap_or(0),
        }
    }

    /// The model graph, sized for the data set's images (or text windows) and classes, with
    /// the residual width prunable when `prune.residual_width` asks.
    pub fn build_graph(&self) -> Result<ModelGraph> {
        let graph = self.build_dense_graph()?;
        if !self.prune.residual_width {
            return Ok(graph);
        }
        let transformer = graph.order().iter().any(|&i| {
            matches!(
                graph.node(i).op,
                crate::graph::Op::Embedding { .. } | crate::graph::Op::ClassToken { .. }
            )
        });
        if !transformer {
            return Err(self.invalid(
                "prune.residual_width",
                "only a transformer (gpt, vit, hf-gpt2) has a residual width to prune; remove the key",
            ));
        }
        graph.with_residual_width()
    }

    /// The model graph as pretraining builds it (no residual-width groups).
    pub fn build_dense_graph(&self) -> Result<ModelGraph> {
        let shape = self
            .data
            .dataset
            .input_shape(self.data.context.unwrap_or(0));
        let classes = self.data.dataset.classes();
        match &self.model {
            ModelSpec::Mlp { hidden, .. } => zoo::mlp(&shape, classes, hidden),
            ModelSpec::Lenet5 { .. } => zoo::lenet5(&shape, classes),
            ModelSpec::Vgg { cfg, .. } => zoo::vgg(&shape, classes, cfg),
            ModelSpec::Resnet { depth, .. } => zoo::resnet(&shape, classes, *depth),
            ModelSpec::Mobilenetv2 { width, .. } => zoo::mobilenetv2(&shape, classes, *width),
            ModelSpec::Gpt {
                layers,
                heads,
                width,
                mlp_ratio,
                ..
            } => zoo::gpt(&zoo::GptShape {
                vocab: classes,
                context: shape[0],
                layers: *layers,
                heads: *heads,
                width: *width,
                mlp_ratio: *mlp_ratio,
            }),
            ModelSpec::Vit {
                patch,
                layers,
                heads,
                width,
                mlp_ratio,
                ..
            } => zoo::vit(
                &shape,
                classes,
                &zoo::VitShape {
                    patch: *patch,
                    layers: *layers,
                    heads: *heads,
                    width: *width,
                    mlp_ratio: *mlp_ratio,
                },
            ),
            ModelSpec::Onnx { .. } => Ok(self.import_onnx()?.graph),
            ModelSpec::HfGpt2 { .. } => self.hf_gpt2()?.graph(),
        }
    }

    /// The Hugging Face GPT-2 directory of an `arch = "hf-gpt2"` env, read for the data's
    /// context and vocabulary.
    pub fn hf_gpt2(&self) -> Result<crate::model::hf::HfGpt2> {
        let Some(dir) = self.model.hf_path() else {
            return Err(self.invalid("model.arch", "not an hf-gpt2 model"));
        };
        crate::model::hf::read(
            dir,
            self.data.context.unwrap_or(0),
            self.data.dataset.classes(),
        )
    }

    /// The ONNX model of an `arch = "onnx"` env, checked against the data set's input shape
    /// and number of classes.
    pub fn import_onnx(&self) -> Result<crate::onnx::Imported> {
        let Some(path) = self.model.onnx_path() else {
            return Err(self.invalid("model.arch", "not an onnx model"));
        };
        let imported = crate::onnx::import(path)?;
        let shape = self.data.dataset.input_shape(0);
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
