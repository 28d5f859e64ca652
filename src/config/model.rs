//! `[model]` of an env file: the architecture and the keys that size it.

use crate::check::{number, MAX_LAYERS, MAX_WIDTH};
use crate::model::zoo::VggItem;
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
    Gpt,
    Vit,
    /// A Hugging Face GPT-2 directory (`model.path`).
    #[serde(rename = "hf-gpt2")]
    HfGpt2,
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
    /// A GPT-2-style decoder (pre-LayerNorm blocks, GELU MLPs, learned positions, LM head
    /// tied to the token embedding) over a text data set's bytes; its context is the data
    /// set's.
    Gpt {
        layers: usize,
        heads: usize,
        /// Residual width (a multiple of `heads`).
        width: usize,
        /// Hidden neurons of each MLP, as a multiple of `width`.
        #[serde(default = "default_mlp_ratio")]
        mlp_ratio: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    /// A Vision Transformer over an image data set: square patches of side `patch` as
    /// tokens after a class token, non-causal pre-LayerNorm blocks.
    Vit {
        patch: usize,
        layers: usize,
        heads: usize,
        width: usize,
        #[serde(default = "default_mlp_ratio")]
        mlp_ratio: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<PathBuf>,
    },
    /// A Hugging Face `GPT2LMHeadModel` directory (`config.json` and `model.safetensors`):
    /// its weights are the pretrained ones, so it has no checkpoint.
    #[serde(rename = "hf-gpt2")]
    HfGpt2 { path: PathBuf },
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

fn default_mlp_ratio() -> usize {
    4
}

impl ModelSpec {
    pub fn arch(&self) -> Arch {
        match self {
            ModelSpec::Mlp { .. } => Arch::Mlp,
            ModelSpec::Lenet5 { .. } => Arch::Lenet5,
            ModelSpec::Vgg { .. } => Arch::Vgg,
            ModelSpec::Resnet { .. } => Arch::Resnet,
            ModelSpec::Mobilenetv2 { .. } => Arch::Mobilenetv2,
            ModelSpec::Gpt { .. } => Arch::Gpt,
            ModelSpec::Vit { .. } => Arch::Vit,
            ModelSpec::HfGpt2 { .. } => Arch::HfGpt2,
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

    /// The Hugging Face GPT-2 directory of an `hf-gpt2` model.
    pub fn hf_path(&self) -> Option<&Path> {
        match self {
            ModelSpec::HfGpt2 { path } => Some(path),
            _ => None,
        }
    }

    /// Whether the model brings its own weights (onnx, hf-gpt2) rather than a checkpoint
    /// that `pretrain` writes.
    pub fn brings_weights(&self) -> bool {
        matches!(self, ModelSpec::Onnx { .. } | ModelSpec::HfGpt2 { .. })
    }

    /// Whether the model is a language model (reads text).
    pub fn is_language_model(&self) -> bool {
        matches!(self, ModelSpec::Gpt { .. } | ModelSpec::HfGpt2 { .. })
    }

    /// The checkpoint a zoo model names (`None`: the default, or an onnx model).
    pub(super) fn checkpoint(&self) -> Option<&PathBuf> {
        match self {
            ModelSpec::Mlp { checkpoint, .. }
            | ModelSpec::Lenet5 { checkpoint }
            | ModelSpec::Vgg { checkpoint, .. }
            | ModelSpec::Resnet { checkpoint, .. }
            | ModelSpec::Mobilenetv2 { checkpoint, .. }
            | ModelSpec::Gpt { checkpoint, .. }
            | ModelSpec::Vit { checkpoint, .. } => checkpoint.as_ref(),
            ModelSpec::Onnx { .. } | ModelSpec::HfGpt2 { .. } => None,
        }
    }
}

impl ModelSpec {
    /// The first key whose value cannot build a model, and why (`None`: all fit).
    pub(super) fn problem(&self) -> Option<(&'static str, String)> {
        let problem = |key, message: String| Some((key, message));
        match self {
            ModelSpec::Vgg { cfg, .. } if !cfg.iter().any(|i| matches!(i, VggItem::Conv(_))) => {
                problem("model.cfg", "vgg needs a cfg list with at least one conv width, e.g. [32, \"M\", 64, \"M\"]".into())
            }
            ModelSpec::Vgg { cfg, .. } if cfg.contains(&VggItem::Conv(0)) => {
                problem("model.cfg", "conv widths must be at least 1".into())
            }
            ModelSpec::Resnet { depth, .. } if !(*depth >= 8 && (depth - 2).is_multiple_of(6)) => {
                problem(
                    "model.depth",
                    format!("{depth} is not 6n+2 with n >= 1; use 20, 32, 44, 56, 110"),
                )
            }
            ModelSpec::Mobilenetv2 { width, .. } if !(*width > 0.0 && *width <= 4.0) => problem(
                "model.width",
                format!(
                    "{} is out of range; use a multiplier in (0, 4], e.g. 1.0 or 0.5",
                    number(*width)
                ),
            ),
            ModelSpec::Mlp { hidden, .. } if hidden.contains(&0) => {
                problem("model.hidden", "hidden widths must be at least 1".into())
            }
            ModelSpec::Gpt { layers, .. } | ModelSpec::Vit { layers, .. }
                if *layers == 0 || *layers > MAX_LAYERS =>
            {
                problem(
                    "model.layers",
                    format!("{layers} is out of range; use 1 to {MAX_LAYERS}"),
                )
            }
            ModelSpec::Vit { patch, .. } if *patch == 0 || *patch > 64 => problem(
                "model.patch",
                format!("{patch} is out of range; use a side that divides the image, e.g. 4 or 7 for 28x28"),
            ),
            ModelSpec::Gpt {
                heads,
                width,
                mlp_ratio,
                ..
            }
            | ModelSpec::Vit {
                heads,
                width,
                mlp_ratio,
                ..
            } if *heads == 0
                || *width == 0
                || *width > MAX_WIDTH
                || !width.is_multiple_of(*heads)
                || *mlp_ratio == 0
                || *mlp_ratio > 16 =>
            {
                problem("model.width", format!("width {width} with {heads} heads and mlp_ratio {mlp_ratio}: the width must be 1 to {MAX_WIDTH} and a multiple of heads (at least 1), mlp_ratio 1 to 16"))
            }
            _ => None,
        }
    }
}
