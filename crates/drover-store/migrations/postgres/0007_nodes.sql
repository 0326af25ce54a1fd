-- Machines (nodes) and the join tokens that let them in. An agent trades a
-- join token for a node credential at first contact; only SHA-256s of
-- either are kept. A node's facts (host, OS, CPUs, memory, GPUs, the
-- servers it found) are the JSON of its last heartbeat.
CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    -- Its first characters, to tell tokens apart in a listing.
    prefix TEXT NOT NULL,
    created_unix BIGINT NOT NULL,
    expires_unix BIGINT NOT NULL,
    -- 1: one node may join with it; 0: any number until it expires.
    single_use BIGINT NOT NULL,
    used_unix BIGINT,
    revoked_unix BIGINT
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    credential_sha256 TEXT NOT NULL UNIQUE,
    -- The join token it came with.
    token_id TEXT NOT NULL,
    joined_unix BIGINT NOT NULL,
    -- Milliseconds: a node is down after three heartbeats, which may be
    -- shorter than a second.
    last_seen_ms BIGINT NOT NULL,
    version TEXT NOT NULL,
    facts TEXT NOT NULL,
    draining BIGINT NOT NULL,
    removed_unix BIGINT
);
