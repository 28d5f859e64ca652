//! The integration tests: one binary (linking libtorch once), one module per topic.

mod common;

mod agents;
mod cli;
mod data;
mod eval;
mod finetune;
mod fuzz;
mod gnn;
mod graph;
mod heuristics;
mod hf_gpt2;
mod hostile;
mod latency;
mod meta;
mod model;
#[cfg(feature = "mpi")]
mod mpi;
mod onnx;
mod posttrain;
mod prune;
mod reliability;
mod residual_width;
mod search;
mod torchvision;
mod transfer;
mod transformer;
mod wall;
