//! Physical slimming of a channel-pruned model: a smaller graph with smaller tensors that
//! computes what the masked model computes.

use super::mask::Masker;
use super::units::UnitKind;
use crate::error::Result;
use crate::graph::Op;
use crate::model::GraphNet;
use tch::{Kind, Tensor};

/// Builds the slimmed model for channel keep ratios `keeps`, taking weights from `masked`
/// (the model with the same policy's masks applied). Kept channels are the ones the masks
/// keep, in their original order.
pub fn slim(masked: &GraphNet, masker: &Masker, keeps: &[f64]) -> Result<GraphNet> {
    let costs = masker.costs();
    let graph = costs.graph();
    let n = graph.graph().node_count();
    let device = masked.device();
    let mut out_index: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
    let mut in_keep: Vec<Option<Vec<bool>>> = vec![None; n];
    // Sliced members (after a Concat): which of their channels stay.
    let mut out_keep: Vec<Option<Vec<bool>>> = vec![None; n];
    for (u, unit) in costs.units().iter().enumerate() {
        let UnitKind::Group(g) = unit.kind else {
            continue;
        };
        let group = &graph.prunable_groups()[g];
        let kept = masker.kept_channels(u, keeps[u]);
        let kept_list: Vec<i64> = Vec::<i64>::try_from(&kept.to_device(tch::Device::Cpu))?;
        for &node in group.producers.iter().chain(&group.members) {
            out_index[node.index()] = Some(kept.shallow_clone());
        }
        let mut keep_channel = vec![false; group.channels];
        for &c in &kept_list {
            keep_channel[c as usize] = true;
        }
        for usage in &group.sliced {
            let width = graph.node(usage.node).out_shape[0];
            let channels = out_keep[usage.node.index()].get_or_insert_with(|| vec![true; width]);
            for (c, &keep) in keep_channel.iter().enumerate() {
                channels[usage.offset + c] &= keep;
            }
        }
        for usage in &group.consumers {
            let node = graph.node(usage.node);
            let width = match node.op {
                Op::Conv2d { in_channels, .. } => in_channels,
                Op::Linear { in_features, .. } => in_features,
                _ => continue,
            };
            let inputs = in_keep[usage.node.index()].get_or_insert_with(|| vec![true; width]);
            for (c, &keep) in keep_channel.iter().enumerate() {
                if !keep {
                    let start = usage.offset + c * usage.repeat;
                    inputs[start..start + usage.repeat]
                        .iter_mut()
                        .for_each(|v| *v = false);
                }
            }
        }
    }
    let positions = |keep: &Vec<bool>| -> Tensor {
        let idx: Vec<i64> = keep
            .iter()
            .enumerate()
            .filter(|(_, &v)| v)
            .map(|(i, _)| i as i64)
            .collect();
        Tensor::from_slice(&idx).to_device(device)
    };
    let in_index: Vec<Option<Tensor>> = in_keep.iter().map(|k| k.as_ref().map(positions)).collect();
    for (i, keep) in out_keep.iter().enumerate() {
        if let Some(keep) = keep {
            out_index[i] = Some(positions(keep));
        }
    }

    // The slimmed graph: same nodes, names and edges; smaller ops (the cost model's).
    let slim_graph = costs.pruned_graph(keeps)?;
    let slimmed = GraphNet::new(slim_graph, device);

    let source = masked.var_store().variables();
    let target = slimmed.var_store().variables();
    let _guard = tch::no_grad_guard();
    for &i in graph.order() {
        let node = graph.node(i);
        let own = target
            .iter()
            .filter(|(k, _)| k.rsplit_once('.').map(|(n, _)| n) == Some(node.name.as_str()));
        for (name, dst) in own {
            let mut dst = dst.shallow_clone();
            let mut t = source[name].detach();
            if let Some(idx) = &out_index[i.index()] {
                // Embeddings hold their channels along the last dimension.
                let dim = match node.op {
                    Op::Embedding { .. } | Op::PosEmbedding { .. } => 1,
                    _ => 0,
                };
                t = t.index_select(dim, idx);
            }
            if name.ends_with(".weight") && !node.op.is_depthwise() {
                if let Some(idx) = &in_index[i.index()] {
                    t = t.index_select(1, idx);
                }
            }
            dst.copy_(&t.to_kind(Kind::Float));
        }
    }
    Ok(slimmed)
}
