-- Jobs: every request handed over to run later, an inference job or a
-- callback's delivery. Times are milliseconds since the Unix epoch on the
-- hub's clock; JSON columns are text.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    -- The client key that submitted it ('' for the anonymous client): whose
    -- it is, and the scope of its idempotency keys.
    key_id TEXT NOT NULL,
    batch_id TEXT,
    custom_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    body BLOB NOT NULL,
    priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    -- Attempts whose runner vanished (its lease ran out): counted apart,
    -- so that a hub's crash does not use up a job's attempts.
    lost INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    -- When the attempt under way began.
    attempted_at INTEGER,
    deadline INTEGER,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts TEXT NOT NULL DEFAULT '[]',
    failed_backends TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT,
    request_hash TEXT,
    callback_url TEXT,
    metadata TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER
);
CREATE INDEX jobs_ready ON jobs (kind, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_deadlines ON jobs (deadline) WHERE state = 'queued' AND deadline IS NOT NULL;
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_batch ON jobs (batch_id, state) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_by_key ON jobs (key_id, id);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (key_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- A job's answer, kept apart so that the rows the claims walk stay small.
CREATE TABLE job_answers (
    job_id TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL
);
