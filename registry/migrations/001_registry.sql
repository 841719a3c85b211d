-- The Document Registry's store. Queryable attributes are columns (arrays for multi-valued
-- codes, as 'code^^scheme'); the full ebRIM object is kept as XML for LeafClass answers.

CREATE TABLE patient (
    id            text PRIMARY KEY,            -- CX in the affinity domain: id^^^&oid&ISO
    merged_into   text REFERENCES patient(id), -- set by an A40 merge: this id is subsumed
    demographics  jsonb NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE submission_set (
    id              text PRIMARY KEY,
    unique_id       text NOT NULL UNIQUE,
    patient_id      text NOT NULL,
    status          text NOT NULL,
    source_id       text NOT NULL,
    submission_time text NOT NULL,               -- DTM, zero-padded to 14 digits
    content_type    text[] NOT NULL DEFAULT '{}',
    author_person   text[] NOT NULL DEFAULT '{}',
    home            text NOT NULL DEFAULT '',
    xml             bytea NOT NULL
);
CREATE INDEX submission_set_patient ON submission_set (patient_id, status);

CREATE TABLE document_entry (
    id                  text PRIMARY KEY,
    lid                 text NOT NULL,
    version             int NOT NULL DEFAULT 1,
    unique_id           text NOT NULL,
    patient_id          text NOT NULL,
    status              text NOT NULL,
    on_demand           boolean NOT NULL DEFAULT false,
    hash                text,
    size                bigint,
    repository_unique_id text,
    creation_time       text,
    service_start_time  text,
    service_stop_time   text,
    class_code          text[] NOT NULL DEFAULT '{}',
    type_code           text[] NOT NULL DEFAULT '{}',
    practice_setting    text[] NOT NULL DEFAULT '{}',
    facility_type       text[] NOT NULL DEFAULT '{}',
    event_code          text[] NOT NULL DEFAULT '{}',
    confidentiality     text[] NOT NULL DEFAULT '{}',
    format_code         text[] NOT NULL DEFAULT '{}',
    author_person       text[] NOT NULL DEFAULT '{}',
    reference_id        text[] NOT NULL DEFAULT '{}',
    submission_set      text NOT NULL REFERENCES submission_set(id),
    home                text NOT NULL DEFAULT '',
    xml                 bytea NOT NULL
);
-- Every patient-scoped query starts here; nothing else ever scans this table.
CREATE INDEX document_entry_patient ON document_entry (patient_id, status);
CREATE INDEX document_entry_unique_id ON document_entry (unique_id);
CREATE INDEX document_entry_lid ON document_entry (lid);

CREATE TABLE folder (
    id               text PRIMARY KEY,
    lid              text NOT NULL,
    unique_id        text NOT NULL UNIQUE,
    patient_id       text NOT NULL,
    status           text NOT NULL,
    last_update_time text NOT NULL,
    code_list        text[] NOT NULL DEFAULT '{}',
    home             text NOT NULL DEFAULT '',
    xml              bytea NOT NULL
);
CREATE INDEX folder_patient ON folder (patient_id, status);

CREATE TABLE association (
    id               text PRIMARY KEY,
    type             text NOT NULL,
    source           text NOT NULL,
    target           text NOT NULL,
    status           text NOT NULL,
    submission_set   text NOT NULL,          -- the submission that created it
    xml              bytea NOT NULL
);
CREATE INDEX association_source ON association (source, type);
CREATE INDEX association_target ON association (target, type);
