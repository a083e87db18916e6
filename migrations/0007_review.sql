-- Review and audit.
--
-- The metric behind an incident, so that its page still draws the graph after Prometheus has
-- dropped the samples. One row per incident, replaced when fetched again (after the action,
-- then once verified): it is evidence gathered about the incident, not a step of it.
CREATE TABLE incident_graphs (
    incident_id  INTEGER PRIMARY KEY REFERENCES incidents(id),
    alertname    TEXT NOT NULL,
    expr         TEXT NOT NULL,       -- what was graphed: the rule's expression without its comparison
    comparison   TEXT,                -- ">", ">=", "<", "<=", "==", "!=" (none: no threshold line)
    threshold    REAL,
    series       TEXT NOT NULL,       -- JSON object: the labels of the series drawn
    step_seconds REAL NOT NULL,
    start_at     TEXT NOT NULL,
    end_at       TEXT NOT NULL,
    samples      TEXT NOT NULL,       -- JSON [[unix seconds, value], ...]; NaN and infinities left out
    fetched_at   TEXT NOT NULL
);

-- Who acted and under what authority: the Kubernetes identity rollbackd acted as, its version,
-- a hash of the effective configuration and the policy values that allowed the action
-- (JSON). The mode is `dry_run`.
ALTER TABLE actions ADD COLUMN actor TEXT;
ALTER TABLE actions ADD COLUMN version TEXT;
ALTER TABLE actions ADD COLUMN config_hash TEXT;
ALTER TABLE actions ADD COLUMN policy TEXT;

-- Retention removes whole incidents and nothing less. Setting `retiring` deletes the incident
-- with everything that belongs to it in the same statement; a timeline entry of an incident
-- that is not being retired still cannot be updated or deleted.
ALTER TABLE incidents ADD COLUMN retiring INTEGER NOT NULL DEFAULT 0;
DROP TRIGGER timeline_no_delete;
CREATE TRIGGER timeline_no_delete BEFORE DELETE ON timeline
WHEN NOT EXISTS (SELECT 1 FROM incidents WHERE id = OLD.incident_id AND retiring = 1)
BEGIN SELECT RAISE(ABORT, 'the timeline is append-only'); END;
CREATE TRIGGER incident_retire AFTER UPDATE OF retiring ON incidents
WHEN NEW.retiring = 1
BEGIN
    DELETE FROM timeline WHERE incident_id = NEW.id;
    DELETE FROM outbox WHERE incident_id = NEW.id;
    DELETE FROM incident_graphs WHERE incident_id = NEW.id;
    DELETE FROM actions WHERE incident_id = NEW.id;
    DELETE FROM alerts WHERE incident_id = NEW.id;
    DELETE FROM incidents WHERE id = NEW.id;
END;
