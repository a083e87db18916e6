-- Settling uncertain actions, deciding again after a transient failure, and ordering the
-- backlog.
--
-- An action's result is one of succeeded, skipped, failed, or `unknown`: the write may or may
-- not have been applied (its answer was lost: a timeout, a dropped connection, a 5xx, a crash).
-- An unknown action is settled by re-reading the object, never guessed. Until then it blocks
-- a second action for the same cause, exactly as an intended or succeeded one does.
DROP INDEX actions_one_per_cause;
CREATE UNIQUE INDEX actions_one_per_cause ON actions (workload_uid, blamed_uid)
    WHERE dry_run = 0 AND status IN ('intended', 'unknown', 'succeeded');
CREATE INDEX actions_unsettled ON actions (id) WHERE status IN ('intended', 'unknown');

-- An alert is decided again (decided_at back to NULL) when its decision could not be carried
-- out for a transient reason, when its action was settled as not applied, or when it waited
-- for fresh data too long. `attempts` counts the decisions made; `retry_at` holds the next
-- one back until then.
ALTER TABLE alerts ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN retry_at TEXT COLLATE "C";
-- Set on receipt: 1 when the alert concerns a workload with a rollout recent enough to be
-- blamed (or the index could not tell yet), 0 otherwise. The worker takes urgent alerts first,
-- so a flood about quiet workloads never delays a rollback.
ALTER TABLE alerts ADD COLUMN priority BIGINT NOT NULL DEFAULT 1;
DROP INDEX alerts_undecided;
CREATE INDEX alerts_undecided ON alerts (priority DESC, id) WHERE decided_at IS NULL;
-- A decision that failed for a transient reason after its attempts were used up is decided
-- again when Alertmanager (or the poller) delivers the alert again.
ALTER TABLE alerts ADD COLUMN retry_on_delivery BIGINT NOT NULL DEFAULT 0;
