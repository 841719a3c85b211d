-- The PIX manager's index: source identities grouped into enterprise identities (persons).

CREATE TABLE domain (
    oid        text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE enterprise (
    id            bigserial PRIMARY KEY,
    affinity_id   text NOT NULL UNIQUE,       -- CX in the affinity domain
    merged_into   bigint REFERENCES enterprise(id),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity (
    id            bigserial PRIMARY KEY,
    domain        text NOT NULL,
    pid           text NOT NULL,
    enterprise    bigint NOT NULL REFERENCES enterprise(id),
    demographics  jsonb NOT NULL,
    blocking      text[] NOT NULL DEFAULT '{}',
    link_score    real,
    link_explanation text,                   -- which attribute earned what
    linked_by     text NOT NULL DEFAULT 'scorecard',
    merged_into   bigint REFERENCES identity(id),  -- A40: subsumed by that identity
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain, pid)
);
CREATE INDEX identity_enterprise ON identity (enterprise);
CREATE INDEX identity_blocking ON identity USING gin (blocking);

CREATE TABLE review_item (
    id           bigserial PRIMARY KEY,
    identity     bigint NOT NULL REFERENCES identity(id),
    candidate    bigint NOT NULL REFERENCES identity(id),
    score        real NOT NULL,
    explanation  text NOT NULL,
    status       text NOT NULL DEFAULT 'open',   -- open | linked | broken
    decided_by   text,
    decided_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_item_open ON review_item (status, id);

-- A person's decision about a pair, remembered and preferred to the scorecard on later updates.
CREATE TABLE decision (
    a          bigint NOT NULL REFERENCES identity(id),
    b          bigint NOT NULL REFERENCES identity(id),
    verdict    text NOT NULL,                    -- link | break
    decided_by text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (a, b)
);

-- Messages to deliver (ITI-8 to the registry, ITI-10 to subscribers), until acknowledged.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    destination  text NOT NULL,                  -- host:port
    message      bytea NOT NULL,
    attempts     int NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    delivered_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending ON outbox (next_attempt) WHERE delivered_at IS NULL;
