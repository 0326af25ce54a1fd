-- Plans: a plain-language request a model turned into tasks (POST
-- /v1/tasks/plan). The request, the model's raw answer and the plan it
-- parsed into are kept together with the ids of the tasks it made, so the
-- three are shown together with the tasks' results; a plan that was
-- refused (not JSON, outside the schema, a capability nobody offers) is
-- kept too, with why, and made no tasks.
CREATE TABLE plans (
    id TEXT PRIMARY KEY NOT NULL,
    key_id TEXT NOT NULL,
    request TEXT NOT NULL,
    model TEXT NOT NULL,
    -- The model's answer as it came (the message's content).
    answer TEXT NOT NULL,
    -- The plan as JSON, once it parsed.
    plan TEXT,
    -- Why it was refused; NULL when its tasks were submitted.
    error TEXT,
    -- The tasks it made, a JSON list of ids in the plan's order.
    task_ids TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX plans_by_key ON plans (key_id, created_at);
CREATE INDEX plans_by_time ON plans (created_at);
