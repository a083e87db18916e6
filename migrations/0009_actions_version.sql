-- A version of what the engine's guard rails read (`Store::past_actions`): every action, and
-- every hold on an incident. The decision worker reads the past actions before each page of
-- alerts it decides, dozens of times a second in a storm, and they grow with the store's
-- history. With this counter it reads them again only when something changed. Triggers keep
-- it, so no writer can forget to: not the daemon, not `rollbackd incidents ack` in another
-- process. One row; PostgreSQL has it too, so both schemas stay alike.
CREATE TABLE actions_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO actions_version (id, version) VALUES (1, 0);

CREATE TRIGGER actions_version_on_insert AFTER INSERT ON actions
BEGIN
    UPDATE actions_version SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER actions_version_on_update AFTER UPDATE ON actions
BEGIN
    UPDATE actions_version SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER actions_version_on_delete AFTER DELETE ON actions
BEGIN
    UPDATE actions_version SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER actions_version_on_hold AFTER UPDATE OF held ON incidents
BEGIN
    UPDATE actions_version SET version = version + 1 WHERE id = 1;
END;

CREATE TRIGGER actions_version_on_incident_delete AFTER DELETE ON incidents
BEGIN
    UPDATE actions_version SET version = version + 1 WHERE id = 1;
END;
