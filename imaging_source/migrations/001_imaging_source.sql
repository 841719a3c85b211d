-- The imaging source's index of what it received, and its publication state.
-- A study is due for publication while version > published_version: that comparison, with
-- changed_at for the quiet period, is the durable publication queue.
CREATE TABLE patient (
    id          bigserial PRIMARY KEY,
    patient_id  text NOT NULL,
    issuer      text NOT NULL,           -- OID of the assigning authority
    name        text NOT NULL DEFAULT '',
    birth_date  text NOT NULL DEFAULT '',
    sex         text NOT NULL DEFAULT '',
    UNIQUE (patient_id, issuer)
);

CREATE TABLE study (
    id                 bigserial PRIMARY KEY,
    study_uid          text NOT NULL UNIQUE,
    patient            bigint NOT NULL REFERENCES patient,
    study_date         text NOT NULL DEFAULT '',
    study_time         text NOT NULL DEFAULT '',
    accession          text NOT NULL DEFAULT '',
    study_id           text NOT NULL DEFAULT '',
    description        text NOT NULL DEFAULT '',
    referring          text NOT NULL DEFAULT '',
    outside            boolean NOT NULL DEFAULT false,   -- a reconciled copy of another site's study
    version            bigint NOT NULL DEFAULT 1,        -- bumped by every change
    changed_at         timestamptz NOT NULL DEFAULT now(),
    published_version  bigint NOT NULL DEFAULT 0,
    -- publication attempts in progress or failed
    lease_until        timestamptz,
    next_attempt_at    timestamptz,
    attempts           int NOT NULL DEFAULT 0,
    last_error         text NOT NULL DEFAULT '',
    pending            jsonb            -- the manifest being sent: reused as is by a retry
);
CREATE INDEX study_due ON study (changed_at) WHERE version > published_version;
CREATE INDEX study_patient ON study (patient);
CREATE INDEX study_accession ON study (accession);
CREATE INDEX study_date ON study (study_date);

CREATE TABLE series (
    id             bigserial PRIMARY KEY,
    series_uid     text NOT NULL UNIQUE,
    study          bigint NOT NULL REFERENCES study ON DELETE CASCADE,
    modality       text NOT NULL DEFAULT '',
    series_number  text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    body_part      text NOT NULL DEFAULT ''
);
CREATE INDEX series_study ON series (study);

CREATE TABLE instance (
    id               bigserial PRIMARY KEY,
    sop_uid          text NOT NULL UNIQUE,
    series           bigint NOT NULL REFERENCES series ON DELETE CASCADE,
    sop_class        text NOT NULL,
    instance_number  text NOT NULL DEFAULT '',
    is_image         boolean NOT NULL DEFAULT false,
    transfer_syntax  text NOT NULL,
    sha1             text NOT NULL,        -- the Part-10 file in the content store
    size             bigint NOT NULL,
    calling_ae       text NOT NULL DEFAULT '',
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_series ON instance (series);
CREATE INDEX instance_sha1 ON instance (sha1);

-- Every manifest sent and registered; the newest approved one per study is what a change replaces.
CREATE TABLE manifest (
    sop_uid          text PRIMARY KEY,     -- = the DocumentEntry uniqueId
    study            bigint NOT NULL REFERENCES study ON DELETE CASCADE,
    entry_uuid       text NOT NULL,        -- the DocumentEntry's entryUUID (RPLC target)
    study_version    bigint NOT NULL,
    instances        int NOT NULL,
    refs_digest      text NOT NULL,        -- SHA-1 of the referenced SOP Instance UIDs, sorted
    patient_id       text NOT NULL,        -- affinity-domain CX it was published under
    status           text NOT NULL DEFAULT 'approved',   -- approved | replaced | withdrawn
    sha1             text NOT NULL,
    published_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX manifest_study ON manifest (study, published_at);
