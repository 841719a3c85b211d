-- The index of stored documents. A row is 'pending' from before its bytes are stored until the
-- registry has answered; only 'registered' rows are retrievable. Bytes live in the content
-- store under their SHA-1 (several documents may share them).
CREATE TABLE document (
    unique_id     text PRIMARY KEY,
    sha1          char(40) NOT NULL,
    size          bigint NOT NULL,
    mime_type     text NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'registered')),
    owner         text NOT NULL,          -- host:pid of the process registering it
    created_at    timestamptz NOT NULL DEFAULT now(),
    registered_at timestamptz
);
CREATE INDEX document_sha1 ON document (sha1);
CREATE INDEX document_pending ON document (created_at) WHERE state = 'pending';
