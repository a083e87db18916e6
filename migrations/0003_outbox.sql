-- Notifications to on-call, one row per (incident, channel, destination, event). A row is
-- written in the same transaction as the decision or the action result it reports, so a crash
-- can neither lose a notification nor send one about something that was never recorded. The
-- delivery worker sends due rows, retries with backoff until `deadline`, and appends a
-- `notify` entry to the incident's timeline for every attempt and for the final status.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id     INTEGER NOT NULL REFERENCES incidents(id),
    channel         TEXT NOT NULL,      -- slack | email | log
    destination     TEXT NOT NULL,      -- "#payments-oncall", "webhook", "a@example.com, b@example.com"
    event           TEXT NOT NULL,      -- what the message reports: "decision:ALERT_ID", "result:ACTION_ID"
    payload         TEXT NOT NULL,      -- the notification, JSON: everything the message shows
    status          TEXT NOT NULL,      -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    deadline        TEXT NOT NULL,      -- no retry is scheduled after this
    sending_since   TEXT,               -- set while an attempt is in flight; a crash leaves it set
    last_error      TEXT,
    finished_at     TEXT,
    -- Where the message landed, so that later messages about the incident can follow it:
    -- Slack's channel id and message ts (thread replies), or an email's Message-ID (In-Reply-To).
    thread_channel  TEXT,
    thread_ts       TEXT,
    UNIQUE (incident_id, channel, destination, event)
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_thread ON outbox (incident_id, channel, destination, id);
