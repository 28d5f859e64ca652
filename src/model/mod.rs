//! Models: the zoo of builders that emit a `ModelGraph`, `GraphNet` (which runs any graph on
//! tch), dense training, and safetensors checkpoints (which may record the config that
//! built them).
//!
//! Must not know about agents, env files or run folders.

pub mod checkpoint;
mod graphnet;
pub mod hf;
pub mod optim;
mod train;
mod transformer;
pub mod zoo;

pub use graphnet::{channels_last, cross_entropy, Evaluation, GraphNet, NORM_CHANNELS};
pub use train::{load_or_train, train, EpochReport, Optimizer, Schedule, TrainConfig};
