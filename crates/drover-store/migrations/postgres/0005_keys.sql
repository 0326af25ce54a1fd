-- API keys, moved here from the data directory's keys.json (imported once
-- by the first hub that finds one) so that every hub on a database knows
-- the same keys. Only a key's SHA-256 is kept; revoked keys stay listed
-- until purged. A key may have a webhook secret of its own, which signs
-- the callbacks of its jobs instead of the hub's.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_unix BIGINT NOT NULL,
    revoked_unix BIGINT,
    -- The key's limits as JSON (drover_proto::admin::KeyLimits).
    limits TEXT NOT NULL,
    webhook_secret TEXT
);

-- Two active keys never share a name: revoking by name finds one.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_unix IS NULL;
