-- The linker's parameters as `xdsi pix train` estimated them from the index (m, u, prior, name
-- frequencies); one row, replaced by each training. No row: the built-in priors.
CREATE TABLE linkage_model (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    parameters  jsonb NOT NULL,
    identities  bigint NOT NULL,              -- how many identities it was estimated from
    trained_at  timestamptz NOT NULL DEFAULT now()
);
