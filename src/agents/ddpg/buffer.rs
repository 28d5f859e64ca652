//! The replay buffer: a ring of transitions with their (baseline-corrected) rewards.

use rand::Rng;

#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub state: Vec<f32>,
    pub action: f32,
    pub reward: f32,
    pub next_state: Vec<f32>,
    pub terminal: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ReplayBuffer {
    items: Vec<Stored>,
    capacity: usize,
    next: usize,
}

impl ReplayBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Vec::with_capacity(capacity.min(1 << 16)),
            capacity,
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn push(&mut self, item: Stored) {
        if self.items.len() < self.capacity {
            self.items.push(item);
        } else {
            self.items[self.next] = item;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// `n` items drawn uniformly with replacement.
    pub fn sample<'a>(&'a self, n: usize, rng: &mut impl Rng) -> Vec<&'a Stored> {
        (0..n)
            .map(|_| &self.items[rng.random_range(0..self.items.len())])
            .collect()
    }
}
