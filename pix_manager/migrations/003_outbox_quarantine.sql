-- An outbox message that failed by something no retry gets past by itself (the peer rejected it,
-- a permanent error of ours): counted as quarantined, still tried again at the longest wait.
ALTER TABLE outbox ADD COLUMN quarantined boolean NOT NULL DEFAULT false;
