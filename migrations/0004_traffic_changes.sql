-- Changes of opted-in traffic objects (a Service's selector, a VirtualService's weights). The
-- previous state is nowhere else in the cluster, so it is kept here; rows are never updated.
CREATE TABLE traffic_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,        -- service | virtual-service
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    uid         TEXT NOT NULL,
    at          TEXT NOT NULL,
    from_state  TEXT NOT NULL,        -- JSON
    to_state    TEXT NOT NULL         -- JSON
);
CREATE INDEX traffic_changes_object ON traffic_changes (kind, namespace, name, id);
