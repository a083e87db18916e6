-- Periods during which a polled rule could not be evaluated (Prometheus unreachable, an error
-- answer, a timeout). Never a reason to act; recorded so a review can see the blind spots.
CREATE TABLE inconclusive (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT
);
CREATE INDEX inconclusive_open ON inconclusive (rule) WHERE ended_at IS NULL;
