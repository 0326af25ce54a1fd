//! The event heap of the virtual clock. Ties in time pop in the order they
//! were pushed, so a run never depends on how the heap breaks ties.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Something that happens at an instant. Indices point into the run's
/// tables of jobs, attempts and backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    /// A job of the trace reaches the hub.
    Arrive(usize),
    /// An attempt's response is complete.
    Finish(usize),
    /// An attempt sent to a backend that is down: connection refused.
    Refused(usize),
    /// An attempt still queued inside a backend reached its request's
    /// deadline: the client gives up and the server drops it.
    Abandon(usize),
    /// A backend goes down.
    Down(usize),
    /// A backend comes back.
    Up(usize),
    /// Active health probes of every backend.
    Probe,
    /// The scheduler asked to be polled now.
    Wakeup,
    /// A lane's model finished loading.
    Loaded(usize),
}

#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    heap: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    seq: u64,
}

impl EventQueue {
    pub fn push(&mut self, at: Duration, event: Event) {
        self.heap.push(Reverse((at, self.seq, event)));
        self.seq += 1;
    }

    pub fn pop(&mut self) -> Option<(Duration, Event)> {
        self.heap.pop().map(|Reverse((at, _, event))| (at, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_by_push_order() {
        let mut q = EventQueue::default();
        let s = Duration::from_secs;
        q.push(s(2), Event::Probe);
        q.push(s(1), Event::Finish(9));
        q.push(s(1), Event::Arrive(3));
        q.push(s(1), Event::Arrive(1));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                (s(1), Event::Finish(9)),
                (s(1), Event::Arrive(3)),
                (s(1), Event::Arrive(1)),
                (s(2), Event::Probe),
            ]
        );
    }
}
