//! Prefix affinity: a conversation whose earlier turns ran on a backend has
//! that prefix in the backend's KV cache, so the next turn is cheaper there.
//!
//! The hub hashes each request's conversation cumulatively (message by
//! message, or block by block for plain prompts) and passes the hashes here;
//! this module only remembers which backend last served each prefix. The
//! index is bounded (an unbounded one ran a production router out of
//! memory): the oldest entries are forgotten first.

use std::collections::{HashMap, VecDeque};

use drover_core::BackendId;

/// A request's prefix hashes, as the hub computed them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    /// Prefixes worth following, longest first. The hub leaves out prefixes
    /// too generic to mean a shared KV cache (a system prompt alone), so that
    /// a prompt every client shares does not pull all traffic to one backend.
    pub lookup: Vec<u64>,
    /// Every prefix of this request, to remember once it is dispatched.
    pub record: Vec<u64>,
}

#[derive(Debug)]
pub struct AffinityIndex {
    map: HashMap<u64, (BackendId, u64)>,
    /// Insertion order with the generation each insert wrote; entries whose
    /// generation was overwritten since are skipped on eviction.
    order: VecDeque<(u64, u64)>,
    capacity: usize,
    generation: u64,
}

impl AffinityIndex {
    pub fn new(capacity: usize) -> Self {
        AffinityIndex {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The backend that served the longest known prefix.
    pub fn lookup(&self, affinity: &Affinity) -> Option<BackendId> {
        affinity
            .lookup
            .iter()
            .find_map(|h| self.map.get(h).map(|(b, _)| *b))
    }

    pub fn record(&mut self, affinity: &Affinity, backend: BackendId) {
        if self.capacity == 0 {
            return;
        }
        for &hash in &affinity.record {
            self.generation += 1;
            self.map.insert(hash, (backend, self.generation));
            self.order.push_back((hash, self.generation));
        }
        while self.map.len() > self.capacity {
            let Some((hash, generation)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&hash).is_some_and(|(_, g)| *g == generation) {
                self.map.remove(&hash);
            }
        }
        // Overwrites leave stale order entries behind; drop them before they
        // outgrow the map.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(h, g)| map.get(h).is_some_and(|(_, cur)| cur == g));
        }
    }

    /// Forgets every prefix held by a backend that left the fleet.
    pub fn forget_backend(&mut self, backend: BackendId) {
        self.map.retain(|_, (b, _)| *b != backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(lookup: &[u64], record: &[u64]) -> Affinity {
        Affinity {
            lookup: lookup.to_vec(),
            record: record.to_vec(),
        }
    }

    #[test]
    fn longest_known_prefix_wins() {
        let mut idx = AffinityIndex::new(100);
        idx.record(&aff(&[], &[1, 2]), BackendId(7));
        idx.record(&aff(&[], &[1, 2, 3]), BackendId(8));
        assert_eq!(idx.lookup(&aff(&[4, 3, 2], &[])), Some(BackendId(8)));
        assert_eq!(idx.lookup(&aff(&[9], &[])), None);
    }

    #[test]
    fn stays_within_capacity_and_forgets_oldest_first() {
        let mut idx = AffinityIndex::new(3);
        for h in 0..10u64 {
            idx.record(&aff(&[], &[h]), BackendId(h as u32));
            assert!(idx.len() <= 3);
        }
        assert_eq!(idx.lookup(&aff(&[0], &[])), None);
        assert_eq!(idx.lookup(&aff(&[9], &[])), Some(BackendId(9)));
        // Rewriting one key many times must not grow the order queue forever.
        for _ in 0..1000 {
            idx.record(&aff(&[], &[5]), BackendId(1));
        }
        assert!(idx.order.len() <= 6);
    }

    #[test]
    fn forgets_a_removed_backend() {
        let mut idx = AffinityIndex::new(10);
        idx.record(&aff(&[], &[1]), BackendId(1));
        idx.forget_backend(BackendId(1));
        assert_eq!(idx.lookup(&aff(&[1], &[])), None);
    }
}
