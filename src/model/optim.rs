//! SGD (momentum, Nesterov, weight decay) and Adam over a `VarStore`, with their state in
//! plain tensors, so that a run can save it beside the weights and resume exactly where it
//! stopped (tch's optimisers keep their state out of reach). The updates are PyTorch's.

use super::Optimizer;
use crate::error::{Error, Result};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// An optimiser whose state can be saved and loaded.
#[derive(Debug)]
pub struct Optim {
    kind: Optimizer,
    momentum: f64,
    weight_decay: f64,
    /// The trainable variables, sorted by name.
    vars: Vec<(String, Tensor)>,
    /// SGD: one momentum buffer per variable; Adam: first, then second moments.
    state: Vec<Tensor>,
    /// Steps taken (Adam's bias correction).
    steps: i64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Optim {
    /// An optimiser for every trainable variable of `vs`, with zero state.
    pub fn new(vs: &nn::VarStore, kind: Optimizer, momentum: f64, weight_decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let copies = match kind {
            Optimizer::Sgd => 1,
            Optimizer::Adam => 2,
        };
        let state = (0..copies)
            .flat_map(|_| vars.iter().map(|(_, t)| t.zeros_like()))
            .collect();
        Self {
            kind,
            momentum,
            weight_decay,
            vars,
            state,
            steps: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, t) in &mut self.vars {
            t.zero_grad();
        }
    }

    /// One update from the gradients the last backward pass left, at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let n = self.vars.len();
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let grad = var.grad();
            if !grad.defined() {
                continue;
            }
            let grad = if self.weight_decay != 0.0 {
                grad + var * self.weight_decay
            } else {
                grad
            };
            let update = match self.kind {
                Optimizer::Sgd => {
                    let buf = &self.state[i];
                    let _ = buf
                        .shallow_clone()
                        .g_mul_scalar_(self.momentum)
                        .g_add_(&grad);
                    if self.momentum > 0.0 {
                        grad + buf * self.momentum
                    } else {
                        grad
                    }
                }
                Optimizer::Adam => {
                    let (m, v) = (&self.state[i], &self.state[n + i]);
                    let _ = m
                        .shallow_clone()
                        .g_mul_scalar_(BETA1)
                        .g_add_(&(&grad * (1.0 - BETA1)));
                    let _ = v
                        .shallow_clone()
                        .g_mul_scalar_(BETA2)
                        .g_add_(&(grad.square() * (1.0 - BETA2)));
                    let m_hat = m / (1.0 - BETA1.powi(self.steps as i32));
                    let v_hat = v / (1.0 - BETA2.powi(self.steps as i32));
                    m_hat / (v_hat.sqrt() + EPS)
                }
            };
            let _ = var.shallow_clone().g_sub_(&(update * lr));
        }
    }

    /// The state as named tensors (`optim.<i>`, `optim.steps`), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self
            .state
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    format!("optim.{i}"),
                    t.to_device(tch::Device::Cpu).contiguous(),
                )
            })
            .collect();
        named.push(("optim.steps".into(), Tensor::from(self.steps)));
        named
    }

    /// Restores the state from a checkpoint's named tensors (those `state_tensors` wrote).
    pub fn load_state(&mut self, named: &[(String, Tensor)], path: &Path) -> Result<()> {
        let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let missing = |tensor: String| Error::Checkpoint {
            path: path.to_path_buf(),
            tensor,
            message: "missing: the file was not written by this kind of run".into(),
        };
        let _guard = tch::no_grad_guard();
        for (i, state) in self.state.iter().enumerate() {
            let name = format!("optim.{i}");
            let saved = find(&name).ok_or_else(|| missing(name.clone()))?;
            if saved.size() != state.size() {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    tensor: name,
                    message: format!(
                        "shape {:?}, the model needs {:?}",
                        saved.size(),
                        state.size()
                    ),
                });
            }
            state.shallow_clone().copy_(saved);
        }
        let steps = find("optim.steps").ok_or_else(|| missing("optim.steps".into()))?;
        self.steps = steps.to_kind(Kind::Int64).int64_value(&[]);
        Ok(())
    }
}
