//! A stored batch as the API shows it, its request counts from its lines'
//! states.

use std::collections::BTreeMap;

use drover_proto::batch::{BatchErrors, BatchStatus, BatchTag, RequestCounts};
use drover_store::{Batch, JobState, Store, StoreError};

fn secs(ms: i64) -> u64 {
    u64::try_from(ms.div_euclid(1000)).unwrap_or(0)
}

/// How many of a batch's lines completed and how many ended otherwise.
pub async fn counts(store: &Store, batch: &Batch) -> Result<RequestCounts, StoreError> {
    Ok(tally(batch, &store.job_counts(Some(&batch.id)).await?))
}

/// A batch's request counts from its lines' counts by state.
pub fn tally(batch: &Batch, by_state: &[(JobState, u64)]) -> RequestCounts {
    let mut completed = 0;
    let mut failed = 0;
    for &(state, n) in by_state {
        match state {
            JobState::Completed => completed += n,
            JobState::Queued | JobState::Running => {}
            _ => failed += n,
        }
    }
    RequestCounts {
        total: u64::try_from(batch.total).unwrap_or(0),
        completed,
        failed,
    }
}

/// Every batch of `batches` with its request counts, counted in one query.
pub async fn with_counts(
    store: &Store,
    batches: Vec<Batch>,
) -> Result<Vec<(Batch, RequestCounts)>, StoreError> {
    let ids: Vec<String> = batches.iter().map(|b| b.id.clone()).collect();
    let counts = store.batch_counts(&ids).await?;
    Ok(batches
        .into_iter()
        .map(|b| {
            let c = tally(&b, counts.get(&b.id).map_or(&[][..], Vec::as_slice));
            (b, c)
        })
        .collect())
}

/// A stored status as the API's; one this code does not know (a newer
/// drover's) as failed.
pub fn status(stored: &str) -> BatchStatus {
    serde_json::from_value(serde_json::Value::String(stored.to_string()))
        .unwrap_or(BatchStatus::Failed)
}

pub fn batch(batch: Batch, request_counts: RequestCounts) -> drover_proto::batch::Batch {
    let status = status(&batch.status);
    let errors = batch
        .errors
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .map(|data| BatchErrors {
            object: Default::default(),
            data,
        });
    let metadata: Option<BTreeMap<String, String>> = batch
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    drover_proto::batch::Batch {
        id: batch.id,
        object: BatchTag::Batch,
        endpoint: batch.endpoint,
        input_file_id: batch.input_file_id,
        completion_window: batch.completion_window,
        status,
        output_file_id: batch.output_file_id,
        error_file_id: batch.error_file_id,
        created_at: secs(batch.created_at),
        in_progress_at: batch.in_progress_at.map(secs),
        expires_at: Some(secs(batch.expires_at)),
        finalizing_at: batch.finalizing_at.map(secs),
        completed_at: batch.completed_at.map(secs),
        failed_at: batch.failed_at.map(secs),
        expired_at: batch.expired_at.map(secs),
        cancelling_at: batch.cancelling_at.map(secs),
        cancelled_at: batch.cancelled_at.map(secs),
        request_counts,
        errors,
        metadata,
    }
}
