-- A version of what the engine's guard rails read (`Store::past_actions`): every action, and
-- every hold on an incident. The decision worker reads the past actions before each page of
-- alerts it decides, dozens of times a second in a storm, and they grow with the store's
-- history. With this counter it reads them again only when something changed. Triggers keep
-- it, so no writer can forget to: not the leader, not `rollbackd incidents ack` in another
-- process, not another replica. One row; SQLite has it too, so both schemas stay alike.
CREATE TABLE actions_version (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO actions_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_actions_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE actions_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER actions_version_on_actions AFTER INSERT OR UPDATE OR DELETE ON actions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_actions_version();

CREATE TRIGGER actions_version_on_hold AFTER UPDATE OF held ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION bump_actions_version();

CREATE TRIGGER actions_version_on_incident_delete AFTER DELETE ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION bump_actions_version();
