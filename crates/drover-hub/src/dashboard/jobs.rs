//! What the overview shows of the job store, read from it at most once a
//! [`PERIOD`], on a task of its own and never under the scheduler's lock.
//!
//! A store that does not answer must not hold up the overview (and with it
//! the fleet and the queue every dashboard draws): a read is waited for one
//! [`WAIT`] at most, and not at all while the last one failed or was late;
//! otherwise the overview goes out with what was read last and says why,
//! and the read still under way is taken up by a later overview once it
//! comes back. No second read starts while one is under way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_proto::batch::RequestCounts;
use drover_store::{
    Batch, BatchFilter, Job, JobFilter, JobKind, JobState, Plan, Store, StoreError,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PERIOD;
use crate::batches::view::tally;
use crate::jobs::Jobs;
use crate::traffic::unix_ms;

/// The longest an overview waits for the store.
pub const WAIT: Duration = Duration::from_secs(1);
/// Open batches shown at most: each costs a row of the document a second.
const MAX_OPEN: usize = 50;
const ENDED: u32 = 10;
const DEAD: u32 = 20;
const PLANS: u32 = 10;

/// The job store's contents the overview shows, as read at one time.
pub struct JobsRead {
    /// When the read began, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub counts: Vec<(JobState, u64)>,
    /// Newest first, at most [`MAX_OPEN`].
    pub open: Vec<(Batch, RequestCounts)>,
    /// Every open batch, those not shown included.
    pub open_total: usize,
    pub ended: Vec<(Batch, RequestCounts)>,
    pub dead: Vec<Job>,
    /// Tasks for workers in each state.
    pub tasks: Vec<(JobState, u64)>,
    /// The newest plans, each with the states of its tasks.
    pub plans: Vec<(Plan, Vec<(String, JobState)>)>,
    /// Every node.
    pub nodes: Vec<drover_store::Node>,
}

/// What an overview gets: the last read that came back, and why there is
/// no fresher one, if there is not.
pub struct StoreView {
    pub read: Option<Arc<JobsRead>>,
    pub error: Option<String>,
}

/// The reads of the store for the overview.
#[derive(Default)]
pub struct StoreReads {
    state: Mutex<Reads>,
}

#[derive(Default)]
struct Reads {
    /// The last read that came back whole.
    last: Option<Arc<JobsRead>>,
    /// Why the last read did not, or that the one under way is late.
    error: Option<String>,
    /// When the read under way, or the last one, began.
    started: Option<Instant>,
    /// The read under way; `None` once the hub is stopping.
    pending: Option<JoinHandle<Option<Result<JobsRead, StoreError>>>>,
}

impl StoreReads {
    /// The store's contents for an overview: read now if the last read
    /// began a [`PERIOD`] ago or more, waiting for a read under way until
    /// [`WAIT`] after it began.
    pub async fn view(
        &self,
        jobs: &Arc<Jobs>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> StoreView {
        let mut reads = self.state.lock().await;
        if !jobs.is_ready() {
            return StoreView {
                read: reads.last.clone(),
                error: Some(format!(
                    "{} has not answered since the hub started",
                    jobs.store.describe()
                )),
            };
        }
        let due = reads
            .started
            .is_none_or(|started| started.elapsed() >= PERIOD);
        if reads.pending.is_none() && due {
            reads.started = Some(Instant::now());
            let store = jobs.store.clone();
            let stop = stop.clone();
            reads.pending = Some(tasks.spawn(async move {
                tokio::select! {
                    read = read(&store) => Some(read),
                    () = stop.cancelled() => None,
                }
            }));
        }
        let started = reads.started.unwrap_or_else(Instant::now);
        // While the store is failing or late, nothing waits for it: a read
        // that is done is taken (the future is polled before the deadline),
        // one that is not is taken by a later overview.
        let wait_until = if reads.error.is_some() {
            Instant::now()
        } else {
            started + WAIT
        };
        if let Some(pending) = reads.pending.as_mut() {
            let deadline = tokio::time::Instant::from_std(wait_until);
            match tokio::time::timeout_at(deadline, pending).await {
                Ok(joined) => {
                    reads.pending = None;
                    match joined {
                        Ok(Some(Ok(read))) => {
                            reads.last = Some(Arc::new(read));
                            reads.error = None;
                        }
                        Ok(Some(Err(e))) => reads.error = Some(e.to_string()),
                        Ok(None) => reads.error = Some("the hub is stopping".into()),
                        Err(e) => {
                            reads.error = Some(format!("reading the job store failed: {e}"));
                        }
                    }
                }
                // Not waited for, and not late yet: why the last one
                // failed still holds.
                Err(_) if started.elapsed() < WAIT => {}
                Err(_) => {
                    reads.error = Some(format!(
                        "{} has not answered for {} s",
                        jobs.store.describe(),
                        started.elapsed().as_secs()
                    ));
                }
            }
        }
        StoreView {
            read: reads.last.clone(),
            error: reads.error.clone(),
        }
    }
}

/// One read of what the overview shows.
async fn read(store: &Store) -> Result<JobsRead, StoreError> {
    let at_ms = unix_ms();
    let mut counts: Vec<(JobState, u64)> = Vec::new();
    let mut tasks = Vec::new();
    for (kind, state, n) in store.job_counts_by_kind().await? {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, total)) => *total += n,
            None => counts.push((state, n)),
        }
        if kind == JobKind::Task {
            tasks.push((state, n));
        }
    }
    let mut open = store.open_batches().await?;
    let open_total = open.len();
    open.reverse();
    open.truncate(MAX_OPEN);
    let (ended, _) = store
        .list_batches(&BatchFilter {
            ended: true,
            limit: ENDED,
            ..Default::default()
        })
        .await?;
    let ids: Vec<String> = open.iter().chain(&ended).map(|b| b.id.clone()).collect();
    let lines = store.batch_counts(&ids).await?;
    let counted = |batches: Vec<Batch>| -> Vec<(Batch, RequestCounts)> {
        batches
            .into_iter()
            .map(|b| {
                let c = tally(&b, lines.get(&b.id).map_or(&[][..], Vec::as_slice));
                (b, c)
            })
            .collect()
    };
    let dead = store
        .jobs(&JobFilter {
            state: Some(JobState::Dead),
            limit: DEAD,
            ..Default::default()
        })
        .await?
        .jobs;
    // One read of every shown plan's tasks' states, not one a plan.
    let kept = store.plans(None, PLANS).await?;
    let mut plan_tasks = Vec::new();
    for plan in &kept {
        plan_tasks.push(plan.tasks()?);
    }
    let states = store.job_states(&plan_tasks.concat()).await?;
    let plans = kept
        .into_iter()
        .zip(plan_tasks)
        .map(|(plan, ids)| {
            let mine = states
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .cloned()
                .collect();
            (plan, mine)
        })
        .collect();
    let nodes = store.nodes().await?;
    Ok(JobsRead {
        at_ms,
        nodes,
        counts,
        open: counted(open),
        open_total,
        ended: counted(ended),
        dead,
        tasks,
        plans,
    })
}
