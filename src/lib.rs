//! autoprune learns layer-wise sparsity policies for neural networks.
//!
//! A model is a [`graph::ModelGraph`] (petgraph); [`model::GraphNet`] runs it on libtorch;
//! [`data`] reads the data sets; [`config::EnvSpec`] describes a pruning environment.

pub mod agents;
pub mod check;
pub mod config;
pub mod data;
pub mod device;
pub mod env;
pub mod error;
pub mod eval;
pub mod fsio;
pub mod graph;
pub mod model;
pub mod onnx;
pub mod policy;
pub mod prune;
pub mod report;
pub mod run;
pub mod runlog;

pub use error::{Error, Result};
