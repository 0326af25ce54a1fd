//! Wake-ups from the other hubs on one PostgreSQL store: a job stored or
//! queued again by any of them is announced ([`drover_store::Wakeups`]),
//! and this hub's runners look at once instead of at their next poll. The
//! poll stays the truth: a hint lost while the listener reconnects costs a
//! poll interval, and a reconnection wakes both runners in case one was.

use std::sync::Arc;
use std::time::Duration;

use drover_store::{JobKind, Wakeup};

use super::Jobs;
use crate::hub::HubState;

/// The longest wait between two tries to listen.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Listens until the hub stops; returns at once on SQLite.
pub async fn run(hub: Arc<HubState>, jobs: Arc<Jobs>) {
    let mut wait = Duration::from_millis(500);
    let mut failing = false;
    loop {
        let listening = tokio::select! {
            () = hub.shutdown.cancelled() => return,
            listening = jobs.store.wakeups() => listening,
        };
        let error = match listening {
            Ok(None) => return,
            Ok(Some(mut wakeups)) => {
                if failing {
                    tracing::info!("listening for other hubs' jobs again");
                }
                failing = false;
                wait = Duration::from_millis(500);
                // Missed while not listening, perhaps.
                jobs.wake();
                jobs.wake_tasks();
                jobs.wake_callbacks();
                loop {
                    let next = tokio::select! {
                        () = hub.shutdown.cancelled() => return,
                        next = wakeups.next() => next,
                    };
                    match next {
                        Ok(Wakeup::Stored(JobKind::Inference)) => jobs.wake(),
                        Ok(Wakeup::Stored(JobKind::Callback)) => jobs.wake_callbacks(),
                        Ok(Wakeup::Stored(JobKind::Task)) => jobs.wake_tasks(),
                        Ok(Wakeup::Reconnected) => {
                            jobs.wake();
                            jobs.wake_tasks();
                            jobs.wake_callbacks();
                        }
                        Err(error) => break error,
                    }
                }
            }
            Err(error) => error,
        };
        if !failing {
            tracing::warn!(%error, "cannot listen for other hubs' jobs; they are found at each poll meanwhile");
        }
        failing = true;
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_WAIT);
    }
}
