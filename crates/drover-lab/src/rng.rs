//! The lab's random stream: drover-core's SplitMix64 with the
//! distributions traces draw from. A lab run must replay bit for bit from
//! its seed on any machine, which rules out anything seeded from the OS.

use drover_core::mix::{self, SplitMix64};

/// A seeded pseudo-random stream with the distributions the lab draws from.
#[derive(Clone, Debug)]
pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// An independent stream for one part of a run (one variant, one
    /// purpose), so that adding draws to one part leaves the others as
    /// they were.
    pub fn fork(&self, stream: u64) -> Rng {
        Rng::new(mix::fork(self.0.state(), stream))
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        self.0.unit()
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Exponentially distributed with the given mean: the gaps between
    /// Poisson arrivals.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - unit() is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.unit()).ln()
    }

    /// Uniform in [0, n); `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
}
