-- Each received ITI-20 record: the raw syslog message as it came, and the fields audit reviews search by.
CREATE TABLE record (
    id              bigserial PRIMARY KEY,
    digest          bytea NOT NULL,            -- sha256 of the syslog message: a record sent twice is kept once
    received_at     timestamptz NOT NULL,
    transport       text NOT NULL,             -- tls | tcp | udp | local
    peer            text NOT NULL,             -- the sender's address (and certificate subject under TLS)
    syslog_time     timestamptz,
    syslog_host     text,
    syslog_app      text,
    syslog_procid   text,
    syslog_msgid    text,
    event_id        text,                      -- EventID csd-code (110112 Query, ...)
    event_system    text,
    event_types     text[] NOT NULL DEFAULT '{}',   -- EventTypeCode csd-codes (ITI-18, 110120, ...)
    action          text,
    outcome         smallint,
    event_time      timestamptz,
    patient_ids     text[] NOT NULL DEFAULT '{}',   -- ParticipantObjectID of each patient (CX)
    patient_numbers text[] NOT NULL DEFAULT '{}',   -- the same ids without their assigning authority
    user_ids        text[] NOT NULL DEFAULT '{}',   -- UserID, AlternativeUserID and UserName of each participant
    source_id       text,                      -- AuditSourceID
    problem         text,                      -- why the message could not be read as a DICOM audit message
    message         bytea NOT NULL             -- the syslog message as received, undamaged
);
CREATE UNIQUE INDEX record_digest ON record (digest);
CREATE INDEX record_event_time ON record (event_time);
CREATE INDEX record_received_at ON record (received_at);
CREATE INDEX record_event_id ON record (event_id);
CREATE INDEX record_event_types ON record USING gin (event_types);
CREATE INDEX record_outcome ON record (outcome);
CREATE INDEX record_patient_ids ON record USING gin (patient_ids);
CREATE INDEX record_patient_numbers ON record USING gin (patient_numbers);
CREATE INDEX record_user_ids ON record USING gin (user_ids);
CREATE INDEX record_source_id ON record (source_id);
