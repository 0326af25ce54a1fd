-- Files (the OpenAI Files API: batch inputs, outputs and errors), their
-- bytes in the store in chunks, so that one backup holds everything.
CREATE TABLE files (
    id TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX files_by_key ON files (key_id, id);

CREATE TABLE file_chunks (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (file_id, seq)
);

-- Batches: one row each, and one job per input line (jobs.batch_id).
CREATE TABLE batches (
    id TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    output_file_id TEXT,
    error_file_id TEXT,
    -- The validation errors of a failed batch, a JSON list.
    errors TEXT,
    metadata TEXT,
    total BIGINT NOT NULL DEFAULT 0,
    -- Lines it may have running at once (none: no cap of its own).
    max_concurrency BIGINT,
    created_at BIGINT NOT NULL,
    in_progress_at BIGINT,
    expires_at BIGINT NOT NULL,
    finalizing_at BIGINT,
    completed_at BIGINT,
    failed_at BIGINT,
    expired_at BIGINT,
    cancelling_at BIGINT,
    cancelled_at BIGINT
);
CREATE INDEX batches_by_key ON batches (key_id, id);
CREATE INDEX batches_open ON batches (status) WHERE status IN ('in_progress', 'finalizing', 'cancelling');
