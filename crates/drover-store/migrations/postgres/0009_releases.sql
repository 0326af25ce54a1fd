-- Releases of drover for node agents to update to: each a file (its bytes
-- in file_chunks, like every file) with its version and SHA-256; and
-- roll-outs, which update nodes to a release a batch at a time.
CREATE TABLE releases (
    version TEXT PRIMARY KEY NOT NULL,
    file_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    -- What it runs on, as Rust names them (linux, x86_64).
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    created_unix BIGINT NOT NULL
);

CREATE TABLE rollouts (
    id TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    batch BIGINT NOT NULL,
    -- running, done or halted.
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    -- Each node's part (JSON), and why it halted.
    detail TEXT NOT NULL
);
