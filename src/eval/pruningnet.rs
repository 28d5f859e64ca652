//! MetaPruning's PruningNet (Liu et al., ICCV 2019): a small hypernetwork per weight layer
//! that maps the layer's channel encoding (the fractions of its input and output channels
//! kept) to the layer's whole weight tensor, which the channel masks then crop to the kept
//! channels. Trained on the training split with a fresh random encoding at every step, it
//! gives good weights for any encoding at once, so an evolutionary search can score each
//! candidate with generated weights and recalibrated BatchNorm, without fine-tuning it.
//!
//! Channels are kept in each group's fixed importance order (the evaluator's masks), so
//! "the first c channels" of MetaPruning's crop is "the c most important" here; the kept
//! sets are nested as c grows, exactly as a crop's are. Biases and BatchNorm scales and
//! shifts are not generated: they are plain parameters of the PruningNet, masked the same
//! way.

use super::WeightSource;
use crate::config::PruningNetConfig;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::GraphNet;
use crate::prune::{ActionWall, Mask, Masker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

/// One weight layer's hypernetwork: encoding (2) → hidden → the whole weight tensor.
struct Hyper {
    tensor: String,
    shape: Vec<i64>,
    /// The prunable groups among its input channels: (the group's first producer's weight
    /// tensor, whose mask says how much of the group is kept; input channels it spans).
    inputs: Vec<(String, f64)>,
    /// Input channels in all (`shape[1]`, times the spatial size after a flatten).
    fan_in_channels: f64,
    hidden: nn::Linear,
    out: nn::Linear,
}

pub struct PruningNet {
    /// Runs the model with the generated tensors (its own BatchNorm statistics move while
    /// training; its parameter values are never used for generated tensors).
    net: GraphNet,
    vs: nn::VarStore,
    layers: Vec<Hyper>,
    /// Tensors that are parameters of the PruningNet itself (biases, BatchNorm affine).
    plain: Vec<(String, Tensor)>,
    optimizer: nn::Optimizer,
    /// What it was built with (recorded in its checkpoint).
    config: PruningNetConfig,
}

impl std::fmt::Debug for PruningNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PruningNet")
            .field("layers", &self.layers.len())
            .field("plain", &self.plain.len())
            .finish()
    }
}

/// A variable-store path from a tensor name (dots would nest; keep one level).
fn key(name: &str) -> String {
    name.replace('.', "__")
}

impl PruningNet {
    /// A PruningNet for `model`'s graph, on its device. Every hypernetwork starts by
    /// generating `model`'s own weights for every encoding (its output bias is the weight,
    /// its output matrix is small), so training starts from the model.
    pub fn new(model: &GraphNet, config: &PruningNetConfig) -> Result<Self> {
        let net = model.duplicate();
        let vs = nn::VarStore::new(model.device());
        let root = vs.root();
        let mut layers = Vec::new();
        let mut plain = Vec::new();
        let mut named: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        // Which groups feed each layer's input channels.
        let graph = model.graph();
        let mut inputs: HashMap<String, Vec<(String, f64)>> = HashMap::new();
        for group in graph.prunable_groups() {
            if group.producers.is_empty() {
                continue;
            }
            let producer = group.lead(graph);
            let producer = format!("{}.weight", graph.node(producer).name);
            for usage in &group.consumers {
                inputs
                    .entry(format!("{}.weight", graph.node(usage.node).name))
                    .or_default()
                    .push((
                        producer.clone(),
                        (group.channels * usage.repeat.max(1)) as f64,
                    ));
            }
        }
        let _guard = tch::no_grad_guard();
        for (name, value) in named {
            let shape = value.size();
            if shape.len() >= 2 {
                let numel: i64 = shape.iter().product();
                let path = &root / key(&name);
                let hidden = nn::linear(
                    &path / "hidden",
                    2,
                    config.hidden as i64,
                    Default::default(),
                );
                let bound = 1e-3 / (config.hidden as f64).sqrt();
                let out = nn::linear(
                    &path / "out",
                    config.hidden as i64,
                    numel,
                    nn::LinearConfig {
                        ws_init: nn::Init::Uniform {
                            lo: -bound,
                            up: bound,
                        },
                        bs_init: Some(nn::Init::Const(0.0)),
                        bias: true,
                    },
                );
                if let Some(bias) = &out.bs {
                    bias.shallow_clone().copy_(&value.detach().view([-1]));
                }
                layers.push(Hyper {
                    inputs: inputs.remove(&name).unwrap_or_default(),
                    fan_in_channels: shape[1] as f64,
                    tensor: name,
                    shape,
                    hidden,
                    out,
                });
            } else {
                let var = root.var_copy(&key(&name), &value.detach());
                plain.push((name, var));
            }
        }
        let optimizer = nn::Adam::default().build(&vs, config.lr)?;
        Ok(Self {
            net,
            vs,
            layers,
            plain,
            optimizer,
            config: config.clone(),
        })
    }

    /// The hypernetworks' and plain parameters (for checkpoints).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The generated tensors' names, in order.
    pub fn generated(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.tensor.as_str()).collect()
    }

    /// Every tensor the PruningNet provides for `masks`' encoding, unmasked.
    fn tensors(&self, masks: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
        let device = self.vs.device();
        let mut out = Vec::with_capacity(self.layers.len() + self.plain.len());
        for layer in &self.layers {
            let [kept_in, kept_out] = layer.encoding(masks);
            let e = Tensor::from_slice(&[kept_in, kept_out])
                .view([1, 2])
                .to_device(device);
            let weight = layer
                .out
                .forward(&layer.hidden.forward(&e).relu())
                .view(layer.shape.as_slice());
            out.push((layer.tensor.clone(), weight));
        }
        for (name, var) in &self.plain {
            out.push((name.clone(), var.shallow_clone()));
        }
        out
    }

    /// The generated weights for one encoding, as `Evaluator` starts from them.
    pub fn generate(&self, masks: &[Mask]) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        self.tensors(&merge(masks))
            .into_iter()
            .map(|(n, t)| (n, t.detach()))
            .collect()
    }

    /// One step of training on a batch, with the tensors generated for `masks`' encoding
    /// and cropped by them. Returns the batch's loss.
    pub fn train_step(&mut self, masks: &[Mask], images: &Tensor, labels: &Tensor) -> Result<f64> {
        let merged = merge(masks);
        let overrides: HashMap<String, Tensor> = self
            .tensors(&merged)
            .into_iter()
            .map(|(name, t)| {
                let t = match merged.get(&name) {
                    Some(mask) => t * mask,
                    None => t,
                };
                (name, t)
            })
            .collect();
        let loss = crate::model::cross_entropy(
            &self.net.forward_overriding(images, true, &overrides),
            labels,
        );
        // Checked before the step, so a diverged batch never reaches the weights.
        let value = f64::try_from(&loss)?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "PruningNet training loss".into(),
                value,
            });
        }
        self.optimizer.backward_step(&loss);
        Ok(value)
    }

    /// Trains for `config.steps` steps on `train`, each with a random encoding: a random
    /// keep profile in the keep bounds, scaled to `wall`'s budget for a `budget_share` of
    /// the steps. `on_step(step, loss)` sees every step (progress, logging).
    pub fn train(
        &mut self,
        config: &PruningNetConfig,
        masker: &Masker,
        wall: &ActionWall,
        train: &Split,
        seed: u64,
        mut on_step: impl FnMut(usize, f64) -> Result<()>,
    ) -> Result<()> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9E7A_4E75);
        let mut batches_rng = StdRng::seed_from_u64(seed);
        let units = wall.costs().units().len();
        let [lo, hi] = wall.budget().bounds;
        let mut step = 0;
        while step < config.steps {
            let batches: Vec<(Tensor, Tensor)> = train
                .batches(config.batch_size, Some(&mut batches_rng))
                .collect();
            if batches.is_empty() {
                return Err(Error::data("<train split>", "no training samples"));
            }
            for (images, labels) in batches {
                let profile: Vec<f64> = (0..units).map(|_| rng.random_range(lo..=hi)).collect();
                let keeps = if rng.random_bool(config.budget_share) {
                    wall.fit(&profile)
                } else {
                    wall.costs().effective_keeps(&profile)
                };
                let loss = self.train_step(&masker.masks(&keeps), &images, &labels)?;
                on_step(step, loss)?;
                step += 1;
                if step == config.steps {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl WeightSource for PruningNet {
    fn weights(&self, masks: &[Mask]) -> Result<Vec<(String, Tensor)>> {
        Ok(self.generate(masks))
    }
}

/// One mask per tensor: the product of every mask given for it.
fn merge(masks: &[Mask]) -> HashMap<String, Tensor> {
    let mut merged: HashMap<String, Tensor> = HashMap::new();
    for m in masks {
        let mask = match merged.remove(&m.tensor) {
            Some(previous) => previous * &m.mask,
            None => m.mask.shallow_clone(),
        };
        merged.insert(m.tensor.clone(), mask);
    }
    merged
}

/// The fraction of a mask's channels kept (1 without a mask): channel masks are a vector of
/// 0s and 1s along the output dimension.
fn kept_fraction(mask: Option<&Tensor>) -> f64 {
    match mask {
        None => 1.0,
        Some(mask) => {
            let _guard = tch::no_grad_guard();
            f64::try_from(mask.mean(Kind::Float)).unwrap_or(1.0)
        }
    }
}

impl Hyper {
    /// The layer's encoding: the fractions of its input and of its output channels kept.
    fn encoding(&self, masks: &HashMap<String, Tensor>) -> [f32; 2] {
        let kept_out = kept_fraction(masks.get(&self.tensor));
        let total = self.fan_in_channels.max(1.0);
        let pruned: f64 = self
            .inputs
            .iter()
            .map(|(producer, channels)| (1.0 - kept_fraction(masks.get(producer))) * channels)
            .sum();
        let kept_in = (1.0 - pruned / total).clamp(0.0, 1.0);
        [kept_in as f32, kept_out as f32]
    }
}

impl PruningNet {
    /// The network and config, for an agent checkpoint.
    pub fn to_checkpoint(&self) -> crate::agents::Checkpoint<'_> {
        crate::agents::Checkpoint {
            vars: self.var_store(),
            kind: "pruningnet",
            config: serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".into()),
        }
    }

    /// A PruningNet from its checkpoint (the `pruningnet.safetensors` of a `pruningnet` search),
    /// for `model` (the env's pretrained model, whose graph it must fit): the hypernetworks'
    /// width is read from the file.
    pub fn load(path: &Path, model: &GraphNet) -> Result<PruningNet> {
        let tensors = tch::Tensor::read_safetensors(path).map_err(|e| {
            Error::data(
                path,
                format!(
                    "not a readable safetensors file ({}); give the pruningnet.safetensors of a pruningnet search",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            )
        })?;
        let recorded: Option<PruningNetConfig> =
            crate::model::checkpoint::recorded_config(path, "pruningnet")?;
        let hidden = tensors
            .iter()
            .find(|(name, t)| name.ends_with(".hidden.weight") && t.size().len() == 2)
            .map(|(_, t)| t.size()[0] as usize)
            .ok_or_else(|| Error::Checkpoint {
                path: path.to_path_buf(),
                tensor: "*.hidden.weight".into(),
                message: "missing: not a PruningNet checkpoint (a search with agent = \"pruningnet\" writes one)".into(),
            })?;
        let config = recorded.unwrap_or(PruningNetConfig {
            hidden,
            ..Default::default()
        });
        let mut net = PruningNet::new(model, &config)?;
        crate::model::checkpoint::load_var_store(
            net.var_store_mut(),
            path,
            |_| (0, 0),
            |_| false,
            "autoprune search (agent = \"pruningnet\")",
        )?;
        Ok(net)
    }
}
