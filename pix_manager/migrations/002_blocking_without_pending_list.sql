-- GIN's pending list makes every candidate lookup scan the identities added since the last
-- vacuum; with a steady feed that is most of the recent ones. Insert straight into the index.
ALTER INDEX identity_blocking SET (fastupdate = off);
