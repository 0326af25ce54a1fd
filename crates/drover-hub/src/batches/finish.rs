//! Ends batches whose lines have all ended: their output file (the lines
//! answered with a 2xx) and error file (every other answer, and the lines
//! that expired or were cancelled unrun), written in OpenAI's line format
//! and stored with the batch's final status in one transaction. A hub
//! that dies halfway writes them again from the lines; the first end
//! stored is the only one.

use std::sync::Arc;

use drover_store::{Batch, BatchEnd, BatchFiles, Job, JobState, NewFile, Store, StoreError};

use super::output;
use crate::hub::HubState;
use crate::jobs::{Jobs, now_ms};

/// Lines read from the store at a time while writing the files.
const PAGE: u32 = 1000;

/// The least time between two looks: every line that ends wakes the
/// finisher, and a look counts the lines of every open batch, so a batch
/// running thousands of lines a second must not be counted as often.
const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// Looks at every open batch when woken (a line ended, a batch was
/// cancelled) or every poll interval, until the hub stops.
pub async fn run(hub: Arc<HubState>, jobs: Arc<Jobs>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = jobs.batches_woken() => {}
            () = tokio::time::sleep(jobs.config.poll_interval) => {}
        }
        if !hub.cluster.leads() {
            continue;
        }
        match finish_ended(&jobs.store).await {
            Ok(()) => failing = false,
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot finish batches; trying again");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = hub.shutdown.cancelled() => return,
            () = tokio::time::sleep(MIN_GAP.min(jobs.config.poll_interval)) => {}
        }
    }
}

/// Ends every open batch that has no line waiting or running.
pub async fn finish_ended(store: &Store) -> Result<(), StoreError> {
    let open = store.open_batches().await?;
    let ids: Vec<String> = open.iter().map(|b| b.id.clone()).collect();
    // Every open batch's lines counted in one query, not one a batch.
    let counts = store.batch_counts(&ids).await?;
    for batch in open {
        let unfinished = counts
            .get(&batch.id)
            .is_some_and(|c| c.iter().any(|(state, n)| *n > 0 && !state.is_final()));
        if unfinished {
            continue;
        }
        let now = now_ms();
        if batch.status != "finalizing"
            && !store
                .finalizing_batch(&batch.id, &batch.status, now)
                .await?
        {
            continue;
        }
        end(store, &batch, now).await?;
    }
    Ok(())
}

async fn end(store: &Store, batch: &Batch, now: i64) -> Result<(), StoreError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut expired = false;
    let mut after: Option<String> = None;
    loop {
        let lines = store.batch_lines(&batch.id, after.as_deref(), PAGE).await?;
        let Some((last, _)) = lines.last() else {
            break;
        };
        after = Some(last.id.clone());
        for (job, answer) in &lines {
            expired |= job.state == JobState::Expired;
            let (line, to_errors) = line_of(job, answer.as_ref());
            if to_errors {
                errors.extend(line);
            } else {
                out.extend(line);
            }
        }
    }
    let end = if batch.cancelling_at.is_some() {
        BatchEnd::Cancelled
    } else if expired {
        BatchEnd::Expired
    } else {
        BatchEnd::Completed
    };
    let file = |suffix: &str, data: Vec<u8>| {
        (!data.is_empty()).then(|| {
            (
                NewFile {
                    id: crate::routes::files::new_file_id(),
                    key_id: batch.key_id.clone(),
                    purpose: "batch_output".into(),
                    filename: format!("{}_{suffix}.jsonl", batch.id),
                    created_at: now,
                    expires_at: None,
                },
                data,
            )
        })
    };
    let files = BatchFiles {
        output: file("output", out),
        errors: file("error", errors),
    };
    if store
        .end_batch(&batch.id, "finalizing", end, &files, now)
        .await?
    {
        tracing::info!(batch = %batch.id, status = ?end, "batch ended");
    }
    Ok(())
}

/// One line of the output or error file for a line's job, and whether it
/// goes to the error file.
fn line_of(job: &Job, answer: Option<&drover_store::Answer>) -> (Vec<u8>, bool) {
    let line_id = format!(
        "batch_req_{}",
        job.id.strip_prefix("job_").unwrap_or(&job.id)
    );
    let custom_id = job.custom_id.as_deref().unwrap_or_default();
    if let Some(answer) = answer {
        let line = output::output_line(&line_id, custom_id, answer.status, &job.id, &answer.body);
        return (line, output::goes_to_error_file(Some(answer.status)));
    }
    let (code, message) = match job.state {
        JobState::Expired => (
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        ),
        JobState::Cancelled => (
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
        ),
        _ => ("request_failed", "This request ended without an answer."),
    };
    (output::error_line(&line_id, custom_id, code, message), true)
}
