-- Review and audit: the PostgreSQL twin of migrations/0007_review.sql.
--
-- The metric behind an incident, so that its page still draws the graph after Prometheus has
-- dropped the samples; one row per incident, replaced when fetched again.
CREATE TABLE incident_graphs (
    incident_id  BIGINT PRIMARY KEY REFERENCES incidents(id),
    alertname    TEXT COLLATE "C" NOT NULL,
    expr         TEXT COLLATE "C" NOT NULL,
    comparison   TEXT COLLATE "C",
    threshold    DOUBLE PRECISION,
    series       TEXT COLLATE "C" NOT NULL,
    step_seconds DOUBLE PRECISION NOT NULL,
    start_at     TEXT COLLATE "C" NOT NULL,
    end_at       TEXT COLLATE "C" NOT NULL,
    samples      TEXT COLLATE "C" NOT NULL,
    fetched_at   TEXT COLLATE "C" NOT NULL
);

-- Who acted and under what authority.
ALTER TABLE actions ADD COLUMN actor TEXT COLLATE "C";
ALTER TABLE actions ADD COLUMN version TEXT COLLATE "C";
ALTER TABLE actions ADD COLUMN config_hash TEXT COLLATE "C";
ALTER TABLE actions ADD COLUMN policy TEXT COLLATE "C";

-- Retention removes whole incidents and nothing less: a timeline entry may be deleted only
-- while its incident is being retired, which deletes everything that belongs to it.
ALTER TABLE incidents ADD COLUMN retiring BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION timeline_delete_only_when_retiring() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM incidents WHERE id = OLD.incident_id AND retiring = 1) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the timeline is append-only';
END $$;
DROP TRIGGER timeline_no_delete ON timeline;
CREATE TRIGGER timeline_no_delete BEFORE DELETE ON timeline
    FOR EACH ROW EXECUTE FUNCTION timeline_delete_only_when_retiring();

CREATE FUNCTION incident_retire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM timeline WHERE incident_id = NEW.id;
    DELETE FROM outbox WHERE incident_id = NEW.id;
    DELETE FROM incident_graphs WHERE incident_id = NEW.id;
    DELETE FROM actions WHERE incident_id = NEW.id;
    DELETE FROM alerts WHERE incident_id = NEW.id;
    DELETE FROM incidents WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER incident_retire AFTER UPDATE OF retiring ON incidents
    FOR EACH ROW WHEN (NEW.retiring = 1) EXECUTE FUNCTION incident_retire();
