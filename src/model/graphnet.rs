//! `GraphNet`: executes any [`ModelGraph`] with tch. Parameters live in a `VarStore` under the
//! graph's node names (`<node>.weight`, `<node>.bias`, and for BatchNorm also
//! `<node>.running_mean` / `<node>.running_var`, which are not trained).

use crate::error::{Error, Result};
use crate::graph::{ModelGraph, Op};
use kernels::{activate, attention, bias_init, kaiming, layer_norm, masked_layer_norm, normal};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

mod kernels;
mod store;
pub use kernels::cross_entropy;

/// PyTorch's default BatchNorm momentum.
const BN_MOMENTUM: f64 = 0.1;

/// The tensors one node owns.
#[derive(Debug)]
enum NodeParams {
    None,
    Weighted {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    BatchNorm {
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
    },
    /// A LayerNorm whose channels are pruned (a member of a prunable group): it normalises
    /// over the channels `channels` keeps (1 keeps, 0 removes; a soft mask weighs), so the
    /// masked model computes what the slimmed one does. `channels` is a buffer, all ones in
    /// a dense model; checkpoints leave it out.
    MaskedNorm {
        weight: Tensor,
        bias: Tensor,
        channels: Tensor,
    },
}

/// The buffer of a [`NodeParams::MaskedNorm`].
pub const NORM_CHANNELS: &str = "channels";

/// A model graph with its parameters on one device.
pub struct GraphNet {
    graph: ModelGraph,
    vs: nn::VarStore,
    /// Indexed by node index.
    params: Vec<NodeParams>,
    /// For each position in execution order: the positions of the node's inputs.
    plan: Vec<Vec<usize>>,
    /// For each position in execution order, how many later nodes read its output.
    uses: Vec<usize>,
}

impl std::fmt::Debug for GraphNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphNet")
            .field("nodes", &self.graph.order().len())
            .field("device", &self.vs.device())
            .finish()
    }
}

/// What [`GraphNet::forward_visiting`] calls before each conv or linear node: the node and
/// the tensor flowing into it.
pub type Visitor<'a> = dyn FnMut(petgraph::graph::NodeIndex, &Tensor) + 'a;

impl GraphNet {
    /// Creates freshly initialised parameters for `graph` on `device`.
    pub fn new(graph: ModelGraph, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let mut params: Vec<NodeParams> = (0..graph.graph().node_count())
            .map(|_| NodeParams::None)
            .collect();
        for &index in graph.order() {
            let node = graph.node(index);
            let path = node
                .name
                .split('.')
                .fold(vs.root(), |path, part| path / part);
            params[index.index()] = match &node.op {
                Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => {
                    // Shape [out, fan_in...]: PyTorch's layout for both.
                    let shape: Vec<i64> = node
                        .op
                        .weight_shape()
                        .unwrap_or_default()
                        .iter()
                        .map(|&d| d as i64)
                        .collect();
                    let fan_in = shape[1..].iter().product::<i64>() as usize;
                    let conv = matches!(node.op, Op::Conv2d { .. });
                    // A linear layer over a sequence is a transformer's: GPT-2's
                    // initialisation, N(0, 0.02) and zero biases.
                    let sequence = graph
                        .inputs(index)
                        .first()
                        .is_some_and(|&i| graph.node(i).out_shape.len() == 2);
                    let (w_init, b_init) = if sequence {
                        (normal(0.02), Init::Const(0.0))
                    } else {
                        (kaiming(conv), bias_init(fan_in))
                    };
                    NodeParams::Weighted {
                        weight: path.var("weight", &shape, w_init),
                        bias: bias.then(|| path.var("bias", &[shape[0]], b_init)),
                    }
                }
                Op::Embedding { vocab: rows, width }
                | Op::PosEmbedding {
                    tokens: rows,
                    width,
                } => {
                    // GPT-2's initialisation.
                    NodeParams::Weighted {
                        weight: path.var("weight", &[*rows as i64, *width as i64], normal(0.02)),
                        bias: None,
                    }
                }
                Op::ClassToken { width } => NodeParams::Weighted {
                    weight: path.var("weight", &[*width as i64], normal(0.02)),
                    bias: None,
                },
                Op::LayerNorm { features, .. }
                    if graph.prunable_groups().iter().any(|g| g.carries(index)) =>
                {
                    let n = *features as i64;
                    NodeParams::MaskedNorm {
                        weight: path.var("weight", &[n], Init::Const(1.0)),
                        bias: path.var("bias", &[n], Init::Const(0.0)),
                        channels: path.ones_no_train(NORM_CHANNELS, &[n]),
                    }
                }
                Op::LayerNorm { features, .. } => {
                    let n = *features as i64;
                    NodeParams::Weighted {
                        weight: path.var("weight", &[n], Init::Const(1.0)),
                        bias: Some(path.var("bias", &[n], Init::Const(0.0))),
                    }
                }
                Op::BatchNorm { features } => {
                    let n = *features as i64;
                    NodeParams::BatchNorm {
                        weight: path.var("weight", &[n], Init::Const(1.0)),
                        bias: path.var("bias", &[n], Init::Const(0.0)),
                        running_mean: path.zeros_no_train("running_mean", &[n]),
                        running_var: path.ones_no_train("running_var", &[n]),
                    }
                }
                _ => NodeParams::None,
            };
        }
        let uses = graph
            .order()
            .iter()
            .map(|&i| graph.consumers(i).len())
            .collect();
        let plan = graph
            .order()
            .iter()
            .map(|&i| graph.inputs(i).iter().map(|&j| graph.position(j)).collect())
            .collect();
        Self {
            graph,
            vs,
            params,
            plan,
            uses,
        }
    }

    pub fn graph(&self) -> &ModelGraph {
        &self.graph
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits for a batch.
    ///
    /// # Shapes
    /// - `input`: `[N, ...input_shape]`
    /// - returns: `[N, ...output_shape]`
    pub fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        self.forward_with(input, train, BN_MOMENTUM)
    }

    /// `forward_t` with some of the model's tensors replaced: `overrides` maps tensor names
    /// (`<node>.weight`, `<node>.bias`) to tensors of the same shape, which may carry
    /// gradients from elsewhere (weights generated by another network). BatchNorm running
    /// statistics are always the model's own.
    pub fn forward_overriding(
        &self,
        input: &Tensor,
        train: bool,
        overrides: &std::collections::HashMap<String, Tensor>,
    ) -> Tensor {
        self.run(input, train, BN_MOMENTUM, Some(overrides), None)
    }

    /// An evaluation-mode forward that calls `visit(node, input)` just before each conv or
    /// linear node runs, with the tensor flowing into it. `visit` may change the node's
    /// weights in place (under `no_grad`): the forward then goes on with the changed weights,
    /// so every later node sees the outputs of the layers already changed. Post-training
    /// pruning runs this way.
    pub fn forward_visiting(&self, input: &Tensor, visit: &mut Visitor<'_>) -> Tensor {
        let _guard = tch::no_grad_guard();
        self.run(input, false, BN_MOMENTUM, None, Some(visit))
    }

    /// `forward_t` with the BatchNorm running-statistics momentum given.
    fn forward_with(&self, input: &Tensor, train: bool, bn_momentum: f64) -> Tensor {
        self.run(input, train, bn_momentum, None, None)
    }

    fn run(
        &self,
        input: &Tensor,
        train: bool,
        bn_momentum: f64,
        overrides: Option<&std::collections::HashMap<String, Tensor>>,
        mut visit: Option<&mut Visitor<'_>>,
    ) -> Tensor {
        let order = self.graph.order();
        // Values by execution position; each is dropped once its last reader has run.
        let mut values: Vec<Option<Tensor>> = (0..order.len()).map(|_| None).collect();
        let mut remaining = self.uses.clone();
        for (position, &index) in order.iter().enumerate() {
            let inputs = &self.plan[position];
            let args: Vec<&Tensor> = inputs
                .iter()
                .map(|&p| values[p].as_ref().expect("inputs run before their readers"))
                .collect();
            let replaced = overrides.and_then(|o| self.replaced(index, o));
            let params = replaced.as_ref().unwrap_or(&self.params[index.index()]);
            if let Some(visit) = visit.as_mut() {
                if matches!(
                    self.graph.node(index).op,
                    Op::Conv2d { .. } | Op::Linear { .. }
                ) {
                    visit(index, args[0]);
                }
            }
            let value = self.run_node(index, params, &args, input, train, bn_momentum);
            for &p in inputs {
                remaining[p] -= 1;
                if remaining[p] == 0 {
                    values[p] = None;
                }
            }
            values[position] = Some(value);
        }
        values
            .pop()
            .flatten()
            .expect("the last node of a graph is its Output")
    }

    /// The node's parameters with `overrides` substituted, if any of them is overridden.
    fn replaced(
        &self,
        index: petgraph::graph::NodeIndex,
        overrides: &std::collections::HashMap<String, Tensor>,
    ) -> Option<NodeParams> {
        let name = &self.graph.node(index).name;
        let pick = |tensor: &Tensor, suffix: &str| {
            overrides
                .get(&format!("{name}.{suffix}"))
                .unwrap_or(tensor)
                .shallow_clone()
        };
        match &self.params[index.index()] {
            NodeParams::None => None,
            NodeParams::Weighted { weight, bias } => Some(NodeParams::Weighted {
                weight: pick(weight, "weight"),
                bias: bias.as_ref().map(|b| pick(b, "bias")),
            }),
            NodeParams::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
            } => Some(NodeParams::BatchNorm {
                weight: pick(weight, "weight"),
                bias: pick(bias, "bias"),
                running_mean: running_mean.shallow_clone(),
                running_var: running_var.shallow_clone(),
            }),
            NodeParams::MaskedNorm {
                weight,
                bias,
                channels,
            } => Some(NodeParams::MaskedNorm {
                weight: pick(weight, "weight"),
                bias: pick(bias, "bias"),
                channels: pick(channels, NORM_CHANNELS),
            }),
        }
    }

    fn run_node(
        &self,
        index: petgraph::graph::NodeIndex,
        params: &NodeParams,
        args: &[&Tensor],
        input: &Tensor,
        train: bool,
        bn_momentum: f64,
    ) -> Tensor {
        let node = self.graph.node(index);
        match (&node.op, params) {
            (Op::Input { .. }, _) => channels_last(input),
            (
                Op::Conv2d {
                    stride,
                    padding,
                    dilation,
                    groups,
                    ..
                },
                NodeParams::Weighted { weight, bias },
            ) => channels_last(&args[0].conv2d(
                weight,
                bias.as_ref(),
                stride.pair(),
                padding.pair(),
                dilation.pair(),
                *groups as i64,
            )),
            (Op::Linear { .. }, NodeParams::Weighted { weight, bias }) => {
                args[0].linear(weight, bias.as_ref())
            }
            (
                Op::BatchNorm { .. },
                NodeParams::BatchNorm {
                    weight,
                    bias,
                    running_mean,
                    running_var,
                },
            ) => Tensor::batch_norm(
                args[0],
                Some(weight),
                Some(bias),
                Some(running_mean),
                Some(running_var),
                train,
                bn_momentum,
                1e-5,
                true,
            ),
            (Op::Relu, _) => args[0].relu(),
            (Op::Relu6, _) => args[0].clamp(0.0, 6.0),
            (Op::Act { act }, _) => activate(args[0], *act),
            (
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                    ceil,
                },
                _,
            ) => args[0].max_pool2d(kernel.pair(), stride.pair(), padding.pair(), [1, 1], *ceil),
            (
                Op::AvgPool {
                    kernel,
                    stride,
                    padding,
                },
                _,
            ) => args[0].avg_pool2d(
                kernel.pair(),
                stride.pair(),
                padding.pair(),
                false,
                true,
                None,
            ),
            (Op::GlobalAvgPool, _) => args[0].adaptive_avg_pool2d([1, 1]),
            (Op::Flatten, _) => args[0].flatten(1, -1),
            (Op::Add, _) => args[1..]
                .iter()
                .fold(args[0].shallow_clone(), |acc, x| acc + *x),
            (Op::Mul, _) => args[1..]
                .iter()
                .fold(args[0].shallow_clone(), |acc, x| acc * *x),
            (
                Op::Pad {
                    top,
                    left,
                    bottom,
                    right,
                },
                _,
            ) => {
                args[0].constant_pad_nd([*left as i64, *right as i64, *top as i64, *bottom as i64])
            }
            (Op::Softmax, _) => args[0].softmax(-1, args[0].kind()),
            (Op::LayerNorm { eps, features }, NodeParams::Weighted { weight, bias })
                if args[0].dim() == 3 =>
            {
                // A sequence, `[N, tokens, channels]`: over its last dimension.
                args[0].layer_norm([*features as i64], Some(weight), bias.as_ref(), *eps, false)
            }
            (Op::LayerNorm { eps, .. }, NodeParams::Weighted { weight, bias }) => {
                layer_norm(args[0], weight, bias.as_ref(), *eps)
            }
            (
                Op::LayerNorm { eps, .. },
                NodeParams::MaskedNorm {
                    weight,
                    bias,
                    channels,
                },
            ) => masked_layer_norm(args[0], weight, bias, channels, *eps),
            (Op::Embedding { .. }, NodeParams::Weighted { weight, .. }) => {
                Tensor::embedding(weight, &args[0].to_kind(Kind::Int64), -1, false, false)
            }
            (Op::PosEmbedding { .. }, NodeParams::Weighted { weight, .. }) => {
                args[0] + weight.narrow(0, 0, args[0].size()[1])
            }
            (
                Op::Attention {
                    heads,
                    head_dim,
                    causal,
                },
                _,
            ) => attention(args, *heads as i64, *head_dim as i64, *causal),
            // `[N, C, H, W]` to the sequence `[N, H · W, C]`.
            (Op::ToTokens, _) => args[0].flatten(2, -1).transpose(1, 2),
            (Op::ClassToken { .. }, NodeParams::Weighted { weight, .. }) => {
                let size = args[0].size();
                let token = weight.view([1, 1, -1]).expand([size[0], 1, size[2]], false);
                Tensor::cat(&[&token, args[0]], 1)
            }
            (Op::TakeToken { index }, _) => args[0].select(1, *index as i64),
            (Op::LmHead { embedding, .. }, _) => {
                let tied = self.graph.find(embedding).map(|i| &self.params[i.index()]);
                match tied {
                    Some(NodeParams::Weighted { weight, .. }) => {
                        args[0].linear::<&Tensor>(weight, None)
                    }
                    _ => unreachable!("the graph checks that {embedding} is an Embedding"),
                }
            }
            (Op::ChannelShuffle { groups }, _) => {
                let size = args[0].size();
                let (n, c) = (size[0], size[1]);
                let g = *groups as i64;
                let mut split = vec![n, g, c / g];
                split.extend_from_slice(&size[2..]);
                args[0]
                    .view(split.as_slice())
                    .transpose(1, 2)
                    .contiguous()
                    .view(size.as_slice())
            }
            (Op::Narrow { start, len }, _) => args[0].narrow(1, *start as i64, *len as i64),
            (Op::Concat, _) => Tensor::cat(args, 1),
            (Op::Output, _) => args[0].shallow_clone(),
            (op, _) => unreachable!("{} has no parameters for {}", node.name, op.type_name()),
        }
    }

    /// Recomputes every BatchNorm's running statistics from `batches` batches of `split`
    /// (a cumulative average, as after pruning changes what flows into them). Weights are
    /// not touched.
    pub fn recalibrate_batch_norm(
        &self,
        split: &crate::data::Split,
        batches: usize,
        batch_size: usize,
        rng: &mut rand::rngs::StdRng,
    ) {
        if !self
            .params
            .iter()
            .any(|p| matches!(p, NodeParams::BatchNorm { .. }))
        {
            // Nothing to recalibrate (a transformer): no forward passes either.
            return;
        }
        let _guard = tch::no_grad_guard();
        for params in &self.params {
            if let NodeParams::BatchNorm {
                running_mean,
                running_var,
                ..
            } = params
            {
                let _ = running_mean.shallow_clone().fill_(0.0);
                let _ = running_var.shallow_clone().fill_(1.0);
            }
        }
        for (k, (images, _)) in split
            .batches(batch_size, Some(rng))
            .take(batches)
            .enumerate()
        {
            let _ = self.forward_with(&images, true, 1.0 / (k as f64 + 1.0));
        }
    }

    /// Mean cross-entropy loss and top-1 accuracy over a split, in eval mode (per token for a
    /// language model: the loss in nats per token, the accuracy of predicting the next one).
    pub fn evaluate(&self, split: &crate::data::Split, batch_size: usize) -> Result<Evaluation> {
        let _guard = tch::no_grad_guard();
        let mut loss_sum = 0f64;
        let mut correct = 0i64;
        let mut targets = 0i64;
        for (images, labels) in split.batches(batch_size, None) {
            let logits = self.forward_t(&images, false);
            let loss = cross_entropy(&logits, &labels);
            loss_sum += f64::try_from(&loss)? * labels.numel() as f64;
            correct += i64::try_from(logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64))?;
            targets += labels.numel() as i64;
        }
        // Per image, or per token of a language model.
        let n = targets.max(1) as f64;
        let loss = loss_sum / n;
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                what: "evaluation loss".into(),
                value: loss,
            });
        }
        Ok(Evaluation {
            loss,
            accuracy: correct as f64 / n,
        })
    }
}

/// A batch of feature maps `[N, C, H, W]` laid out channels-last in memory (the same values
/// and shape; strides of an `[N, H, W, C]` tensor). libtorch's CPU convolutions run much
/// faster on it, depthwise ones most (about eight times at MobileNetV2's sizes), and later
/// feature maps keep the layout. A single-channel image is the same in both layouts, and
/// libtorch then keeps the default one, so each convolution's output is converted too (a
/// no-op when it already is channels-last). Other tensors (token ids, sequences) are passed
/// through.
pub fn channels_last(input: &Tensor) -> Tensor {
    if input.dim() == 4 && input.size()[1] > 1 && input.stride()[1] != 1 {
        input
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2])
    } else {
        input.shallow_clone()
    }
}

/// Loss and accuracy on a split.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}
