-- Verification: after an action that changed something, the alerts that triggered it are
-- followed for `policy.verify_window`. They all resolve → the incident is `recovered`; they do
-- not → `not-recovered`, on-call is told, and the workload is held: no further automatic
-- action on it until a human acknowledges the incident (`rollbackd incidents ack ID`).
--
-- `verify_until` is set when the action's result is recorded as applied; `verified_at` and
-- `verify_result` (recovered | not-recovered) once the verdict is recorded.
ALTER TABLE actions ADD COLUMN verify_until TEXT COLLATE "C";
ALTER TABLE actions ADD COLUMN verified_at TEXT COLLATE "C";
ALTER TABLE actions ADD COLUMN verify_result TEXT COLLATE "C";
CREATE INDEX actions_verifying ON actions (id) WHERE verify_until IS NOT NULL AND verified_at IS NULL;

-- 1 while the incident is not-recovered and not acknowledged. The acknowledgement itself is
-- also a timeline entry (`ack`, with who and why); these columns hold the state.
ALTER TABLE incidents ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN acked_at TEXT COLLATE "C";
ALTER TABLE incidents ADD COLUMN acked_by TEXT COLLATE "C";
