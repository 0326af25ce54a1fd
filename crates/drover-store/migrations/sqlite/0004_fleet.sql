-- What an operator changed in the fleet at run time, kept so that a
-- restarted hub (or another one sharing the database) has it too: backends
-- added through the management API (their spec as given, JSON) and pinned
-- models. Backends in the config file are the config's, not kept here.
CREATE TABLE saved_backends (
    name TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL,
    added_at INTEGER NOT NULL
);

CREATE TABLE pins (
    model TEXT PRIMARY KEY NOT NULL,
    pinned_at INTEGER NOT NULL
);
