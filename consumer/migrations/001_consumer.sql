-- The consumer's durable work: one fetch per trigger (order or request), one job per outside study.

CREATE TABLE prefetch (
    id            bigserial PRIMARY KEY,
    trigger       text NOT NULL,              -- "order ORD123" | "cli" | "http"
    local_patient text NOT NULL,              -- CX in the local domain
    affinity_id   text,
    state         text NOT NULL DEFAULT 'new',  -- new | searched | failed
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE job (
    id                   bigserial PRIMARY KEY,
    prefetch             bigint NOT NULL REFERENCES prefetch(id),
    local_patient        text NOT NULL,
    document_unique_id   text NOT NULL,
    repository_unique_id text NOT NULL,
    home                 text NOT NULL DEFAULT '',
    study_uid            text NOT NULL DEFAULT '',
    accession            text NOT NULL DEFAULT '',
    state                text NOT NULL DEFAULT 'found',  -- found | manifest | retrieved | stored | failed
    instances_total      int NOT NULL DEFAULT 0,
    instances_done       int NOT NULL DEFAULT 0,
    attempts             int NOT NULL DEFAULT 0,
    next_attempt         timestamptz NOT NULL DEFAULT now(),
    last_error           text,
    history              jsonb NOT NULL DEFAULT '[]',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- The same outside study for the same local patient is fetched once: a second order stores nothing new.
    UNIQUE (local_patient, document_unique_id)
);
CREATE INDEX job_due ON job (next_attempt) WHERE state NOT IN ('stored', 'failed');
