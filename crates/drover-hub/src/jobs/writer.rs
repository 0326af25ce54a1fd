//! How attempts ended, stored many to a transaction: one commit (one sync
//! to disk) carries every finish that arrived while the last was written,
//! so the store's cost per job falls as the rate rises.

use std::time::Duration;

use drover_store::{Finish, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Finishes one transaction carries at most.
const MAX_GROUP: usize = 512;

/// A finish to store, and where to say whether its lease still held.
pub(super) type Pending = (Finish, oneshot::Sender<bool>);

/// Stores finishes as they come until every sender is gone. A store that
/// fails (unreachable, full) is tried again with the same group: the jobs
/// stay running under their leases meanwhile, and nothing is dropped. Once
/// the hub stops, a group that cannot be stored is left: its jobs' leases
/// run out and they run again, at least once.
pub(super) async fn run(store: Store, mut rx: mpsc::Receiver<Pending>, stop: CancellationToken) {
    let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
    let mut finishes: Vec<Finish> = Vec::with_capacity(MAX_GROUP);
    let mut backoff = Duration::from_millis(50);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        // The finishes apart from where each is told: stored as they are,
        // not copied (an answer may be megabytes).
        let mut told = Vec::with_capacity(group.len());
        for (finish, done) in group.drain(..) {
            finishes.push(finish);
            told.push(done);
        }
        loop {
            match store.finish(&finishes).await {
                Ok(taken) => {
                    for (done, taken) in told.drain(..).zip(taken) {
                        let _ = done.send(taken);
                    }
                    finishes.clear();
                    backoff = Duration::from_millis(50);
                    break;
                }
                Err(error) if stop.is_cancelled() => {
                    tracing::warn!(%error, jobs = finishes.len(), "the hub stops and cannot store how jobs ended; they will run again");
                    finishes.clear();
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, jobs = finishes.len(), "cannot store how jobs ended; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
