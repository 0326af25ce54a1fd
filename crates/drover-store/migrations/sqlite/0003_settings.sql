-- Settings: named values every hub on this store shares (the secret job
-- callbacks are signed with), one row each.
CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
