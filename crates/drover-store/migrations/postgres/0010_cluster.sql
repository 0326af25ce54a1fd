-- Several hubs on one database are one cluster (or several, by name). One
-- of them leads: it holds the cluster's lease, whose expiry is on the
-- database's clock (the hubs' own clocks may disagree), and whose epoch
-- fences what an earlier leader still tries.
CREATE TABLE cluster_leases (
    cluster TEXT PRIMARY KEY NOT NULL,
    -- The hub's id (kept in its data directory) and its process's own.
    holder TEXT NOT NULL,
    instance TEXT NOT NULL,
    -- Where the other hubs reach it.
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    -- Milliseconds since the Unix epoch, the database's clock.
    expires_ms BIGINT NOT NULL
);

-- Every hub of a cluster, as it last said (every lease renewal's time).
CREATE TABLE cluster_hubs (
    cluster TEXT NOT NULL,
    id TEXT NOT NULL,
    instance TEXT NOT NULL,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    -- leader, follower or stopped.
    role TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    grants BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    PRIMARY KEY (cluster, id)
);
