-- Row-level security is a Postgres feature (see the Postgres migration 0022): on
-- SQLite this migration does nothing, so both backends count the same versions.
SELECT 1;
