-- A fetch is durable too: an order ACKed before a crash is still searched, and a search that met a
-- PIX or registry that was down is retried with back-off.
ALTER TABLE prefetch
    ADD COLUMN since        text NOT NULL DEFAULT '',
    ADD COLUMN modalities   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN attempts     int NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN history      jsonb NOT NULL DEFAULT '[]';
CREATE INDEX prefetch_due ON prefetch (next_attempt) WHERE state = 'new';

-- Instances already in the local PACS for a local patient: a retried job, or a replacing manifest
-- of the same study, sends only what the PACS does not have yet.
CREATE TABLE stored_instance (
    local_patient text NOT NULL,
    sop_uid       text NOT NULL,
    job           bigint NOT NULL REFERENCES job(id),
    stored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (local_patient, sop_uid)
);

ALTER TABLE job
    ADD COLUMN retrieved_by      text NOT NULL DEFAULT '',   -- rad69 | c-move | c-get
    ADD COLUMN report_unique_id  text NOT NULL DEFAULT '',   -- a report registered beside the study
    ADD COLUMN report_repository text NOT NULL DEFAULT '',
    ADD COLUMN report_mime       text NOT NULL DEFAULT '',
    ADD COLUMN report_state      text NOT NULL DEFAULT '';   -- '' | skipped | stored | sent
