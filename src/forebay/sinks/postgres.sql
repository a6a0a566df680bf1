-- The PostgreSQL sink's own bookkeeping: which migrations of which package a schema has.
-- Tables are named without a schema: every connection's search_path is the sink's schema.

-- name: lock
SELECT pg_advisory_xact_lock(hashtext($1));

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS forebay_sink_migrations (
    package    text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (package, version)
);

-- name: applied
SELECT version FROM forebay_sink_migrations WHERE package = $1;

-- name: record
INSERT INTO forebay_sink_migrations (package, version, name) VALUES ($1, $2, $3);
