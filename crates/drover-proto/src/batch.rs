//! OpenAI's Files and Batch API: the files a batch reads and writes, the
//! batch itself, and one line of its output, in the shapes the official
//! `openai` clients read (openai-python's `types/file_object.py`,
//! `file_deleted.py`, `batch.py`, `batch_request_counts.py`,
//! `batch_error.py`, `batch_create_params.py`, and `SyncCursorPage` in
//! `pagination.py`).
//!
//! The Python client reads a field it types `Optional[...] = None` whether
//! it is `null` or absent, but OpenAI's own answers carry such fields as
//! `null` (a batch's timestamps not reached yet, its files not written yet),
//! and clients written against those answers may test for `null` rather
//! than for absence: so every field of an answer is written, `null` when it
//! has no value. Only the request body a client sends, [`CreateBatch`],
//! leaves out what it does not set, as the clients do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `"file"`: the `object` of a file and of its deletion.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileTag {
    #[default]
    File,
}

/// `"batch"`: the `object` of a batch.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchTag {
    #[default]
    Batch,
}

/// `"list"`: the `object` of a page and of a batch's errors.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListTag {
    #[default]
    List,
}

/// An uploaded file, or one a batch wrote (`POST /v1/files`,
/// `GET /v1/files/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FileObject {
    pub id: String,
    pub object: FileTag,
    /// Its size in bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub filename: String,
    pub purpose: FilePurpose,
    /// Deprecated by OpenAI, still required by the clients' types.
    pub status: FileStatus,
    /// Unix seconds; `null` when it does not expire.
    pub expires_at: Option<u64>,
    /// Deprecated by OpenAI: why a file failed its checks.
    pub status_details: Option<String>,
}

/// Every purpose OpenAI's clients know, so that a file listing reads the
/// same everywhere; which ones the hub accepts at upload is the route's call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub enum FilePurpose {
    #[serde(rename = "assistants")]
    Assistants,
    #[serde(rename = "assistants_output")]
    AssistantsOutput,
    /// The input of a batch.
    #[serde(rename = "batch")]
    Batch,
    /// A batch's output or error file.
    #[serde(rename = "batch_output")]
    BatchOutput,
    #[serde(rename = "fine-tune")]
    FineTune,
    #[serde(rename = "fine-tune-results")]
    FineTuneResults,
    #[serde(rename = "vision")]
    Vision,
    #[serde(rename = "user_data")]
    UserData,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Uploaded,
    Processed,
    Error,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FileDeleted {
    pub id: String,
    pub object: FileTag,
    pub deleted: bool,
}

/// A batch (`POST /v1/batches`, `GET /v1/batches/{id}`, its cancel).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Batch {
    pub id: String,
    pub object: BatchTag,
    /// The path every line of its input targets.
    pub endpoint: String,
    pub input_file_id: String,
    /// `"24h"`.
    pub completion_window: String,
    pub status: BatchStatus,
    /// The answers that succeeded; `null` until written, and when none did.
    pub output_file_id: Option<String>,
    /// The answers that failed and the lines that got none.
    pub error_file_id: Option<String>,
    /// Unix seconds, as every `*_at` below (those are `null` until they
    /// happen).
    pub created_at: u64,
    pub in_progress_at: Option<u64>,
    /// When its completion window closes.
    pub expires_at: Option<u64>,
    pub finalizing_at: Option<u64>,
    pub completed_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub expired_at: Option<u64>,
    pub cancelling_at: Option<u64>,
    pub cancelled_at: Option<u64>,
    pub request_counts: RequestCounts,
    /// Why its input was refused (status `failed`).
    pub errors: Option<BatchErrors>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `validating` -> `failed` | `in_progress` -> `finalizing` -> `completed`;
/// `expired` when the window closes first; `cancelling` -> `cancelled`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    /// Nothing more will happen to it: what a client polls for.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RequestCounts {
    pub total: u64,
    /// Lines answered with a success.
    pub completed: u64,
    /// Lines answered with an error, or not at all.
    pub failed: u64,
}

/// `{"object": "list", "data": [...]}`: why a batch's input was refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BatchErrors {
    pub object: ListTag,
    pub data: Vec<BatchError>,
}

/// One thing wrong with a batch's input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BatchError {
    pub code: String,
    /// The input file's line, counted from 1; `null` for the file as a whole.
    pub line: Option<u64>,
    pub message: String,
    /// The field at fault, such as `body.model`.
    pub param: Option<String>,
}

/// `POST /v1/batches`. Unknown fields are ignored: clients may send fields
/// newer than this type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CreateBatch {
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// When the output and error files expire. The clients' type does not
    /// allow `null` here, so an unset one is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_expires_after: Option<OutputExpiresAfter>,
    /// drover's own: lines of this batch that may run at once (the hub's
    /// `batches.max_concurrency` if unset). OpenAI's clients send it with
    /// `extra_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OutputExpiresAfter {
    /// `"created_at"`: the file's own creation, not the batch's.
    pub anchor: String,
    /// 3600 to 2592000 at OpenAI.
    pub seconds: u64,
}

/// A page of a cursor listing (`GET /v1/files`, `GET /v1/batches`); the
/// client asks for the next with `after` = the last item's id while
/// `has_more` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct List<T> {
    pub object: ListTag,
    pub data: Vec<T>,
    /// The first item's id; `null` on an empty page.
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl<T> List<T> {
    /// A page whose `first_id` and `last_id` are its items' own.
    pub fn page(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> &str) -> Self {
        let first_id = data.first().map(|item| id(item).to_string());
        let last_id = data.last().map(|item| id(item).to_string());
        List {
            object: ListTag::List,
            data,
            first_id,
            last_id,
            has_more,
        }
    }
}

/// One line of a batch's output or error file. Lines are written in the
/// order they finish, not the input's: clients match them by `custom_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BatchOutputLine {
    pub id: String,
    pub custom_id: String,
    /// The answer, when there was one: `null` with `error`.
    pub response: Option<BatchResponse>,
    /// Why the line got no answer: `null` with `response`.
    pub error: Option<BatchLineError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BatchResponse {
    pub status_code: u16,
    /// The `x-request-id` the answer had.
    pub request_id: String,
    /// The answer's JSON; an answer that was not JSON, as a string.
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn batch() -> Batch {
        Batch {
            id: "batch_1".into(),
            object: BatchTag::Batch,
            endpoint: "/v1/chat/completions".into(),
            input_file_id: "file-1".into(),
            completion_window: "24h".into(),
            status: BatchStatus::InProgress,
            output_file_id: None,
            error_file_id: None,
            created_at: 1_700_000_000,
            in_progress_at: Some(1_700_000_001),
            expires_at: Some(1_700_086_400),
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            request_counts: RequestCounts {
                total: 3,
                completed: 1,
                failed: 0,
            },
            errors: None,
            metadata: None,
        }
    }

    #[test]
    fn a_batch_writes_every_field_with_null_for_what_it_lacks() {
        let value = serde_json::to_value(batch()).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-1",
                "completion_window": "24h",
                "status": "in_progress",
                "output_file_id": null,
                "error_file_id": null,
                "created_at": 1_700_000_000,
                "in_progress_at": 1_700_000_001,
                "expires_at": 1_700_086_400,
                "finalizing_at": null,
                "completed_at": null,
                "failed_at": null,
                "expired_at": null,
                "cancelling_at": null,
                "cancelled_at": null,
                "request_counts": {"total": 3, "completed": 1, "failed": 0},
                "errors": null,
                "metadata": null,
            })
        );
    }

    #[test]
    fn a_failed_batch_lists_its_errors_with_null_line_and_param() {
        let mut failed = batch();
        failed.status = BatchStatus::Failed;
        failed.errors = Some(BatchErrors {
            object: ListTag::List,
            data: vec![BatchError {
                code: "too_many_requests".into(),
                line: None,
                message: "too many".into(),
                param: None,
            }],
        });
        let value = serde_json::to_value(&failed).unwrap();
        assert_eq!(value["status"], "failed");
        assert_eq!(
            value["errors"],
            json!({"object": "list", "data": [
                {"code": "too_many_requests", "line": null, "message": "too many", "param": null}
            ]})
        );
        let back: Batch = serde_json::from_value(value).unwrap();
        assert_eq!(back, failed);
    }

    #[test]
    fn statuses_are_openais_eight_words() {
        let all = [
            (BatchStatus::Validating, "validating"),
            (BatchStatus::Failed, "failed"),
            (BatchStatus::InProgress, "in_progress"),
            (BatchStatus::Finalizing, "finalizing"),
            (BatchStatus::Completed, "completed"),
            (BatchStatus::Expired, "expired"),
            (BatchStatus::Cancelling, "cancelling"),
            (BatchStatus::Cancelled, "cancelled"),
        ];
        for (status, word) in all {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(word));
            assert_eq!(
                serde_json::from_value::<BatchStatus>(json!(word)).unwrap(),
                status
            );
        }
        let finals: Vec<_> = all.iter().filter(|(s, _)| s.is_final()).collect();
        assert_eq!(finals.len(), 4);
    }

    #[test]
    fn a_file_writes_its_deprecated_status_and_nulls() {
        let file = FileObject {
            id: "file-1".into(),
            object: FileTag::File,
            bytes: 120,
            created_at: 1_700_000_000,
            filename: "in.jsonl".into(),
            purpose: FilePurpose::BatchOutput,
            status: FileStatus::Processed,
            expires_at: None,
            status_details: None,
        };
        let value = serde_json::to_value(&file).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "file-1",
                "object": "file",
                "bytes": 120,
                "created_at": 1_700_000_000,
                "filename": "in.jsonl",
                "purpose": "batch_output",
                "status": "processed",
                "expires_at": null,
                "status_details": null,
            })
        );
        assert_eq!(serde_json::from_value::<FileObject>(value).unwrap(), file);
    }

    #[test]
    fn purposes_keep_openais_spelling() {
        for word in [
            "assistants",
            "assistants_output",
            "batch",
            "batch_output",
            "fine-tune",
            "fine-tune-results",
            "vision",
            "user_data",
        ] {
            let purpose: FilePurpose = serde_json::from_value(json!(word)).unwrap();
            assert_eq!(serde_json::to_value(purpose).unwrap(), json!(word));
        }
    }

    #[test]
    fn a_deletion_says_file() {
        let deleted = FileDeleted {
            id: "file-1".into(),
            object: FileTag::File,
            deleted: true,
        };
        assert_eq!(
            serde_json::to_value(deleted).unwrap(),
            json!({"id": "file-1", "object": "file", "deleted": true})
        );
    }

    #[test]
    fn the_object_tags_refuse_other_words() {
        assert!(serde_json::from_value::<FileTag>(json!("batch")).is_err());
        assert!(serde_json::from_value::<BatchTag>(json!("file")).is_err());
        assert!(serde_json::from_value::<ListTag>(json!("page")).is_err());
    }

    #[test]
    fn create_reads_what_the_client_sends_and_ignores_newer_fields() {
        let create: CreateBatch = serde_json::from_value(json!({
            "input_file_id": "file-1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"run": "nightly"},
            "output_expires_after": {"anchor": "created_at", "seconds": 3600},
            "a_field_from_next_year": true,
        }))
        .unwrap();
        assert_eq!(create.metadata.unwrap()["run"], "nightly");
        assert_eq!(create.output_expires_after.unwrap().seconds, 3600);

        let bare: CreateBatch = serde_json::from_value(json!({
            "input_file_id": "file-1",
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
            "metadata": null,
        }))
        .unwrap();
        assert_eq!(bare.metadata, None);
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            json!({
                "input_file_id": "file-1",
                "endpoint": "/v1/embeddings",
                "completion_window": "24h",
            })
        );
    }

    #[test]
    fn create_requires_its_three_fields() {
        for missing in ["input_file_id", "endpoint", "completion_window"] {
            let mut body = json!({
                "input_file_id": "file-1",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            });
            body.as_object_mut().unwrap().remove(missing);
            assert!(
                serde_json::from_value::<CreateBatch>(body).is_err(),
                "{missing}"
            );
        }
    }

    #[test]
    fn a_page_names_its_first_and_last_ids() {
        let page = List::page(vec![batch(), batch()], true, |b| &b.id);
        let value = serde_json::to_value(&page).unwrap();
        assert_eq!(value["object"], "list");
        assert_eq!(value["first_id"], "batch_1");
        assert_eq!(value["last_id"], "batch_1");
        assert_eq!(value["has_more"], true);

        let empty = List::<Batch>::page(Vec::new(), false, |b| &b.id);
        assert_eq!(
            serde_json::to_value(&empty).unwrap(),
            json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
        );
    }

    #[test]
    fn an_output_line_has_both_response_and_error_one_of_them_null() {
        let answered = BatchOutputLine {
            id: "batch_req_1".into(),
            custom_id: "a".into(),
            response: Some(BatchResponse {
                status_code: 200,
                request_id: "req_1".into(),
                body: json!({"id": "chatcmpl-1"}),
            }),
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&answered).unwrap(),
            json!({
                "id": "batch_req_1",
                "custom_id": "a",
                "response": {"status_code": 200, "request_id": "req_1", "body": {"id": "chatcmpl-1"}},
                "error": null,
            })
        );
        let unanswered = BatchOutputLine {
            id: "batch_req_2".into(),
            custom_id: "b".into(),
            response: None,
            error: Some(BatchLineError {
                code: "batch_expired".into(),
                message: "expired".into(),
            }),
        };
        assert_eq!(
            serde_json::to_value(&unanswered).unwrap(),
            json!({
                "id": "batch_req_2",
                "custom_id": "b",
                "response": null,
                "error": {"code": "batch_expired", "message": "expired"},
            })
        );
    }
}
