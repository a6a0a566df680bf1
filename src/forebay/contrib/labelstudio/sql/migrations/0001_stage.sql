-- Label Studio staging tables, created in the sink's schema (``stage`` by default).
--
-- Every row carries the version it was written from (``updated_at``, Label Studio's own) and a
-- tombstone (``deleted_at``). A row is replaced only by a version that is not older; a delete
-- marks the row and everything under it (project > document > annotation > extraction, box)
-- and a tombstone never blocks later data, so the tables end the same whatever order the
-- events arrive in. Ids are Label Studio's own (global to one Label Studio instance).

CREATE TABLE projects (
    project_id  bigint PRIMARY KEY,
    title       text,
    description text,
    created_at  timestamptz,
    updated_at  timestamptz,
    deleted_at  timestamptz
);

CREATE TABLE documents (
    task_id     bigint PRIMARY KEY,
    project_id  bigint,
    doc_id      text,
    data        jsonb,
    meta        jsonb,
    page_count  integer,
    created_at  timestamptz,
    updated_at  timestamptz,
    deleted_at  timestamptz
);
CREATE INDEX documents_project ON documents (project_id);

CREATE TABLE annotations (
    annotation_id bigint PRIMARY KEY,
    project_id    bigint,
    task_id       bigint,
    completed_by  bigint,
    was_cancelled boolean,
    ground_truth  boolean,
    lead_time_s   double precision,
    result        jsonb,
    created_at    timestamptz,
    updated_at    timestamptz,
    deleted_at    timestamptz
);
CREATE INDEX annotations_task ON annotations (task_id);
CREATE INDEX annotations_project ON annotations (project_id);

-- One row per region of the annotation's current version (results sharing a region id merged).
CREATE TABLE extractions (
    annotation_id bigint NOT NULL,
    region_id     text   NOT NULL,
    project_id    bigint,
    task_id       bigint,
    page_index    integer,
    labels        text[] NOT NULL DEFAULT '{}',
    text          text,
    result_types  text[] NOT NULL DEFAULT '{}',
    value         jsonb,
    updated_at    timestamptz,
    deleted_at    timestamptz,
    PRIMARY KEY (annotation_id, region_id)
);
CREATE INDEX extractions_task ON extractions (task_id);
CREATE INDEX extractions_project ON extractions (project_id);

-- Rectangles in PDF user-space points (origin bottom-left, 1/72 inch): the axis-aligned
-- bounds (x0, y0)-(x1, y1) and the polygon [x, y] * 4 (top-left, top-right, bottom-right,
-- bottom-left of the box as drawn); the page box they refer to and its /Rotate.
CREATE TABLE pdf_boxes (
    annotation_id   bigint NOT NULL,
    region_id       text   NOT NULL,
    project_id      bigint,
    task_id         bigint,
    page_index      integer NOT NULL CHECK (page_index >= 0),
    label           text,
    x0              double precision NOT NULL,
    y0              double precision NOT NULL,
    x1              double precision NOT NULL,
    y1              double precision NOT NULL,
    polygon         double precision[] NOT NULL CHECK (cardinality(polygon) = 8),
    rotation        double precision NOT NULL DEFAULT 0,
    page_box        text NOT NULL CHECK (page_box IN ('MediaBox', 'CropBox')),
    page_rotate     integer NOT NULL CHECK (page_rotate IN (0, 90, 180, 270)),
    page_x0         double precision NOT NULL,
    page_y0         double precision NOT NULL,
    page_width      double precision NOT NULL CHECK (page_width > 0),
    page_height     double precision NOT NULL CHECK (page_height > 0),
    geometry_source text NOT NULL,
    updated_at      timestamptz,
    deleted_at      timestamptz,
    PRIMARY KEY (annotation_id, region_id)
);
CREATE INDEX pdf_boxes_task ON pdf_boxes (task_id);
CREATE INDEX pdf_boxes_project ON pdf_boxes (project_id);
