//! Prunable channel groups, found by traversal.
//!
//! Every tensor flowing through the graph has channels, and each channel belongs to a
//! *channel space*. A conv or linear layer creates a new space (its output channels); ops that
//! keep channels one-to-one (BatchNorm, activations, pools, a depthwise conv) pass their input's
//! space on; a residual Add merges the spaces of its inputs into one; Concat lays its inputs'
//! spaces side by side; Flatten repeats each channel over the spatial positions. A space is one
//! prunable group unless it is fixed: the model's input, the logits, or the sides of a grouped
//! (but not depthwise) convolution. Nothing here is specific to an architecture.

use super::{Activation, ModelGraph, Op};
use crate::error::Result;
use petgraph::graph::NodeIndex;

/// Where a group's channels enter a layer that reads them: input positions
/// `offset + channel * repeat .. offset + (channel + 1) * repeat` of `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelUse {
    pub node: NodeIndex,
    pub offset: usize,
    pub repeat: usize,
}

/// Output channels that must be pruned together, with every tensor they touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunableGroup {
    /// Name of the group's first producer.
    pub name: String,
    pub channels: usize,
    /// Convs and linear layers whose output channels are this group.
    pub producers: Vec<NodeIndex>,
    /// Layers with one parameter slice per channel of the group (BatchNorm, depthwise conv).
    pub members: Vec<NodeIndex>,
    /// Such layers whose channels include the group's at an offset, beside other groups'
    /// (a BatchNorm after a Concat, as in DenseNet): channel `c` of the group is their
    /// channel `offset + c` (`repeat` is 1).
    pub sliced: Vec<ChannelUse>,
    /// Layers whose input channels include this group.
    pub consumers: Vec<ChannelUse>,
    /// Channels that are pruned together as one unit: an attention head's `head_dim` for
    /// the queries, keys and values of an attention block, 1 otherwise.
    pub block: usize,
}

impl PrunableGroup {
    /// Units a keep ratio counts over: channels, or heads.
    pub fn units(&self) -> usize {
        self.channels / self.block.max(1)
    }

    /// The producer that stands for the group (features, ERK's shape): its first conv or
    /// linear producer, or its first producer if none is (a token embedding alone).
    pub fn lead(&self, graph: &ModelGraph) -> NodeIndex {
        self.producers
            .iter()
            .copied()
            .find(|&p| matches!(graph.node(p).op, Op::Conv2d { .. } | Op::Linear { .. }))
            .unwrap_or(self.producers[0])
    }

    /// Whether `node` holds one slice per channel of this group (a member, whole or sliced).
    pub fn carries(&self, node: NodeIndex) -> bool {
        self.members.contains(&node) || self.sliced.iter().any(|u| u.node == node)
    }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    space: usize,
    channels: usize,
    repeat: usize,
    /// A pruned (zeroed) channel is no longer zero here: it went through an activation
    /// with `f(0) != 0` (a sigmoid gate). Only a product with a zero channel clears it;
    /// a layer that reads such channels would see masking and slimming differ, so their
    /// space is fixed.
    nonzero: bool,
}

/// A conv or linear layer whose output channels are never pruned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub node: NodeIndex,
    pub reason: &'static str,
    /// The node where its channels meet what pins them.
    pub at: NodeIndex,
}

/// Why a channel space is fixed, and where.
#[derive(Debug, Clone, Copy)]
struct Pin {
    reason: &'static str,
    at: NodeIndex,
}

struct Spaces {
    parent: Vec<usize>,
    fixed: Vec<Option<Pin>>,
    channels: Vec<usize>,
    /// Channels pruned together (an attention head), by space; meaningful at roots.
    block: Vec<usize>,
}

impl Spaces {
    fn create(&mut self, channels: usize, fixed: Option<Pin>) -> usize {
        self.parent.push(self.parent.len());
        self.fixed.push(fixed);
        self.channels.push(channels);
        self.block.push(1);
        self.parent.len() - 1
    }

    fn root(&mut self, mut space: usize) -> usize {
        while self.parent[space] != space {
            self.parent[space] = self.parent[self.parent[space]];
            space = self.parent[space];
        }
        space
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            let (keep, drop) = (a.min(b), a.max(b));
            self.parent[drop] = keep;
            self.fixed[keep] = self.fixed[keep].or(self.fixed[drop]);
            self.block[keep] = lcm(self.block[keep], self.block[drop]);
        }
    }

    /// Channels of `space` move in blocks of `block` (and of any block set before).
    fn set_block(&mut self, space: usize, block: usize) {
        let root = self.root(space);
        self.block[root] = lcm(self.block[root], block);
    }

    fn fix(&mut self, space: usize, reason: &'static str, at: NodeIndex) {
        let root = self.root(space);
        self.fixed[root].get_or_insert(Pin { reason, at });
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    if a == 0 || b == 0 {
        a.max(b)
    } else {
        a / gcd(a, b) * b
    }
}

/// Why a softmax's or (by default) a LayerNorm's channels stay whole.
const NORMALISED: &str = "normalised over all channels (softmax or LayerNorm)";

/// Fixes the spaces of every segment, for `reason`, at `at`.
fn fix_all(spaces: &mut Spaces, segments: &[Segment], reason: &'static str, at: NodeIndex) {
    segments
        .iter()
        .for_each(|s| spaces.fix(s.space, reason, at));
}

/// Records `node` as carrying one parameter slice per channel of its input: a member of the
/// input's space, or, after a Concat, a sliced member of each space at its offset. Channels
/// repeated by a Flatten cannot be sliced that way; their spaces are fixed, never pruned.
fn add_member(
    spaces: &mut Spaces,
    members: &mut Vec<(usize, NodeIndex)>,
    sliced: &mut Vec<(usize, ChannelUse)>,
    input: &[Segment],
    node: NodeIndex,
) {
    match input {
        [single] if single.repeat == 1 => members.push((single.space, node)),
        segments if segments.iter().all(|s| s.repeat == 1) => {
            let mut offset = 0;
            for s in segments {
                let usage = ChannelUse {
                    node,
                    offset,
                    repeat: 1,
                };
                sliced.push((s.space, usage));
                offset += s.channels;
            }
        }
        segments => segments
            .iter()
            .for_each(|s| spaces.fix(s.space, "normalised per channel after a Flatten", node)),
    }
}

/// The groups and pinned layers of `model`. With `residual_width`, the widths that LayerNorms
/// normalise over are prunable too: a LayerNorm carries its input's channels like a BatchNorm
/// (and normalises over the kept ones only), and token embeddings, position embeddings and
/// class tokens hold one slice per channel. In a transformer that makes the residual stream
/// one group, coupled across every block.
pub(super) fn find_groups(
    model: &ModelGraph,
    residual_width: bool,
) -> Result<(Vec<PrunableGroup>, Vec<Pinned>)> {
    let graph = model.graph();
    let mut spaces = Spaces {
        parent: Vec::new(),
        fixed: Vec::new(),
        channels: Vec::new(),
        block: Vec::new(),
    };
    let mut segments: Vec<Vec<Segment>> = vec![Vec::new(); graph.node_count()];
    // (space, node) pairs, resolved to roots once all unions are done.
    let mut producers = Vec::new();
    let mut members = Vec::new();
    let mut sliced = Vec::new();
    let mut consumers = Vec::new();

    for &index in model.order() {
        let node = &graph[index];
        let inputs = model.inputs(index);
        let input_segments: Vec<Segment> = inputs
            .first()
            .map(|i| segments[i.index()].clone())
            .unwrap_or_default();
        let mut record_consumer = |spaces: &mut Spaces, segs: &[Segment]| {
            let mut offset = 0;
            for seg in segs {
                if seg.nonzero {
                    spaces.fix(
                        seg.space,
                        "a sigmoid gate's output reaches a layer directly",
                        index,
                    );
                }
                consumers.push((
                    seg.space,
                    ChannelUse {
                        node: index,
                        offset,
                        repeat: seg.repeat,
                    },
                ));
                offset += seg.channels * seg.repeat;
            }
        };
        let out = match &node.op {
            Op::Input { shape } => {
                let channels = shape.first().copied().unwrap_or(1);
                vec![Segment {
                    space: spaces.create(
                        channels,
                        Some(Pin {
                            reason: "the model's input",
                            at: index,
                        }),
                    ),
                    channels,
                    repeat: 1,
                    nonzero: false,
                }]
            }
            Op::Conv2d {
                out_channels,
                groups,
                ..
            } if node.op.is_depthwise() => {
                debug_assert!(*groups == *out_channels);
                add_member(
                    &mut spaces,
                    &mut members,
                    &mut sliced,
                    &input_segments,
                    index,
                );
                input_segments
            }
            Op::Conv2d {
                out_channels,
                groups,
                ..
            } => {
                record_consumer(&mut spaces, &input_segments);
                let grouped = *groups > 1;
                if grouped {
                    input_segments
                        .iter()
                        .for_each(|s| spaces.fix(s.space, "read by a grouped convolution", index));
                }
                let space = spaces.create(
                    *out_channels,
                    grouped.then_some(Pin {
                        reason: "written by a grouped convolution",
                        at: index,
                    }),
                );
                producers.push((space, index));
                vec![Segment {
                    space,
                    channels: *out_channels,
                    repeat: 1,
                    nonzero: false,
                }]
            }
            Op::Linear { out_features, .. } => {
                record_consumer(&mut spaces, &input_segments);
                let space = spaces.create(*out_features, None);
                producers.push((space, index));
                vec![Segment {
                    space,
                    channels: *out_features,
                    repeat: 1,
                    nonzero: false,
                }]
            }
            Op::Relu
            | Op::Relu6
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Pad { .. } => input_segments,
            Op::Act { act } => {
                let gate = matches!(act, Activation::Sigmoid | Activation::HardSigmoid);
                input_segments
                    .iter()
                    .map(|s| Segment {
                        nonzero: s.nonzero || gate,
                        ..*s
                    })
                    .collect()
            }
            // One slice per channel: BatchNorm always; with `residual_width` also LayerNorm,
            // the position embedding and the class token.
            // Otherwise a LayerNorm normalises over every channel (pinned, like a softmax's),
            // and the embeddings pass the stream's pinned channels on.
            Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::PosEmbedding { .. }
            | Op::ClassToken { .. } => {
                if residual_width || matches!(node.op, Op::BatchNorm { .. }) {
                    add_member(
                        &mut spaces,
                        &mut members,
                        &mut sliced,
                        &input_segments,
                        index,
                    );
                } else if matches!(node.op, Op::LayerNorm { .. }) {
                    fix_all(&mut spaces, &input_segments, NORMALISED, index);
                }
                input_segments
            }
            Op::Softmax => {
                // Normalises over every channel: none can be removed on its own.
                fix_all(&mut spaces, &input_segments, NORMALISED, index);
                input_segments
            }
            Op::ChannelShuffle { .. } | Op::Narrow { .. } => {
                // Channels move or are taken apart: what flows in and out stays whole.
                input_segments.iter().for_each(|s| {
                    spaces.fix(
                        s.space,
                        "moved or split by a channel shuffle or Split",
                        index,
                    )
                });
                let channels = node.out_shape[0];
                vec![Segment {
                    space: spaces.create(
                        channels,
                        Some(Pin {
                            reason: "moved or split by a channel shuffle or Split",
                            at: index,
                        }),
                    ),
                    channels,
                    repeat: 1,
                    nonzero: false,
                }]
            }
            Op::Flatten => {
                let in_shape = &graph[inputs[0]].out_shape;
                let spatial: usize = in_shape.iter().skip(1).product();
                input_segments
                    .iter()
                    .map(|s| Segment {
                        repeat: s.repeat * spatial.max(1),
                        ..*s
                    })
                    .collect()
            }
            Op::Add | Op::Mul => {
                let all: Vec<Vec<Segment>> =
                    inputs.iter().map(|i| segments[i.index()].clone()).collect();
                let aligned = all.iter().all(|segs| {
                    segs.len() == all[0].len()
                        && segs
                            .iter()
                            .zip(&all[0])
                            .all(|(a, b)| a.channels == b.channels && a.repeat == b.repeat)
                });
                if aligned {
                    for segs in &all[1..] {
                        for (a, b) in segs.iter().zip(&all[0]) {
                            spaces.union(a.space, b.space);
                        }
                    }
                } else {
                    all.iter().flatten().for_each(|s| {
                        spaces.fix(
                            s.space,
                            "added or multiplied with channels laid out otherwise",
                            index,
                        )
                    });
                }
                // A sum is nonzero where any term is; a product only where every factor is.
                let product = matches!(node.op, Op::Mul);
                all[0]
                    .iter()
                    .enumerate()
                    .map(|(k, s)| {
                        let flags = all.iter().filter_map(|segs| segs.get(k)).map(|s| s.nonzero);
                        let nonzero = if product {
                            aligned && flags.clone().all(|f| f)
                        } else {
                            flags.clone().any(|f| f)
                        };
                        Segment { nonzero, ..*s }
                    })
                    .collect()
            }
            Op::Embedding { width, .. } => {
                // The residual stream of a transformer: every block adds into it, and
                // LayerNorms normalise over it. Pinned unless its width is asked for.
                let pin = (!residual_width).then_some(Pin {
                    reason: "the residual stream of a transformer",
                    at: index,
                });
                let space = spaces.create(*width, pin);
                if residual_width {
                    producers.push((space, index));
                }
                vec![Segment {
                    space,
                    channels: *width,
                    repeat: 1,
                    nonzero: false,
                }]
            }
            // Positions move; channels stay.
            Op::ToTokens | Op::TakeToken { .. } => input_segments,
            Op::Attention { head_dim, .. } => {
                // Queries, keys and values of one head go together: their spaces are one,
                // pruned a head at a time. The output carries the values' channels.
                let all: Vec<Vec<Segment>> =
                    inputs.iter().map(|i| segments[i.index()].clone()).collect();
                let single = all.iter().all(|segs| {
                    matches!(segs.as_slice(), [s] if s.repeat == 1 && s.channels == all[0][0].channels)
                });
                if single {
                    for segs in &all[1..] {
                        spaces.union(segs[0].space, all[0][0].space);
                    }
                    spaces.set_block(all[0][0].space, *head_dim);
                    members.push((all[0][0].space, index));
                } else {
                    all.iter().flatten().for_each(|s| {
                        spaces.fix(s.space, "attention over channels laid out otherwise", index)
                    });
                }
                let nonzero = all.iter().flatten().any(|s| s.nonzero);
                all[2].iter().map(|s| Segment { nonzero, ..*s }).collect()
            }
            Op::LmHead { vocab, .. } => {
                record_consumer(&mut spaces, &input_segments);
                vec![Segment {
                    space: spaces.create(
                        *vocab,
                        Some(Pin {
                            reason: "the vocabulary of a language model",
                            at: index,
                        }),
                    ),
                    channels: *vocab,
                    repeat: 1,
                    nonzero: false,
                }]
            }
            Op::Concat => inputs
                .iter()
                .flat_map(|i| segments[i.index()].clone())
                .collect(),
            Op::Output => {
                input_segments
                    .iter()
                    .for_each(|s| spaces.fix(s.space, "the model's output", index));
                input_segments
            }
        };
        segments[index.index()] = out;
    }

    let mut groups: Vec<(usize, PrunableGroup)> = Vec::new();
    let mut pinned = Vec::new();
    for (space, producer) in producers {
        let root = spaces.root(space);
        if !spaces.channels[root].is_multiple_of(spaces.block[root]) {
            spaces.fix(
                root,
                "channels that are not a whole number of heads",
                producer,
            );
        }
        if let Some(pin) = spaces.fixed[root] {
            pinned.push(Pinned {
                node: producer,
                reason: pin.reason,
                at: pin.at,
            });
            continue;
        }
        match groups.iter_mut().find(|(r, _)| *r == root) {
            Some((_, group)) => group.producers.push(producer),
            None => groups.push((
                root,
                PrunableGroup {
                    name: graph[producer].name.clone(),
                    channels: spaces.channels[root],
                    producers: vec![producer],
                    members: Vec::new(),
                    sliced: Vec::new(),
                    consumers: Vec::new(),
                    block: spaces.block[root],
                },
            )),
        }
    }
    for (space, member) in members {
        let root = spaces.root(space);
        if let Some((_, group)) = groups.iter_mut().find(|(r, _)| *r == root) {
            if !group.members.contains(&member) {
                group.members.push(member);
            }
        }
    }
    for (space, usage) in sliced {
        let root = spaces.root(space);
        if let Some((_, group)) = groups.iter_mut().find(|(r, _)| *r == root) {
            group.sliced.push(usage);
        }
    }
    for (space, usage) in consumers {
        let root = spaces.root(space);
        if let Some((_, group)) = groups.iter_mut().find(|(r, _)| *r == root) {
            group.consumers.push(usage);
        }
    }
    Ok((groups.into_iter().map(|(_, g)| g).collect(), pinned))
}
