-- Bearer tokens of the JSON APIs (affinity_domain.tokens): only a token's SHA-256 is kept.
CREATE TABLE token (
    name text PRIMARY KEY,
    role text NOT NULL,
    sha256 text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
