-- Fencing of leaders (docs/ha.md). With several replicas on one PostgreSQL store, the replica
-- holding the Kubernetes Lease decides and acts. Each time a replica becomes the leader it
-- takes the next epoch here; every action intent is written only if the epoch it was decided
-- under is still the newest. A leader that lost the lease without knowing it (a paused
-- process, a skewed clock) can therefore never record, and so never carry out, an action
-- after another replica took over. One row; SQLite has it too, so both schemas stay alike.
CREATE TABLE leadership (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   INTEGER NOT NULL,
    holder  TEXT NOT NULL,      -- the replica's identity (its Lease holderIdentity)
    since   TEXT NOT NULL
);
