-- A node's managed services as its last heartbeat reported them (JSON),
-- and the commands the hub has for its agent: start, stop or restart a
-- service (or all of them), or send a service's log tail. An agent takes
-- its queued commands with a long poll and answers each once.
ALTER TABLE nodes ADD COLUMN services TEXT NOT NULL DEFAULT '[]';

CREATE TABLE node_commands (
    id TEXT PRIMARY KEY NOT NULL,
    node_id TEXT NOT NULL,
    -- start, stop, restart or logs.
    action TEXT NOT NULL,
    -- The service it is for; empty: every service of the node.
    service TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    -- queued, sent (taken by the agent), done or failed.
    state TEXT NOT NULL,
    sent_ms INTEGER,
    finished_ms INTEGER,
    -- What the agent said: a message, or the log tail.
    result TEXT,
    -- What else the command carries (JSON): an update's version, SHA-256
    -- and health deadline.
    args TEXT NOT NULL DEFAULT ''
);

CREATE INDEX node_commands_queued ON node_commands (node_id, state, created_ms);
