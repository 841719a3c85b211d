-- A study whose last publication failed by an error of ours (not a peer down or an unknown
-- patient): counted as quarantined, and tried again with back-off like any other.
ALTER TABLE study ADD COLUMN quarantined boolean NOT NULL DEFAULT false;
CREATE INDEX study_quarantined ON study (id) WHERE quarantined;
