//! Random search: independent uniform draws, infeasible ones rejected (as in MetaPruning's
//! search); after too many rejections, the last draw's profile scaled into the budget.

use super::evolution::FeasibleSampler;
use super::{Actor, Agent, Episode, Learner, OneShotActor};
use crate::error::Result;
use crate::prune::ActionWall;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
pub struct RandomSearch {
    sampler: FeasibleSampler,
    rng: StdRng,
}

/// Draws per candidate before one is scaled into the budget.
const MAX_TRIES: usize = 50;

impl RandomSearch {
    pub fn new(wall: ActionWall, seed: u64) -> Self {
        Self {
            sampler: FeasibleSampler::new(wall, MAX_TRIES),
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Agent for RandomSearch {
    fn actor(&mut self) -> Actor<'_> {
        Actor::OneShot(self)
    }

    fn begin_episode(&mut self, _index: usize) {}

    /// Random search learns nothing: every episode is independent.
    fn ahead(&self, _next: usize) -> usize {
        usize::MAX
    }
}

impl OneShotActor for RandomSearch {
    fn act(&mut self, _features: &[Vec<f32>], _explore: bool) -> Vec<f64> {
        let n = self.sampler.units();
        self.sampler.sample(
            &mut self.rng,
            |r| (0..n).map(|_| r.random::<f64>()).collect(),
            |_| true,
        )
    }
}

impl Learner for RandomSearch {
    fn learn(&mut self, _episode: &Episode) -> Result<()> {
        Ok(())
    }
}
