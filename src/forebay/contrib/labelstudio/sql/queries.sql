-- The statements of one staging batch, run in this order in one transaction (see stage.py).
-- Arguments are column arrays (one element per row, one row per key). Each statement answers
-- with (outcome, n): applied, older (a newer version is stored) or duplicate (this version is
-- stored; for deletes: already deleted).
--
-- The guard: a row is replaced only by a version that is not older (updated_at), and a stored
-- row without a version (a tombstone written first) takes any version. Deletes mark rows and
-- what is under them; a row written under a deleted parent is born deleted.

-- name: upsert_projects
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
                         $5::timestamptz[])
        AS i(project_id, title, description, created_at, updated_at)
), written AS (
    INSERT INTO projects AS t (project_id, title, description, created_at, updated_at)
    SELECT i.project_id, i.title, i.description, i.created_at, i.updated_at FROM incoming i
    -- A version already stored is left alone without locking its row: every batch carries
    -- its project, and concurrent batches would otherwise queue for that one row's lock.
    WHERE NOT EXISTS (SELECT 1 FROM projects s
                      WHERE s.project_id = i.project_id AND s.updated_at >= i.updated_at)
    ON CONFLICT (project_id) DO UPDATE SET
        title = excluded.title,
        description = excluded.description,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at
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
                         $6::integer[], $7::timestamptz[], $8::timestamptz[])
        AS i(task_id, project_id, doc_id, data, meta, page_count, created_at, updated_at)
), written AS (
    INSERT INTO documents AS t (task_id, project_id, doc_id, data, meta, page_count,
                                created_at, updated_at, deleted_at)
    SELECT i.task_id, i.project_id, i.doc_id, i.data::jsonb, i.meta::jsonb, i.page_count,
           i.created_at, i.updated_at,
           (SELECT p.deleted_at FROM projects p WHERE p.project_id = i.project_id)
    FROM incoming i
    ON CONFLICT (task_id) DO UPDATE SET
        project_id = excluded.project_id,
        doc_id = excluded.doc_id,
        data = excluded.data,
        meta = excluded.meta,
        page_count = excluded.page_count,
        created_at = excluded.created_at,
        updated_at = excluded.updated_at,
        deleted_at = COALESCE(t.deleted_at, excluded.deleted_at)
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
                         $9::timestamptz[], $10::timestamptz[])
        AS i(annotation_id, project_id, task_id, completed_by, was_cancelled, ground_truth,
             lead_time_s, result, created_at, updated_at)
), written AS (
    INSERT INTO annotations AS t (annotation_id, project_id, task_id, completed_by,
                                  was_cancelled, ground_truth, lead_time_s, result,
                                  created_at, updated_at, deleted_at)
    SELECT i.annotation_id, i.project_id, i.task_id, i.completed_by, i.was_cancelled,
           i.ground_truth, i.lead_time_s, i.result::jsonb, i.created_at, i.updated_at,
           COALESCE((SELECT d.deleted_at FROM documents d WHERE d.task_id = i.task_id),
                    (SELECT p.deleted_at FROM projects p WHERE p.project_id = i.project_id))
    FROM incoming i
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
        deleted_at = COALESCE(t.deleted_at, excluded.deleted_at)
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
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
        AS i(annotation_id, project_id, task_id, deleted_at)
), marked AS (
    INSERT INTO annotations AS t (annotation_id, project_id, task_id, deleted_at)
    SELECT annotation_id, project_id, task_id, deleted_at FROM incoming
    ON CONFLICT (annotation_id) DO UPDATE SET deleted_at = excluded.deleted_at
    WHERE t.deleted_at IS NULL
    RETURNING t.annotation_id, t.deleted_at
), regions AS (
    UPDATE extractions e SET deleted_at = m.deleted_at FROM marked m
    WHERE e.annotation_id = m.annotation_id AND e.deleted_at IS NULL
    RETURNING 1
), boxes AS (
    UPDATE pdf_boxes b SET deleted_at = m.deleted_at FROM marked m
    WHERE b.annotation_id = m.annotation_id AND b.deleted_at IS NULL
    RETURNING 1
)
SELECT CASE WHEN m.annotation_id IS NOT NULL THEN 'applied' ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN marked m ON m.annotation_id = i.annotation_id
GROUP BY 1;

-- name: delete_documents
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[])
        AS i(task_id, project_id, deleted_at)
), marked AS (
    INSERT INTO documents AS t (task_id, project_id, deleted_at)
    SELECT task_id, project_id, deleted_at FROM incoming
    ON CONFLICT (task_id) DO UPDATE SET deleted_at = excluded.deleted_at
    WHERE t.deleted_at IS NULL
    RETURNING t.task_id, t.deleted_at
), heads AS (
    UPDATE annotations a SET deleted_at = m.deleted_at FROM marked m
    WHERE a.task_id = m.task_id AND a.deleted_at IS NULL
    RETURNING 1
), regions AS (
    UPDATE extractions e SET deleted_at = m.deleted_at FROM marked m
    WHERE e.task_id = m.task_id AND e.deleted_at IS NULL
    RETURNING 1
), boxes AS (
    UPDATE pdf_boxes b SET deleted_at = m.deleted_at FROM marked m
    WHERE b.task_id = m.task_id AND b.deleted_at IS NULL
    RETURNING 1
)
SELECT CASE WHEN m.task_id IS NOT NULL THEN 'applied' ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN marked m ON m.task_id = i.task_id
GROUP BY 1;

-- name: delete_projects
WITH incoming AS (
    SELECT * FROM unnest($1::bigint[], $2::timestamptz[]) AS i(project_id, deleted_at)
), marked AS (
    INSERT INTO projects AS t (project_id, deleted_at)
    SELECT project_id, deleted_at FROM incoming
    ON CONFLICT (project_id) DO UPDATE SET deleted_at = excluded.deleted_at
    WHERE t.deleted_at IS NULL
    RETURNING t.project_id, t.deleted_at
), documents_marked AS (
    UPDATE documents d SET deleted_at = m.deleted_at FROM marked m
    WHERE d.project_id = m.project_id AND d.deleted_at IS NULL
    RETURNING 1
), heads AS (
    UPDATE annotations a SET deleted_at = m.deleted_at FROM marked m
    WHERE a.project_id = m.project_id AND a.deleted_at IS NULL
    RETURNING 1
), regions AS (
    UPDATE extractions e SET deleted_at = m.deleted_at FROM marked m
    WHERE e.project_id = m.project_id AND e.deleted_at IS NULL
    RETURNING 1
), boxes AS (
    UPDATE pdf_boxes b SET deleted_at = m.deleted_at FROM marked m
    WHERE b.project_id = m.project_id AND b.deleted_at IS NULL
    RETURNING 1
)
SELECT CASE WHEN m.project_id IS NOT NULL THEN 'applied' ELSE 'duplicate' END AS outcome,
       count(*) AS n
FROM incoming i
LEFT JOIN marked m ON m.project_id = i.project_id
GROUP BY 1;
