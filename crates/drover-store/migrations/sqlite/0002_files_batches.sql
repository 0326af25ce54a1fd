-- Files (the OpenAI Files API: batch inputs, outputs and errors), their
-- bytes in the store in chunks, so that one backup holds everything.
CREATE TABLE files (
    id TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX files_by_key ON files (key_id, id);

CREATE TABLE file_chunks (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
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
    total INTEGER NOT NULL DEFAULT 0,
    -- Lines it may have running at once (none: no cap of its own).
    max_concurrency INTEGER,
    created_at INTEGER NOT NULL,
    in_progress_at INTEGER,
    expires_at INTEGER NOT NULL,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    expired_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER
);
CREATE INDEX batches_by_key ON batches (key_id, id);
CREATE INDEX batches_open ON batches (status) WHERE status IN ('in_progress', 'finalizing', 'cancelling');
