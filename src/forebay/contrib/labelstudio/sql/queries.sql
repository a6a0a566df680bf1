-- The statements of one staging batch, run in this order in one transaction (see stage.py).
-- Arguments are column arrays (one element per row, one row per key). Each statement answers
-- with (outcome, n): applied, older (a newer version is stored) or duplicate (this version is
-- stored; for deletes: this delete is stored).
--
-- The guard: a row is replaced only by a version that is not older (updated_at), and a stored
-- row without a version (a tombstone written first) takes any version. Deletes are kept in
-- tombstones; a version is deleted at the earliest tombstone of its key, its task or its
-- project not before its created_at (deaths(), migration 0003): written with every version,
-- and brought up to date for the rows under a key when a delete comes.
--
-- Concurrency: a batch first locks the projects it writes (lock_projects) — shared, or
-- exclusive for a project it deletes anything in — and reads nothing before. So a delete's
-- statements run once every batch writing under the same project has committed, and see its
-- rows; a batch that starts after a delete waits for it, and sees its tombstones.

-- name: read_committed
-- Each statement sees what committed before it started (what the locks above rely on),
-- whatever the server's default isolation.
SET TRANSACTION ISOLATION LEVEL READ COMMITTED;

-- name: lock_projects
-- $1 keys ('*': every project, then project ids in ascending order), $2 exclusive or shared.
-- Taken in the order given (all batches use one order: no deadlock between them), held to
-- the end of the transaction.
SELECT count(*) AS locked FROM (
    SELECT CASE WHEN l.exclusive
                THEN pg_advisory_xact_lock(hashtextextended(
                         'forebay.labelstudio:' || current_schema() || ':' || l.key, 0))::text
                ELSE pg_advisory_xact_lock_shared(hashtextextended(
                         'forebay.labelstudio:' || current_schema() || ':' || l.key, 0))::text
           END
    FROM unnest($1::text[], $2::boolean[]) WITH ORDINALITY AS l(key, exclusive, n)
    ORDER BY l.n
) AS taken;

-- name: upsert_projects
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
                         $5::timestamptz[]) WITH ORDINALITY
        AS i(project_id, title, description, created_at, updated_at, n)
), written AS (
    INSERT INTO projects AS t (project_id, title, description, created_at, updated_at,
                               deleted_at)
    SELECT i.project_id, i.title, i.description, i.created_at, i.updated_at, d.deleted_at
    FROM incoming i
    LEFT JOIN deaths($1::bigint[], NULL, NULL, $4::timestamptz[]) d ON d.n = i.n
    -- A version already stored is left alone without locking its row: every batch carries
    -- its project, and concurrent batches would otherwise queue for that one row's lock.
    WHERE NOT EXISTS (SELECT 1 FROM projects s
                      WHERE s.project_id = i.project_id AND s.updated_at >= i.updated_at)
    ON CONFLICT (project_id) DO UPDATE SET
        title = excluded.title,
        description = excluded.description,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        deleted_at = excluded.deleted_at
    WHERE t.updated_at IS NULL OR t.updated_at < excluded.updated_at
    RETURNING t.project_id
)
SELECT CASE WHEN w.project_id IS NOT NULL THEN 'applied'
            WHEN t.updated_at > i.updated_at THEN 'older'
            ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN written w ON w.project_id = i.project_id
LEFT JOIN projects t ON t.project_id = i.project_id
GROUP BY 1;

-- name: upsert_documents
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::integer[], $7::timestamptz[], $8::timestamptz[]) WITH ORDINALITY
        AS i(task_id, project_id, doc_id, data, meta, page_count, created_at, updated_at, n)
), written AS (
    INSERT INTO documents AS t (task_id, project_id, doc_id, data, meta, page_count,
                                created_at, updated_at, deleted_at)
    SELECT i.task_id, i.project_id, i.doc_id, i.data::jsonb, i.meta::jsonb, i.page_count,
           i.created_at, i.updated_at, d.deleted_at
    FROM incoming i
    LEFT JOIN deaths($2::bigint[], $1::bigint[], NULL, $7::timestamptz[]) d ON d.n = i.n
    ON CONFLICT (task_id) DO UPDATE SET
        project_id = excluded.project_id,
        doc_id = excluded.doc_id,
        data = excluded.data,
        meta = excluded.meta,
        page_count = excluded.page_count,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        deleted_at = excluded.deleted_at
    WHERE t.updated_at IS NULL OR t.updated_at < excluded.updated_at
    RETURNING t.task_id
)
SELECT CASE WHEN w.task_id IS NOT NULL THEN 'applied'
            WHEN t.updated_at > i.updated_at THEN 'older'
            ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN written w ON w.task_id = i.task_id
LEFT JOIN documents t ON t.task_id = i.task_id
GROUP BY 1;

-- name: upsert_annotations
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                         $5::boolean[], $6::boolean[], $7::float8[], $8::text[],
                         $9::timestamptz[], $10::timestamptz[]) WITH ORDINALITY
        AS i(annotation_id, project_id, task_id, completed_by, was_cancelled, ground_truth,
             lead_time_s, result, created_at, updated_at, n)
), written AS (
    INSERT INTO annotations AS t (annotation_id, project_id, task_id, completed_by,
                                  was_cancelled, ground_truth, lead_time_s, result,
                                  created_at, updated_at, deleted_at)
    SELECT i.annotation_id, i.project_id, i.task_id, i.completed_by, i.was_cancelled,
           i.ground_truth, i.lead_time_s, i.result::jsonb, i.created_at, i.updated_at,
           d.deleted_at
    FROM incoming i
    LEFT JOIN deaths($2::bigint[], $3::bigint[], $1::bigint[], $9::timestamptz[]) d
        ON d.n = i.n
    ON CONFLICT (annotation_id) DO UPDATE SET
        project_id = excluded.project_id,
        task_id = excluded.task_id,
        completed_by = excluded.completed_by,
        was_cancelled = excluded.was_cancelled,
        ground_truth = excluded.ground_truth,
        lead_time_s = excluded.lead_time_s,
        result = excluded.result,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        deleted_at = excluded.deleted_at
    WHERE t.updated_at IS NULL OR t.updated_at < excluded.updated_at
    RETURNING t.annotation_id
)
SELECT CASE WHEN w.annotation_id IS NOT NULL THEN 'applied'
            WHEN t.updated_at > i.updated_at THEN 'older'
            ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN written w ON w.annotation_id = i.annotation_id
LEFT JOIN annotations t ON t.annotation_id = i.annotation_id
GROUP BY 1;

-- name: prune_regions
-- The regions of other versions of these annotations: a new version replaces them all.
WITH heads AS (
    SELECT annotation_id, updated_at FROM annotations
    WHERE annotation_id = ANY($1::bigint[])
), gone_extractions AS (
    DELETE FROM extractions e USING heads h
    WHERE e.annotation_id = ANY($1::bigint[])  -- read through the primary key, not a scan
      AND e.annotation_id = h.annotation_id AND e.updated_at IS DISTINCT FROM h.updated_at
    RETURNING 1
), gone_boxes AS (
    DELETE FROM pdf_boxes b USING heads h
    WHERE b.annotation_id = ANY($1::bigint[])
      AND b.annotation_id = h.annotation_id AND b.updated_at IS DISTINCT FROM h.updated_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone_extractions) AS extractions,
       (SELECT count(*) FROM gone_boxes) AS boxes;

-- name: upsert_extractions
-- Only rows of the annotation's current version are written (older ones count as older).
-- labels and result_types come as array literals ('{"a","b"}'). Counted, not joined back:
-- applied = rows written, older = rows not of the current version, duplicate = the rest.
WITH written AS (
    INSERT INTO extractions (annotation_id, region_id, project_id, task_id, page_index,
                             labels, text, result_types, value, updated_at, deleted_at)
    SELECT i.annotation_id, i.region_id, i.project_id, i.task_id, i.page_index,
           i.labels::text[], i.text, i.result_types::text[], i.value::jsonb, i.updated_at,
           a.deleted_at
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::integer[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
        AS i(annotation_id, region_id, project_id, task_id, page_index, labels, text,
             result_types, value, updated_at)
    JOIN annotations a ON a.annotation_id = i.annotation_id
    WHERE a.updated_at IS NOT DISTINCT FROM i.updated_at
    ON CONFLICT (annotation_id, region_id) DO NOTHING
    RETURNING 1
), counts AS MATERIALIZED (  -- read twice below: computed once
    SELECT (SELECT count(*) FROM written) AS applied,
           (SELECT count(*)
            FROM unnest($1::bigint[], $10::timestamptz[]) AS i(annotation_id, updated_at)
            JOIN annotations a ON a.annotation_id = i.annotation_id
            WHERE a.updated_at IS NOT DISTINCT FROM i.updated_at) AS current,
           cardinality($1::bigint[]) AS total
)
SELECT o.outcome, o.n
FROM counts c,
     LATERAL (VALUES ('applied', c.applied), ('older', c.total - c.current),
                     ('duplicate', c.current - c.applied)) AS o(outcome, n)
WHERE o.n > 0;

-- name: upsert_pdf_boxes
-- As upsert_extractions; polygon comes as an array literal ('{x,y,...}').
WITH written AS (
    INSERT INTO pdf_boxes (annotation_id, region_id, project_id, task_id, page_index, label,
                           x0, y0, x1, y1, polygon, rotation, page_box, page_rotate,
                           page_x0, page_y0, page_width, page_height, geometry_source,
                           updated_at, deleted_at)
    SELECT i.annotation_id, i.region_id, i.project_id, i.task_id, i.page_index, i.label,
           i.x0, i.y0, i.x1, i.y1, i.polygon::float8[], i.rotation, i.page_box,
           i.page_rotate, i.page_x0, i.page_y0, i.page_width, i.page_height,
           i.geometry_source, i.updated_at, a.deleted_at
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::integer[],
                $6::text[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
                $11::text[], $12::float8[], $13::text[], $14::integer[], $15::float8[],
                $16::float8[], $17::float8[], $18::float8[], $19::text[],
                $20::timestamptz[])
        AS i(annotation_id, region_id, project_id, task_id, page_index, label, x0, y0, x1,
             y1, polygon, rotation, page_box, page_rotate, page_x0, page_y0, page_width,
             page_height, geometry_source, updated_at)
    JOIN annotations a ON a.annotation_id = i.annotation_id
    WHERE a.updated_at IS NOT DISTINCT FROM i.updated_at
    ON CONFLICT (annotation_id, region_id) DO NOTHING
    RETURNING 1
), counts AS MATERIALIZED (  -- read twice below: computed once
    SELECT (SELECT count(*) FROM written) AS applied,
           (SELECT count(*)
            FROM unnest($1::bigint[], $20::timestamptz[]) AS i(annotation_id, updated_at)
            JOIN annotations a ON a.annotation_id = i.annotation_id
            WHERE a.updated_at IS NOT DISTINCT FROM i.updated_at) AS current,
           cardinality($1::bigint[]) AS total
)
SELECT o.outcome, o.n
FROM counts c,
     LATERAL (VALUES ('applied', c.applied), ('older', c.total - c.current),
                     ('duplicate', c.current - c.applied)) AS o(outcome, n)
WHERE o.n > 0;

-- name: delete_annotations
-- A delete is stored as a tombstone (and a row for a key never seen, so that the key shows as
-- deleted); apply_annotations then judges the rows under it.
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
        AS i(annotation_id, project_id, task_id, deleted_at)
), logged AS (
    INSERT INTO tombstones (kind, id, deleted_at)
    SELECT 'annotation', annotation_id, deleted_at FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING id, deleted_at
), keyed AS (
    INSERT INTO annotations (annotation_id, project_id, task_id)
    SELECT annotation_id, project_id, task_id FROM incoming
    ON CONFLICT DO NOTHING
)
SELECT CASE WHEN l.id IS NOT NULL THEN 'applied' ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN logged l ON l.id = i.annotation_id AND l.deleted_at = i.deleted_at
GROUP BY 1;

-- name: delete_documents
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[])
        AS i(task_id, project_id, deleted_at)
), logged AS (
    INSERT INTO tombstones (kind, id, deleted_at)
    SELECT 'task', task_id, deleted_at FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING id, deleted_at
), keyed AS (
    INSERT INTO documents (task_id, project_id)
    SELECT task_id, project_id FROM incoming
    ON CONFLICT DO NOTHING
)
SELECT CASE WHEN l.id IS NOT NULL THEN 'applied' ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN logged l ON l.id = i.task_id AND l.deleted_at = i.deleted_at
GROUP BY 1;

-- name: delete_projects
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::timestamptz[]) AS i(project_id, deleted_at)
), logged AS (
    INSERT INTO tombstones (kind, id, deleted_at)
    SELECT 'project', project_id, deleted_at FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING id, deleted_at
), keyed AS (
    INSERT INTO projects (project_id)
    SELECT project_id FROM incoming
    ON CONFLICT DO NOTHING
)
SELECT CASE WHEN l.id IS NOT NULL THEN 'applied' ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN logged l ON l.id = i.project_id AND l.deleted_at = i.deleted_at
GROUP BY 1;

-- name: apply_projects
-- After the batch's tombstones are stored: each row under the deleted keys judged again.
-- $1 projects, $2 tasks, $3 annotations deleted in this batch (the next two alike).
WITH judged AS (
    SELECT x.id, d.deleted_at
    FROM (SELECT array_agg(project_id ORDER BY project_id) AS ids,
                 array_agg(created_at ORDER BY project_id) AS created
          FROM projects WHERE project_id = ANY($1::bigint[])) AS r,
         unnest(r.ids) WITH ORDINALITY AS x(id, n)
    LEFT JOIN deaths(r.ids, NULL, NULL, r.created) d ON d.n = x.n
), marked AS (
    UPDATE projects t SET deleted_at = j.deleted_at FROM judged j
    WHERE t.project_id = j.id AND t.deleted_at IS DISTINCT FROM j.deleted_at
    RETURNING 1
)
SELECT count(*) AS marked FROM marked;

-- name: apply_documents
WITH judged AS (
    SELECT x.id, d.deleted_at
    FROM (SELECT array_agg(task_id ORDER BY task_id) AS ids,
                 array_agg(project_id ORDER BY task_id) AS projects,
                 array_agg(created_at ORDER BY task_id) AS created
          FROM documents
          WHERE project_id = ANY($1::bigint[]) OR task_id = ANY($2::bigint[])) AS r,
         unnest(r.ids) WITH ORDINALITY AS x(id, n)
    LEFT JOIN deaths(r.projects, r.ids, NULL, r.created) d ON d.n = x.n
), marked AS (
    UPDATE documents t SET deleted_at = j.deleted_at FROM judged j
    WHERE t.task_id = j.id AND t.deleted_at IS DISTINCT FROM j.deleted_at
    RETURNING 1
)
SELECT count(*) AS marked FROM marked;

-- name: apply_annotations
-- The annotations under the deleted keys, and their regions and boxes with them.
WITH judged AS (
    SELECT x.id, d.deleted_at
    FROM (SELECT array_agg(annotation_id ORDER BY annotation_id) AS ids,
                 array_agg(project_id ORDER BY annotation_id) AS projects,
                 array_agg(task_id ORDER BY annotation_id) AS tasks,
                 array_agg(created_at ORDER BY annotation_id) AS created
          FROM annotations
          WHERE project_id = ANY($1::bigint[]) OR task_id = ANY($2::bigint[])
             OR annotation_id = ANY($3::bigint[])) AS r,
         unnest(r.ids) WITH ORDINALITY AS x(id, n)
    LEFT JOIN deaths(r.projects, r.tasks, r.ids, r.created) d ON d.n = x.n
), heads AS (
    UPDATE annotations t SET deleted_at = j.deleted_at FROM judged j
    WHERE t.annotation_id = j.id AND t.deleted_at IS DISTINCT FROM j.deleted_at
    RETURNING t.annotation_id, t.deleted_at
), regions AS (
    UPDATE extractions e SET deleted_at = h.deleted_at FROM heads h
    WHERE e.annotation_id = h.annotation_id
    RETURNING 1
), boxes AS (
    UPDATE pdf_boxes b SET deleted_at = h.deleted_at FROM heads h
    WHERE b.annotation_id = h.annotation_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM heads) AS annotations, (SELECT count(*) FROM regions) AS regions,
       (SELECT count(*) FROM boxes) AS boxes;

-- name: row_counts
-- Rows per table and how many of them are deleted (what `forebay labelstudio demo` prints).
SELECT 'projects' AS name, count(*) AS n, count(deleted_at) AS deleted FROM projects
UNION ALL SELECT 'documents', count(*), count(deleted_at) FROM documents
UNION ALL SELECT 'annotations', count(*), count(deleted_at) FROM annotations
UNION ALL SELECT 'extractions', count(*), count(deleted_at) FROM extractions
UNION ALL SELECT 'pdf_boxes', count(*), count(deleted_at) FROM pdf_boxes;
