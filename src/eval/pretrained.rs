//! The pretrained model an env scores policies on: an ONNX model's own initializers, or the
//! zoo model's checkpoint (pretrained first, and saved, when the checkpoint is missing).

use crate::config::EnvSpec;
use crate::data::{self, Dataset};
use crate::error::Result;
use crate::model::{load_or_train, GraphNet};
use crate::runlog::Progress;
use tch::Device;

/// An env's pretrained model and its data set, on one device.
pub struct Pretrained {
    pub net: GraphNet,
    pub data: Dataset,
}

/// Loads the env's data and pretrained model on `device` (training it with `seed` first if its
/// checkpoint is missing, with progress on `progress`). With `prune.residual_width` the model
/// runs on the graph whose residual stream is prunable.
pub fn pretrained(
    spec: &EnvSpec,
    device: Device,
    seed: u64,
    progress: &Progress,
) -> Result<Pretrained> {
    let mut pretrained = dense(spec, device, seed, progress)?;
    if spec.prune.residual_width {
        pretrained.net = pretrained.net.regraphed(spec.build_graph()?)?;
    }
    Ok(pretrained)
}

fn dense(spec: &EnvSpec, device: Device, seed: u64, progress: &Progress) -> Result<Pretrained> {
    if let Some(path) = spec.model.onnx_path() {
        let imported = spec.import_onnx()?;
        let data = data::load(&spec.data_options(), device)?;
        let net = crate::onnx::load_net(imported, device, path)?;
        return Ok(Pretrained { net, data });
    }
    if let Some(dir) = spec.model.hf_path() {
        let data = data::load(&spec.data_options(), device)?;
        let net = spec.hf_gpt2()?.load(dir, device)?;
        return Ok(Pretrained { net, data });
    }
    let graph = spec.build_dense_graph()?;
    let data = data::load(&spec.data_options(), device)?;
    let net = load_or_train(
        graph,
        &spec.checkpoint_path(),
        &data,
        &spec.train,
        seed,
        progress,
    )?;
    Ok(Pretrained { net, data })
}
