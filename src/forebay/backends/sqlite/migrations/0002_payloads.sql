-- forebay schema, version 2: payloads in a table of their own.
-- A job's row changes at every state change, and SQLite writes a changed row out whole: with
-- the payload inside it, each lease and each completion of a 50 KB job wrote its 50 KB again.
-- A payload never changes after the enqueue, so it now lives apart and is written once.
CREATE TABLE forebay_payloads (
    job_id  INTEGER PRIMARY KEY,
    payload TEXT    NOT NULL
);

INSERT INTO forebay_payloads (job_id, payload) SELECT id, payload FROM forebay_jobs;

ALTER TABLE forebay_jobs DROP COLUMN payload;

-- a payload goes with its job (pruning, purging)
CREATE TRIGGER forebay_jobs_delete_payload AFTER DELETE ON forebay_jobs
BEGIN
    DELETE FROM forebay_payloads WHERE job_id = old.id;
END;
