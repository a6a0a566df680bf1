-- forebay schema: runs, and jobs that wait for other jobs (DESIGN §10; see forebay.runs).
--
-- A run keeps on its row what only ever grows or is settled in the same transaction as a
-- job's finish: its total and its finished counts. Its waiting, queued and running jobs are
-- counted when it is read, through jobs_run_state (partial: jobs without a run are not in it
-- and pay nothing). The transaction that finishes a run's last job of a sealed run updates
-- the row (locked, runs in id order) and stores the completion jobs, so there is one.
CREATE TABLE {schema}.runs (
    id           text        PRIMARY KEY,
    name         text,
    key          text,
    meta         text        NOT NULL DEFAULT '{}',
    state        text        NOT NULL DEFAULT 'open',
    on_complete  text,
    webhook      text,
    total        integer     NOT NULL DEFAULT 0,
    completed    integer     NOT NULL DEFAULT 0,
    dead         integer     NOT NULL DEFAULT 0,
    cancelled    integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sealed_at    timestamptz,
    completed_at timestamptz,
    CONSTRAINT runs_state_known CHECK (state IN ('open', 'sealed', 'completed')),
    CONSTRAINT runs_counts_add_up
        CHECK (completed >= 0 AND dead >= 0 AND cancelled >= 0
               AND completed + dead + cancelled <= total),
    CONSTRAINT runs_completed_iff_completed_at
        CHECK ((state = 'completed') = (completed_at IS NOT NULL)),
    CONSTRAINT runs_sealed_at_iff_sealed CHECK ((state = 'open') = (sealed_at IS NULL))
);
-- start_run with a key stores one run per key
CREATE UNIQUE INDEX runs_key ON {schema}.runs (key) WHERE key IS NOT NULL;
-- pruning completed runs by age
CREATE INDEX runs_completed ON {schema}.runs (completed_at) WHERE state = 'completed';

-- the unfinished jobs of a run, counted at read
CREATE INDEX jobs_run_state ON {schema}.jobs (run_id, state) WHERE run_id IS NOT NULL;

-- A parent's waiting children, one row per edge until the parent finishes: its finish
-- deletes its rows and so finds the children to release or cancel. has_children marks a job
-- that ever had a waiting child, so the settle of every other job skips all of this.
CREATE TABLE {schema}.dependencies (
    parent_id bigint NOT NULL,
    child_id  bigint NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
ALTER TABLE {schema}.jobs ADD COLUMN has_children boolean NOT NULL DEFAULT false;

-- waiting: enqueued with after=[...], not leasable until its parents finished
ALTER TABLE {schema}.jobs DROP CONSTRAINT jobs_state_known;
ALTER TABLE {schema}.jobs ADD CONSTRAINT jobs_state_known
    CHECK (state IN ('waiting', 'queued', 'running', 'completed', 'dead', 'cancelled'));
