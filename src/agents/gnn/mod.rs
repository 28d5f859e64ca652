//! The graph agent's network: a [`GraphEncoder`] over the whole model graph, an actor head
//! that reads each prunable unit's embedding (beside the graph's) and emits its keep action
//! in (0, 1), and a critic on the pooled graph embedding. It runs on graphs of any size and
//! any model, including ones it never saw.

mod agent;
mod encoder;

pub use agent::{GnnConfig, GraphAgent, ProfileReference};
pub use encoder::{DynamicState, GraphEncoder, GraphInput, NODE_FEATURES};

use crate::prune::CostModel;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Actor and critic over one shared encoder, in one `VarStore`.
pub struct GraphPolicy {
    vs: nn::VarStore,
    encoder: GraphEncoder,
    actor: nn::Sequential,
    critic: nn::Sequential,
}

impl GraphPolicy {
    /// A freshly initialised network (`tch::manual_seed` decides the weights).
    pub fn new(hidden: usize, layers: usize, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = GraphEncoder::new(&(&root / "encoder"), hidden, layers);
        let h = hidden as i64;
        let actor = nn::seq()
            .add(nn::linear(
                &root / "actor" / "hidden",
                2 * h,
                h,
                Default::default(),
            ))
            .add_fn(|x| x.relu())
            .add(nn::linear(
                &root / "actor" / "out",
                h,
                1,
                // Small weights: a fresh agent proposes about 1/2 everywhere, which a profile
                // step turns into uniform allocation.
                nn::LinearConfig {
                    ws_init: nn::Init::Uniform {
                        lo: -1e-2,
                        up: 1e-2,
                    },
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias: true,
                },
            ));
        let critic = nn::seq()
            .add(nn::linear(
                &root / "critic" / "hidden",
                h,
                h,
                Default::default(),
            ))
            .add_fn(|x| x.relu())
            .add(nn::linear(
                &root / "critic" / "out",
                h,
                1,
                Default::default(),
            ));
        Self {
            vs,
            encoder,
            actor,
            critic,
        }
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The actor's mean action per unit, `[units]` in (0, 1), and the critic's value, `[]`.
    pub fn forward(&self, g: &GraphInput) -> (Tensor, Tensor) {
        let (units, graph) = self.encoder.units(g);
        let n = units.size()[0];
        let both = Tensor::cat(&[units, graph.unsqueeze(0).expand([n, -1], false)], 1);
        let actions = self.actor.forward(&both).squeeze_dim(1).sigmoid();
        let value = self.critic.forward(&graph.unsqueeze(0)).squeeze();
        (actions, value)
    }

    /// The greedy actions for `costs`' units at `state`.
    pub fn act(&self, costs: &CostModel, state: &DynamicState) -> Vec<f64> {
        let _guard = tch::no_grad_guard();
        let input = GraphInput::new(costs, state, self.device());
        let (actions, _) = self.forward(&input);
        Vec::<f64>::try_from(actions.to_kind(Kind::Double).to_device(Device::Cpu))
            .unwrap_or_default()
    }
}
