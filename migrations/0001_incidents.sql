-- The incident store. Timestamps are RFC 3339 UTC text with nine fractional digits, so they
-- sort and compare as text and read well in a review.

CREATE TABLE incidents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- One incident per (workload, rollout): "deployment/NS/NAME@RS_UID", or
    -- "unmatched/FINGERPRINT" for an alert that names no known workload.
    incident_key  TEXT NOT NULL UNIQUE,
    namespace     TEXT,
    workload_kind TEXT,
    workload_name TEXT,
    workload_uid  TEXT,
    rollout_name  TEXT,
    rollout_uid   TEXT,
    rollout_revision INTEGER,
    rollout_image TEXT,
    rollout_since TEXT,
    opened_at     TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    status        TEXT NOT NULL,      -- open | resolved
    outcome       TEXT NOT NULL,      -- the most significant outcome so far
    reason        TEXT NOT NULL,
    resolved_at   TEXT
);

CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint    TEXT NOT NULL,
    starts_at      TEXT NOT NULL,
    source         TEXT NOT NULL,     -- alertmanager | prometheus
    alertname      TEXT NOT NULL,
    status         TEXT NOT NULL,     -- firing | resolved
    labels         TEXT NOT NULL,     -- JSON object
    annotations    TEXT NOT NULL,     -- JSON object
    generator_url  TEXT NOT NULL,
    external_url   TEXT,
    ends_at        TEXT,
    received_at    TEXT NOT NULL,
    last_received_at TEXT NOT NULL,
    deliveries     INTEGER NOT NULL DEFAULT 1,
    incident_id    INTEGER REFERENCES incidents(id),
    outcome        TEXT,
    reason         TEXT,
    decided_at     TEXT,
    resolved_at    TEXT,
    UNIQUE (fingerprint, starts_at)
);
CREATE INDEX alerts_undecided ON alerts (id) WHERE decided_at IS NULL;
CREATE INDEX alerts_incident ON alerts (incident_id);

CREATE TABLE timeline (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id  INTEGER NOT NULL REFERENCES incidents(id),
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,       -- received | correlated | decision | action | result | resolved
    outcome      TEXT,
    message      TEXT NOT NULL,
    data         TEXT                 -- JSON details (labels, patch, API answer)
);
CREATE INDEX timeline_incident ON timeline (incident_id, id);

-- The timeline is append-only: a review must be able to trust it.
CREATE TRIGGER timeline_no_update BEFORE UPDATE ON timeline
BEGIN SELECT RAISE(ABORT, 'the timeline is append-only'); END;
CREATE TRIGGER timeline_no_delete BEFORE DELETE ON timeline
BEGIN SELECT RAISE(ABORT, 'the timeline is append-only'); END;

CREATE TABLE actions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id   INTEGER NOT NULL REFERENCES incidents(id),
    alert_id      INTEGER NOT NULL REFERENCES alerts(id),
    kind          TEXT NOT NULL,      -- undo-deployment
    namespace     TEXT NOT NULL,
    workload_name TEXT NOT NULL,
    workload_uid  TEXT NOT NULL,
    blamed_uid    TEXT NOT NULL,
    blamed_name   TEXT NOT NULL,
    target_uid    TEXT,
    target_name   TEXT,
    dry_run       INTEGER NOT NULL,
    intended_at   TEXT NOT NULL,
    status        TEXT NOT NULL,      -- intended | succeeded | skipped | failed
    finished_at   TEXT,
    detail        TEXT
);
-- Never two live rollbacks for one cause: an intended or succeeded undo of a rollout blocks
-- another, whichever alert asks for it.
CREATE UNIQUE INDEX actions_one_per_cause ON actions (workload_uid, blamed_uid)
    WHERE dry_run = 0 AND status IN ('intended', 'succeeded');
