//! MetaPruning's first stage inside a search: the PruningNet trained (or loaded, on resume)
//! before the first episode, then set as the evaluator's weight source.

use super::agent_file::save_agent;
use super::{Search, PRUNINGNET_FILE};
use crate::config::EnvSpec;
use crate::error::{Error, Result};
use crate::eval::pruningnet::PruningNet;
use crate::prune::Granularity;
use std::sync::atomic::Ordering;

/// Whether `spec` can be scored with a PruningNet's weights: channel pruning (it generates
/// weights for channel counts), with BatchNorm recalibrated (generated weights have no
/// running statistics of their own).
pub fn check_pruningnet_env(spec: &EnvSpec) -> Result<()> {
    let invalid = |key: &str, message: &str| Error::Invalid {
        path: spec.path.clone(),
        key: key.into(),
        message: message.into(),
    };
    if spec.prune.granularity != Granularity::Channel {
        return Err(invalid(
            "prune.granularity",
            "a PruningNet generates weights for channel counts; set granularity = \"channel\" (or choose another agent)",
        ));
    }
    if spec.reward.recalibration_batches == 0 {
        return Err(invalid(
            "reward.recalibration_batches",
            "a PruningNet's weights have no BatchNorm statistics of their own; give at least 1 batch (default 20)",
        ));
    }
    Ok(())
}

impl Search<'_> {
    /// The PruningNet of a `pruningnet` search: loaded from the run folder's
    /// `pruningnet.safetensors` when a run being resumed already trained it, else trained on
    /// the evaluator's training split (logging its loss) and saved there. The evaluator then
    /// scores every policy from the PruningNet's weights.
    pub(super) fn prepare_pruningnet(&mut self) -> Result<()> {
        let Search {
            config,
            spec,
            pretrained,
            evaluator,
            folder,
            sink,
            progress,
            stop,
            ..
        } = self;
        check_pruningnet_env(spec)?;
        let path = folder.dir.join(PRUNINGNET_FILE);
        let net = if path.is_file() {
            PruningNet::load(&path, pretrained)?
        } else {
            let mut net = PruningNet::new(pretrained, &config.pruningnet)?;
            let wall = evaluator.wall(&spec.path)?;
            let bar = progress.bar(config.pruningnet.steps as u64, "training the PruningNet");
            let mut mean = 0.0;
            net.train(
                &config.pruningnet,
                evaluator.masker(),
                &wall,
                evaluator.train_split(),
                config.seed,
                |step, loss| {
                    if stop.load(Ordering::SeqCst) {
                        return Err(Error::Interrupted {
                            message: format!(
                                "while training the PruningNet, before any episode; start again with: autoprune search --resume {}",
                                folder.dir.display()
                            ),
                        });
                    }
                    mean = if step == 0 { loss } else { 0.98 * mean + 0.02 * loss };
                    sink.scalar("pruningnet/loss", loss, step);
                    bar.set_position(step as u64 + 1);
                    bar.set_message(format!("loss {mean:.4}"));
                    Ok(())
                },
            )?;
            bar.finish_and_clear();
            sink.flush()?;
            save_agent(&net.to_checkpoint(), &path)?;
            net
        };
        evaluator.set_source(Some(Box::new(net)));
        Ok(())
    }
}
