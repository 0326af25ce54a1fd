//! Drop guards that keep the per-model gauges honest whichever way a request
//! ends: answered, failed on purpose, or dropped by hyper when the client
//! went away (hyper drops the handler future or the response body, and only
//! a destructor sees that).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::OwnedSemaphorePermit;

use crate::model::ModelState;

/// How an open request ended, decided before the guard drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still open; dropping it now means the client left.
    Open,
    Completed,
    /// The simulator ended it on purpose (an injected fault, or shutdown):
    /// neither a completion nor the client's doing.
    EndedByServer,
}

/// Counts a request in `in_flight` from arrival to the end of its answer.
#[derive(Debug)]
pub(crate) struct InFlight {
    model: Arc<ModelState>,
    outcome: Outcome,
}

impl InFlight {
    pub(crate) fn enter(model: Arc<ModelState>) -> Self {
        model.counters.enter();
        model.watch.changed();
        InFlight {
            model,
            outcome: Outcome::Open,
        }
    }

    pub(crate) fn model(&self) -> &Arc<ModelState> {
        &self.model
    }

    pub(crate) fn complete(mut self) {
        self.outcome = Outcome::Completed;
    }

    pub(crate) fn end_by_server(mut self) {
        self.outcome = Outcome::EndedByServer;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counters = &self.model.counters;
        match self.outcome {
            Outcome::Open => {
                counters.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Completed => {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::EndedByServer => {}
        }
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.model.watch.changed();
    }
}

/// A held slot, counted in `active`.
#[derive(Debug)]
pub(crate) struct Active {
    model: Arc<ModelState>,
    _permit: OwnedSemaphorePermit,
}

impl Active {
    /// Waits for a slot in FIFO order; `None` only if the semaphore was
    /// closed, which the simulator never does.
    pub(crate) async fn acquire(model: &Arc<ModelState>) -> Option<Active> {
        let permit = Arc::clone(&model.slots).acquire_owned().await.ok()?;
        model.counters.activate();
        model.watch.changed();
        Some(Active {
            model: Arc::clone(model),
            _permit: permit,
        })
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.model.counters.active.fetch_sub(1, Ordering::Relaxed);
        self.model.watch.changed();
    }
}

/// The guards of a request that holds a slot. Dropped in field order: the
/// slot is released before the request stops counting as in flight, so a
/// test that waits for `completed` never sees a stale `active`.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) active: Active,
    pub(crate) in_flight: InFlight,
    /// Its cells of a shared context, while it runs.
    pub(crate) cells: Option<Cells>,
}

impl Running {
    pub(crate) fn complete(self) {
        self.release().complete();
    }

    pub(crate) fn end_by_server(self) {
        self.release().end_by_server();
    }

    /// Gives back its cells and its slot; what is left is the request.
    fn release(self) -> InFlight {
        let Running {
            active,
            in_flight,
            cells,
        } = self;
        drop(cells);
        drop(active);
        in_flight
    }
}

/// Cells of a shared context a running request holds, given back on drop.
#[derive(Debug)]
pub(crate) struct Cells {
    used: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    held: usize,
}

impl Cells {
    /// `need` cells out of `total`, if that many are free beside those held.
    pub(crate) fn take(
        used: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
        total: usize,
        need: usize,
    ) -> Option<Cells> {
        use std::sync::atomic::Ordering;
        used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            (u.saturating_add(need) <= total).then_some(u + need)
        })
        .ok()?;
        Some(Cells {
            used: used.clone(),
            held: need,
        })
    }
}

impl Drop for Cells {
    fn drop(&mut self) {
        self.used
            .fetch_sub(self.held, std::sync::atomic::Ordering::AcqRel);
    }
}
