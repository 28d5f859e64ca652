//! Pruning: the budget types (granularity, metric, target), criteria (magnitude, L1, L2,
//! Taylor, SNIP, random; Wanda and SparseGPT after training, in [`posttrain`]), the one mask
//! routine, the cost model, the ActionWall, non-learned allocators (uniform, global, LAMP, ERK,
//! random; OWL and AlphaPruning in [`layerwise`]), physical slimming for export, and the
//! latency model (tables per node, measured by the evaluator).
//!
//! Must not know about agents, env files or the evaluator.

mod allocate;
mod budget;
mod latency;
pub mod layerwise;
mod mask;
pub mod posttrain;
mod slim;
mod units;
mod wall;

pub use allocate::{allocate, erk_raw, lamp_scores, Method, Signals};
pub use budget::{Granularity, Metric, Target};
pub use latency::{fingerprint, probe_graph, LatencyKey, LatencyTable, NodeTable, Sizes, LAYOUT};
pub use mask::{Criterion, Importance, Mask, Masker, GRADIENT_BATCHES};
pub use slim::slim;
pub use units::{kept_count, nm_layout, CostModel, Counts, Unit, UnitKind};
pub use wall::{ActionWall, Budget};
