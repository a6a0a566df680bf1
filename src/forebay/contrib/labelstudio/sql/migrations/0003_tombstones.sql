-- Every delete received, kept for good, and the rule that reads them.
--
-- Label Studio sends a delete with ids only (no version, no time): forebay dates it by when it
-- received it. And Label Studio reuses ids (on SQLite a new task may get the id of a deleted
-- one): a version created after a delete is a new object, not the deleted one. So a version of
-- a project, task or annotation is deleted at the EARLIEST tombstone of its own key, its
-- task's or its project's that is not before the version's created_at (any tombstone when
-- the version has no created_at); with none, it is alive. deleted_at in the tables holds that
-- time, kept up to date by every write (extractions and boxes hold their annotation's). The
-- earliest, so that a delete received again later changes nothing already deleted.

CREATE TABLE tombstones (
    kind       text        NOT NULL CHECK (kind IN ('project', 'task', 'annotation')),
    id         bigint      NOT NULL,
    deleted_at timestamptz NOT NULL,
    PRIMARY KEY (kind, id, deleted_at)
);

-- A store written before: each deleted row's time becomes a tombstone of its own key (a row
-- deleted with its task or project gets one at the same time: by the rule, the same result).
INSERT INTO tombstones (kind, id, deleted_at)
SELECT 'project', project_id, deleted_at FROM projects WHERE deleted_at IS NOT NULL
UNION ALL
SELECT 'task', task_id, deleted_at FROM documents WHERE deleted_at IS NOT NULL
UNION ALL
SELECT 'annotation', annotation_id, deleted_at FROM annotations WHERE deleted_at IS NOT NULL
ON CONFLICT DO NOTHING;

-- The rule, for many versions at once: for the n-th version (its project, task and
-- annotation ids, NULL where they do not apply, and its created_at), when it is deleted.
-- Versions that are alive have no row. One SELECT, so the planner inlines it into the
-- statement that calls it (and reads tombstones through the sink's search_path).
CREATE FUNCTION deaths(project_ids bigint[], task_ids bigint[], annotation_ids bigint[],
                       created timestamptz[])
RETURNS TABLE (n bigint, deleted_at timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT found.n, min(found.deleted_at)
    FROM (
        SELECT v.n, v.created_at, z.deleted_at
        FROM unnest(project_ids, created) WITH ORDINALITY AS v(id, created_at, n)
        JOIN tombstones z ON z.kind = 'project' AND z.id = v.id
        UNION ALL
        SELECT v.n, v.created_at, z.deleted_at
        FROM unnest(task_ids, created) WITH ORDINALITY AS v(id, created_at, n)
        JOIN tombstones z ON z.kind = 'task' AND z.id = v.id
        UNION ALL
        SELECT v.n, v.created_at, z.deleted_at
        FROM unnest(annotation_ids, created) WITH ORDINALITY AS v(id, created_at, n)
        JOIN tombstones z ON z.kind = 'annotation' AND z.id = v.id
    ) AS found
    WHERE found.created_at IS NULL OR found.deleted_at >= found.created_at
    GROUP BY found.n
$$;

-- Rows the earlier rule got wrong take the new one's verdict: a version created after its
-- tombstone (a reused id) comes back to life, and a row a concurrent create left alive under
-- a tombstone is deleted.
WITH judged AS (
    SELECT x.id, d.deleted_at
    FROM (SELECT array_agg(project_id ORDER BY project_id) AS ids,
                 array_agg(created_at ORDER BY project_id) AS created
          FROM projects) AS r,
         unnest(r.ids) WITH ORDINALITY AS x(id, n)
    LEFT JOIN deaths(r.ids, NULL, NULL, r.created) d ON d.n = x.n
)
UPDATE projects t SET deleted_at = j.deleted_at FROM judged j
WHERE t.project_id = j.id AND t.deleted_at IS DISTINCT FROM j.deleted_at;

WITH judged AS (
    SELECT x.id, d.deleted_at
    FROM (SELECT array_agg(task_id ORDER BY task_id) AS ids,
                 array_agg(project_id ORDER BY task_id) AS projects,
                 array_agg(created_at ORDER BY task_id) AS created
          FROM documents) AS r,
         unnest(r.ids) WITH ORDINALITY AS x(id, n)
    LEFT JOIN deaths(r.projects, r.ids, NULL, r.created) d ON d.n = x.n
)
UPDATE documents t SET deleted_at = j.deleted_at FROM judged j
WHERE t.task_id = j.id AND t.deleted_at IS DISTINCT FROM j.deleted_at;

WITH judged AS (
    SELECT x.id, d.deleted_at
    FROM (SELECT array_agg(annotation_id ORDER BY annotation_id) AS ids,
                 array_agg(project_id ORDER BY annotation_id) AS projects,
                 array_agg(task_id ORDER BY annotation_id) AS tasks,
                 array_agg(created_at ORDER BY annotation_id) AS created
          FROM annotations) AS r,
         unnest(r.ids) WITH ORDINALITY AS x(id, n)
    LEFT JOIN deaths(r.projects, r.tasks, r.ids, r.created) d ON d.n = x.n
)
UPDATE annotations t SET deleted_at = j.deleted_at FROM judged j
WHERE t.annotation_id = j.id AND t.deleted_at IS DISTINCT FROM j.deleted_at;

UPDATE extractions e SET deleted_at = a.deleted_at FROM annotations a
WHERE e.annotation_id = a.annotation_id AND e.deleted_at IS DISTINCT FROM a.deleted_at;

UPDATE pdf_boxes b SET deleted_at = a.deleted_at FROM annotations a
WHERE b.annotation_id = a.annotation_id AND b.deleted_at IS DISTINCT FROM a.deleted_at;
