//! How a backend is chosen for a request. drover's own policy binds late:
//! a request waits in the hub until a slot is free and then goes to the
//! least loaded backend with one, preferring the backend that holds its
//! conversation prefix. The two baselines bind at arrival, as the seeds'
//! coordinators did, and let the backend queue internally.

use drover_core::BackendId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Late binding to a free slot, least loaded by utilisation, prefix
    /// affinity while the affinity backend has a free slot, health-aware.
    Drover,
    /// Bind at arrival to the backend with the fewest requests in flight,
    /// skipping backends whose breaker is open; ignores slots.
    LeastConnections,
    /// Bind at arrival to the next backend in turn, as seed 000's bot did;
    /// ignores slots and health.
    RoundRobin,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::RoundRobin, Policy::LeastConnections, Policy::Drover];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Drover => "drover",
            Policy::LeastConnections => "least-conn",
            Policy::RoundRobin => "round-robin",
        }
    }

    /// Whether requests wait in the hub for a free slot (true) or are sent
    /// to a backend at once and wait there (false).
    pub fn binds_late(self) -> bool {
        matches!(self, Policy::Drover)
    }

    /// Whether open breakers and draining keep work away from a backend.
    pub fn respects_health(self) -> bool {
        !matches!(self, Policy::RoundRobin)
    }
}

/// One backend that could take a request, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: BackendId,
    /// The (backend, model) pair has a free slot.
    pub free: bool,
    /// Requests in flight on the backend, all models.
    pub busy: u32,
    /// The backend's total slots.
    pub capacity: u32,
}

/// Picks one candidate. `turn` is the policy's rotating counter, so ties
/// break deterministically and evenly.
pub(crate) fn choose(
    policy: Policy,
    candidates: &[Candidate],
    affinity: Option<BackendId>,
    turn: &mut u64,
) -> Option<BackendId> {
    match policy {
        Policy::Drover => {
            if let Some(hit) = affinity
                && candidates.iter().any(|c| c.id == hit && c.free)
            {
                return Some(hit);
            }
            let free: Vec<&Candidate> = candidates.iter().filter(|c| c.free).collect();
            // Least loaded by utilisation: busy / capacity, compared by
            // cross-multiplying to stay in integers.
            let best = free.iter().min_by(|a, b| {
                (u64::from(a.busy) * u64::from(b.capacity.max(1)))
                    .cmp(&(u64::from(b.busy) * u64::from(a.capacity.max(1))))
            })?;
            let tied: Vec<BackendId> = free
                .iter()
                .filter(|c| {
                    u64::from(c.busy) * u64::from(best.capacity.max(1))
                        == u64::from(best.busy) * u64::from(c.capacity.max(1))
                })
                .map(|c| c.id)
                .collect();
            Some(rotate(&tied, turn))
        }
        Policy::LeastConnections => {
            let min = candidates.iter().map(|c| c.busy).min()?;
            let tied: Vec<BackendId> = candidates
                .iter()
                .filter(|c| c.busy == min)
                .map(|c| c.id)
                .collect();
            Some(rotate(&tied, turn))
        }
        Policy::RoundRobin => {
            let ids: Vec<BackendId> = candidates.iter().map(|c| c.id).collect();
            (!ids.is_empty()).then(|| rotate(&ids, turn))
        }
    }
}

fn rotate(ids: &[BackendId], turn: &mut u64) -> BackendId {
    let pick = ids[(*turn % ids.len() as u64) as usize];
    *turn = turn.wrapping_add(1);
    pick
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, free: bool, busy: u32, capacity: u32) -> Candidate {
        Candidate {
            id: BackendId(id),
            free,
            busy,
            capacity,
        }
    }

    #[test]
    fn drover_prefers_affinity_only_while_it_has_a_free_slot() {
        let mut turn = 0;
        let cands = [c(1, true, 3, 4), c(2, true, 0, 4)];
        assert_eq!(
            choose(Policy::Drover, &cands, Some(BackendId(1)), &mut turn),
            Some(BackendId(1))
        );
        let cands = [c(1, false, 4, 4), c(2, true, 0, 4)];
        assert_eq!(
            choose(Policy::Drover, &cands, Some(BackendId(1)), &mut turn),
            Some(BackendId(2))
        );
    }

    #[test]
    fn drover_picks_least_utilised_free_backend() {
        let mut turn = 0;
        // 2 of 4 busy (50%) beats 1 of 1 busy... which has no free slot, and
        // 1 of 2 busy (50%) ties, so the tie rotates.
        let cands = [c(1, true, 2, 4), c(2, false, 1, 1), c(3, true, 3, 4)];
        assert_eq!(
            choose(Policy::Drover, &cands, None, &mut turn),
            Some(BackendId(1))
        );
        let cands = [c(1, true, 2, 4), c(2, true, 1, 2)];
        let a = choose(Policy::Drover, &cands, None, &mut turn);
        let b = choose(Policy::Drover, &cands, None, &mut turn);
        assert_ne!(a, b, "ties rotate");
        assert_eq!(
            choose(Policy::Drover, &[c(1, false, 1, 1)], None, &mut turn),
            None
        );
    }

    #[test]
    fn baselines_ignore_slots() {
        let mut turn = 0;
        let cands = [c(1, false, 9, 1), c(2, false, 3, 1)];
        assert_eq!(
            choose(Policy::LeastConnections, &cands, None, &mut turn),
            Some(BackendId(2))
        );
        let picks: Vec<_> = (0..4)
            .map(|_| choose(Policy::RoundRobin, &cands, None, &mut turn))
            .collect();
        assert_eq!(
            picks.iter().filter(|p| **p == Some(BackendId(1))).count(),
            2
        );
    }
}
